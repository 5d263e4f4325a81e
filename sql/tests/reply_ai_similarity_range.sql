-- AI-similarity scores lie between 0 and 100 and scored replies never exceed replies
select *
from marts.reply_ai_similarity
where avg_similarity not between 0 and 100
   or scored_replies > replies
   or ai_draft_as_is > scored_replies
