-- Sentiment counts and shares per typology and structure, from every slot naming them.
with slots as (

    select distinct r.id_experience, r.intitule_typologie, r.intitule_structure, e.ressenti_usager
    from staging.stg_responses as r
    join staging.stg_experiences as e using (id_experience)

),

counted as (

    -- `slots` is distinct and the sentiment belongs to the experience: one row per experience,
    -- typology and structure, so count(*) counts experiences
    select
        intitule_typologie,
        intitule_structure,
        count(*) as experiences,
        count(*) filter (where ressenti_usager = 'Négatif') as negatif,
        count(*) filter (where ressenti_usager = 'Neutre') as neutre,
        count(*) filter (where ressenti_usager = 'Positif') as positif
    from slots
    group by intitule_typologie, intitule_structure

),

final as (

    select
        *,
        round(negatif / experiences, 4) as share_negatif,
        round(neutre / experiences, 4) as share_neutre,
        round(positif / experiences, 4) as share_positif
    from counted

)

select * from final
order by experiences desc, intitule_typologie, intitule_structure
