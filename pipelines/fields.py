"""The experiences dataset's field list, as the Explore API describes it.

Shared by the client (a fallback schema when the portal's metadata cannot be read) and by the
local replica (which serves this list as its dataset metadata). Names, labels and types follow
../docs/ods-explore-api.md §2 (copied into data/README.md): names are ODS-derived from labels.
"""

from __future__ import annotations

import re

# ODS field types: text, int, double, date, datetime, boolean.
SLOT_COUNT = 3
SLOT_FIELDS = (
    # (child column, API prefix, ODS type)
    ("intitule_typologie", "intitule_typologie", "text"),
    ("canaux_typologie", "canaux_typologie", "text"),
    ("intitule_structure", "intitule_structure", "text"),
    ("reponse_structure", "reponse_structure", "text"),
    ("taux_de_similarite_reponse_ia", "taux_de_similarite_reponse_ia_structure", "double"),
)
SLOT_FIELD_RE = re.compile(
    r"^(?P<prefix>" + "|".join(prefix for _, prefix, _ in SLOT_FIELDS) + r")_(?P<slot>[1-9])$"
)

_SCALARS = [
    ("id_experience", "ID expérience", "int"),
    ("titre", "Titre", "text"),
    ("description", "Description", "text"),
    ("ecrit_le", "Écrit le", "date"),
    ("ressenti_usager", "Ressenti usager", "text"),
    ("pays", "Pays", "text"),
]
_SLOT_LABELS = {
    "intitule_typologie": "Intitulé typologie {k}",
    "canaux_typologie": "Canaux Typologie {k}",
    "intitule_structure": "Intitulé structure {k}",
    "reponse_structure": "Réponse structure {k}",
    "taux_de_similarite_reponse_ia_structure": "Taux de similarité réponse IA structure {k}",
}
_TAIL = [
    ("evaluation_utile_reponse_structure_1_par_visiteurs", "Evaluation utile réponse structure 1 par visiteurs", "int"),
    ("amelioration_de_service_a_considerer", "Amélioration de service à considérer", "text"),
    ("action", "Action", "text"),
    ("date_action_engagee", "Date action engagée", "date"),
    ("date_action_realisee", "Date action réalisée", "date"),
    ("accessibilite", "Accessibilité", "text"),
    ("information_explication", "Information/Explication", "text"),
    ("relation", "Relation", "text"),
    ("reactivite", "Réactivité", "text"),
    ("simplicite_complexite", "Simplicité/Complexité", "text"),
    ("pseudonyme_usager", "Pseudonyme usager", "text"),
    ("demarches_saisies_par_usager", "Démarches saisies par usager", "text"),
    ("intitule_departement_usager", "Intitulé département usager", "text"),
    ("etat_experience", "Etat expérience", "text"),
    ("date_de_publication", "Date de publication", "date"),
    ("poste_comme", "Posté comme", "text"),
    ("tags_metiers", "Tags métiers", "text"),
    ("motif_de_rejet", "Motif de rejet", "text"),
]


def _slot_fields() -> list[tuple[str, str, str]]:
    out = []
    for k in range(1, SLOT_COUNT + 1):
        for _, prefix, ods_type in SLOT_FIELDS:
            out.append((f"{prefix}_{k}", _SLOT_LABELS[prefix].format(k=k), ods_type))
    return out


# (name, label, ods type), in the order the replica serves them.
FIELDS: list[tuple[str, str, str]] = _SCALARS + _slot_fields() + _TAIL
FIELD_TYPES: dict[str, str] = {name: ods_type for name, _, ods_type in FIELDS}

PRIMARY_KEY = "id_experience"
CURSOR = "ecrit_le"
SENTIMENTS = ("Négatif", "Neutre", "Positif")
TAG_FIELDS = ("accessibilite", "information_explication", "relation", "reactivite", "simplicite_complexite")
