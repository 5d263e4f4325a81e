-- One row per experience and structure slot (1 to 3): typology, channels, structure and reply, cleaned.
with source as (

    select * from staging.src_responses

),

renamed as (

    select
        id_experience,
        slot,
        staging.clean_text(intitule_typologie) as intitule_typologie,
        -- "Accueil, Démarche en ligne," : the portal ends the list with a comma
        staging.clean_text(rtrim(trim(canaux_typologie), ',')) as canaux_typologie,
        staging.clean_text(intitule_structure) as intitule_structure,
        staging.clean_text(reponse_structure) as reponse_structure,
        taux_de_similarite_reponse_ia,
        staging.clean_text(reponse_structure) is not null as has_response

    from source

)

select * from renamed
