-- channel names are trimmed and not empty, and no channel has more experiences than there are
select *
from marts.contact_channels
where canal is null or canal <> trim(canal) or canal = ''
   or experiences > (select count(*) from staging.stg_experiences)
