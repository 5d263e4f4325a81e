-- Experiences per contact channel (Téléphone, Accueil, Démarche en ligne…) and sentiment.
with channels as (

    select c.id_experience, c.canal, e.ressenti_usager
    from intermediate.int_response_channels as c
    join staging.stg_experiences as e using (id_experience)

),

final as (

    select
        canal,
        count(distinct id_experience) as experiences,
        count(distinct id_experience) filter (where ressenti_usager = 'Négatif') as negatif,
        count(distinct id_experience) filter (where ressenti_usager = 'Neutre') as neutre,
        count(distinct id_experience) filter (where ressenti_usager = 'Positif') as positif
    from channels
    group by canal

)

select * from final
order by experiences desc, canal
