-- One row per experience and (typology, structure) pair its slots name, with its sentiment.
with slots as (

    select distinct id_experience, intitule_typologie, intitule_structure
    from staging.stg_responses

),

experiences as (

    select id_experience, ressenti_usager
    from staging.stg_experiences

),

joined as (

    select
        slots.id_experience,
        slots.intitule_typologie,
        slots.intitule_structure,
        experiences.ressenti_usager
    from slots
    join experiences using (id_experience)

)

select * from joined
