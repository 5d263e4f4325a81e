-- sentiment counts and replies never exceed the experiences, and the rate lies in [0, 1]
select *
from marts.experiences_by_structure
where negatif + neutre + positif > experiences
   or with_response > experiences
   or response_rate not between 0 and 1
