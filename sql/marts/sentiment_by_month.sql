-- Experiences per month of sending (first day of the month) and user sentiment.
with experiences as (

    select ecrit_le_month as month, ressenti_usager
    from staging.stg_experiences

),

final as (

    select
        month,
        ressenti_usager,
        count(*) as experiences
    from experiences
    group by month, ressenti_usager

)

select * from final
order by month, ressenti_usager
