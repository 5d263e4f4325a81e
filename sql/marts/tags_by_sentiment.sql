-- The five theme tags (accessibilité, relation, réactivité, information, simplicité) by tag value and user sentiment.
with experiences as (

    select * from staging.stg_experiences

),

tags as (

    unpivot (
        select id_experience, ressenti_usager, accessibilite, relation, reactivite, information_explication, simplicite_complexite
        from experiences
    )
    on accessibilite, relation, reactivite, information_explication, simplicite_complexite
    into name tag value tag_value

),

final as (

    select
        tag,
        tag_value,
        ressenti_usager,
        count(*) as experiences
    from tags
    group by tag, tag_value, ressenti_usager

)

select * from final
order by tag, tag_value, ressenti_usager
