-- Experiences per month of sending and structure named (NULL: none named), with replies.
with experience_structures as (

    select * from intermediate.int_experience_structures

),

final as (

    select
        ecrit_le_month as month,
        intitule_structure,
        count(distinct id_experience) as experiences,
        count(distinct id_experience) filter (where has_response) as with_response,
        round(count(distinct id_experience) filter (where has_response) / count(distinct id_experience), 4) as response_rate
    from experience_structures
    group by ecrit_le_month, intitule_structure

)

select * from final
order by month, experiences desc, intitule_structure
