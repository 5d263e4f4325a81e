-- theme tags are among the five known ones and take the values Négatif, Neutre or Positif
select distinct tag, tag_value
from marts.tags_by_sentiment
where tag not in ('accessibilite', 'relation', 'reactivite', 'information_explication', 'simplicite_complexite')
   or tag_value not in ('Négatif', 'Neutre', 'Positif')
