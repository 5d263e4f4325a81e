-- Sentiment counts and shares per typology and structure, from every slot naming them.
with slots as (

    select * from intermediate.int_experience_typologies

),

counted as (

    -- int_experience_typologies has one row per experience, typology and structure, so count(*)
    -- counts experiences
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
