-- the monthly counts add up to the number of experiences
select m.total, e.total
from (select sum(experiences) as total from marts.sentiment_by_month) as m,
     (select count(*) as total from staging.stg_experiences) as e
where m.total <> e.total
