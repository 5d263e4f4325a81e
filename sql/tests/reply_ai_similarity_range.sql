-- every AI-similarity score lies between 0 and 100, and scored replies never exceed replies
select 'score' as problem, id_experience, slot, taux_de_similarite_reponse_ia as value
from staging.stg_responses
where taux_de_similarite_reponse_ia not between 0 and 100

union all

select 'counts', null, null, scored_replies
from marts.reply_ai_similarity
where scored_replies > replies or ai_draft_as_is > scored_replies
