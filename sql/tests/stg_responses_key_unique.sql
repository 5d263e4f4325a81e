-- (id_experience, slot) is unique, and slot is 1 or more
select id_experience, slot, count(*) as n
from staging.stg_responses
group by id_experience, slot
having count(*) > 1 or slot is null or slot < 1
