-- the countries account for every experience, and their shares add up to 1
select sum(experiences) as total, sum(share) as shares
from marts.top_countries
having sum(experiences) <> (select count(*) from staging.stg_experiences)
    or abs(sum(share) - 1) > 0.01
