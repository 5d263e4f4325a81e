-- Per structure: experiences naming it, their sentiment counts, and how many it replied to.
with experience_structures as (

    select * from intermediate.int_experience_structures

),

aggregated as (

    -- int_experience_structures has one row per experience and structure, so count(*) counts
    -- experiences (and costs far less than count(distinct id_experience) on a million rows)
    select
        intitule_structure,
        count(*) as experiences,
        count(*) filter (where ressenti_usager = 'Négatif') as negatif,
        count(*) filter (where ressenti_usager = 'Neutre') as neutre,
        count(*) filter (where ressenti_usager = 'Positif') as positif,
        count(*) filter (where has_response) as with_response
    from experience_structures
    group by intitule_structure

),

final as (

    select
        *,
        round(with_response / experiences, 4) as response_rate
    from aggregated

)

select * from final
order by experiences desc, intitule_structure
