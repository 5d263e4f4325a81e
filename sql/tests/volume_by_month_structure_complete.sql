-- every experience is counted once per structure it names, month by month
select v.total, i.total
from (select sum(experiences) as total from marts.volume_by_month_structure) as v,
     (select count(*) as total from intermediate.int_experience_structures) as i
where v.total <> i.total
