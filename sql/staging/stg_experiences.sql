-- One row per experience: typed, text cleaned, with has_response when any structure replied.
with source as (

    select * from staging.src_experiences

),

replies as (

    select
        id_experience,
        bool_or(staging.clean_text(reponse_structure) is not null) as has_response
    from staging.src_responses
    group by id_experience

),

renamed as (

    select
        source.id_experience,
        source.ecrit_le,
        date_trunc('month', source.ecrit_le)::date as ecrit_le_month,
        staging.clean_text(source.titre) as titre,
        staging.clean_text(source.description) as description,
        staging.clean_text(source.ressenti_usager) as ressenti_usager,
        staging.clean_text(source.pays) as pays,
        staging.clean_text(source.intitule_departement_usager) as intitule_departement_usager,
        staging.clean_text(source.pseudonyme_usager) as pseudonyme_usager,
        staging.clean_text(source.accessibilite) as accessibilite,
        staging.clean_text(source.information_explication) as information_explication,
        staging.clean_text(source.relation) as relation,
        staging.clean_text(source.reactivite) as reactivite,
        staging.clean_text(source.simplicite_complexite) as simplicite_complexite,
        staging.clean_text(source.etat_experience) as etat_experience,
        staging.clean_text(source.poste_comme) as poste_comme,
        staging.clean_text(source.tags_metiers) as tags_metiers,
        staging.clean_text(source.demarches_saisies_par_usager) as demarches_saisies_par_usager,
        staging.clean_text(source.action) as action,
        staging.clean_text(source.amelioration_de_service_a_considerer) as amelioration_de_service_a_considerer,
        source.date_action_engagee,
        source.date_action_realisee,
        source.date_de_publication,
        source.evaluation_utile_reponse_structure_1_par_visiteurs,
        coalesce(replies.has_response, false) as has_response

    from source
    left join replies using (id_experience)

)

select * from renamed
