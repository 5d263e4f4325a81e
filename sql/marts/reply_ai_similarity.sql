-- Per structure: replies, how many carry an AI-similarity score, its average, and replies that reused the AI draft as is (100).
with replies as (

    select intitule_structure, taux_de_similarite_reponse_ia
    from staging.stg_responses
    where has_response

),

final as (

    select
        intitule_structure,
        count(*) as replies,
        count(taux_de_similarite_reponse_ia) as scored_replies,
        round(avg(taux_de_similarite_reponse_ia), 2) as avg_similarity,
        count(*) filter (where taux_de_similarite_reponse_ia >= 100) as ai_draft_as_is,
        round(count(*) filter (where taux_de_similarite_reponse_ia >= 100) / nullif(count(taux_de_similarite_reponse_ia), 0), 4) as share_ai_draft_as_is
    from replies
    group by intitule_structure

)

select * from final
order by replies desc, intitule_structure
