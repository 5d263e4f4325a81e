-- Experiences per country of the user (NULL: not given), with their share and negative share.
with experiences as (

    select id_experience, pays, ressenti_usager
    from staging.stg_experiences

),

final as (

    select
        pays,
        count(*) as experiences,
        round(count(*) / sum(count(*)) over (), 4) as share,
        count(*) filter (where ressenti_usager = 'Négatif') as negatif,
        round(count(*) filter (where ressenti_usager = 'Négatif') / count(*), 4) as share_negatif
    from experiences
    group by pays

)

select * from final
order by experiences desc, pays
