-- Experiences per contact channel (Téléphone, Accueil, Démarche en ligne…) and sentiment.
with channels as (

    select id_experience, canal, ressenti_usager
    from intermediate.int_response_channels

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
