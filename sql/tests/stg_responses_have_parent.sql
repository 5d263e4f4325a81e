-- every response row belongs to an experience
select r.id_experience, r.slot
from staging.stg_responses as r
anti join staging.stg_experiences as e using (id_experience)
