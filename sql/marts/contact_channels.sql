-- Experiences per contact channel (Téléphone, Accueil, Démarche en ligne…) and sentiment.
with channels as (

    select c.id_experience, c.canal, e.ressenti_usager
    from intermediate.int_response_channels as c
    join staging.stg_experiences as e using (id_experience)

),

final as (

    -- int_response_channels has one row per experience and channel: count(*) counts experiences
    select
        canal,
        count(*) as experiences,
        count(*) filter (where ressenti_usager = 'Négatif') as negatif,
        count(*) filter (where ressenti_usager = 'Neutre') as neutre,
        count(*) filter (where ressenti_usager = 'Positif') as positif
    from channels
    group by canal

)

select * from final
order by experiences desc, canal
