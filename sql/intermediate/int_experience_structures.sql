-- One row per experience and structure it names (NULL structure when it names none), with whether that structure replied.
with experiences as (

    select id_experience, ecrit_le, ecrit_le_month, ressenti_usager
    from staging.stg_experiences

),

structures as (

    select
        id_experience,
        intitule_structure,
        bool_or(has_response) as has_response
    from staging.stg_responses
    where intitule_structure is not null
    group by id_experience, intitule_structure

),

joined as (

    select
        experiences.id_experience,
        experiences.ecrit_le,
        experiences.ecrit_le_month,
        experiences.ressenti_usager,
        structures.intitule_structure,
        coalesce(structures.has_response, false) as has_response
    from experiences
    left join structures using (id_experience)

)

select * from joined
