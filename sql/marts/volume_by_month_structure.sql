-- Experiences per month of sending and structure named (NULL: none named), with replies.
with experience_structures as (

    select * from intermediate.int_experience_structures

),

final as (

    -- one row per experience and structure upstream: count(*) counts experiences
    select
        ecrit_le_month as month,
        intitule_structure,
        count(*) as experiences,
        count(*) filter (where has_response) as with_response,
        round(count(*) filter (where has_response) / count(*), 4) as response_rate
    from experience_structures
    group by ecrit_le_month, intitule_structure

)

select * from final
order by month, experiences desc, intitule_structure
