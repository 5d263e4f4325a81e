-- the sentiment shares of each typology/structure lie in [0, 1] and never add up to more than 1
select *
from marts.sentiment_by_structure_typology
where share_negatif + share_neutre + share_positif > 1.001  -- each share is rounded to 4 decimals
   or least(share_negatif, share_neutre, share_positif) < 0
   or negatif + neutre + positif > experiences
