-- id_experience is unique and never NULL in staging.stg_experiences
select id_experience, count(*) as n
from staging.stg_experiences
group by id_experience
having count(*) > 1 or id_experience is null
