-- ressenti_usager is one of Négatif, Neutre, Positif (or NULL)
select id_experience, ressenti_usager
from staging.stg_experiences
where ressenti_usager not in ('Négatif', 'Neutre', 'Positif')
