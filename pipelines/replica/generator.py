"""Seeded generator of realistic experiences, for the replica's sample, tests and benchmarks.

Titles and descriptions are drawn from the 8,258 real 2022 experiences (data/, see
data/README.md), so text lengths follow the real distribution (description median about 470
characters). Structures, replies, slots 2–3, tags and channels are added with the frequencies
and quirks documented for the real export: replies greet a pseudonym and carry `\\r\\n`, U+00A0
and literal `&nbsp;`; channels are a comma list with a trailing comma; a few `ecrit_le` are null.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path

from pipelines.fields import FIELDS

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
REAL_2022 = DATA_DIR / "spp_experiences_2022_real.jsonl.gz"
REAL_SAMPLES = DATA_DIR / "real_samples_2023.json"

# (typology, [structures], weight, share of negative / neutral / positive)
NETWORKS = [
    ("CAF", ["CAF de la Gironde", "CAF du Nord", "CAF de Paris", "CAF du Finistère", "CAF des Bouches-du-Rhône"], 14, (0.62, 0.12, 0.26)),
    ("CNAM", ["CNAM", "CPAM du Rhône", "CPAM de la Haute-Garonne", "CPAM des Hauts-de-Seine"], 13, (0.55, 0.13, 0.32)),
    ("Préfecture", ["Préfecture des Hauts-de-Seine", "Préfecture de l'Essonne", "Préfecture du Val-d'Oise", "Préfecture de la Seine-Maritime", "Préfecture du Nord"], 12, (0.85, 0.07, 0.08)),
    ("Réseau consulaire", ["Consulat général de France à Londres", "Ambassade de France en Afghanistan", "Consulat général de France à Genève", "Consulat général de France à Madrid"], 9, (0.80, 0.06, 0.14)),
    ("POLE EMPLOI", ["France Travail Île-de-France", "France Travail Occitanie", "France Travail Hauts-de-France"], 9, (0.50, 0.15, 0.35)),
    ("ANTS", ["ANTS"], 7, (0.82, 0.08, 0.10)),
    ("MSA", ["MSA Ile de France", "MSA Maine et Loire", "MSA Marne Ardennes Meuse", "MSA d'Armorique"], 5, (0.58, 0.12, 0.30)),
    ("Service des Impôts des particuliers", ["SIP de Lyon", "SIP de Paris 15e", "SIP de Bordeaux"], 6, (0.45, 0.15, 0.40)),
    ("URSSAF", ["URSSAF Île-de-France", "URSSAF Rhône-Alpes"], 4, (0.60, 0.12, 0.28)),
    ("CNAV", ["Assurance retraite Ile de France", "Carsat Bretagne"], 4, (0.55, 0.12, 0.33)),
    ("Gendarmerie Nationale", ["Brigade de gendarmerie de Rennes", "Unité Numérique"], 3, (0.16, 0.05, 0.79)),
    ("Ministère de l’Europe et des Affaires étrangères (MEAE)", ["Direction des Français à l'étranger et de l'administration consulaire", "Hors-structures"], 3, (0.78, 0.08, 0.14)),
    ("Ville - Commune", ["Mairie de Nantes", "Mairie de Lille"], 3, (0.40, 0.15, 0.45)),
    ("115", ["Hors-structures"], 1, (0.50, 0.25, 0.25)),
]
CHANNELS = [
    ("Démarche en ligne", 9534), ("Téléphone", 5718), ("E-mail", 4307), ("Accueil", 4249),
    ("Compte ou espace personnel", 3535), ("Courrier", 2069), ("Tchat (messagerie instantanée)", 268),
    ("Réseaux Sociaux", 247), ("Patrouille", 69), ("Visio/Video", 13),
]
COUNTRIES = [("Afghanistan", 516), ("Royaume-uni", 430), ("Suisse", 345), ("Espagne", 338), ("États-unis", 254),
             ("Canada", 237), ("Allemagne", 232), ("Belgique", 161), ("Luxembourg", 118), ("Pays-bas", 60)]
DEPARTEMENTS = ["Paris", "Nord", "Bouches-du-Rhône", "Rhône", "Gironde", "Hauts-de-Seine", "Seine-Saint-Denis",
                "Haute-Garonne", "Loire-Atlantique", "Finistère", "Essonne", "Val-d'Oise", "Bas-Rhin", "Hérault"]
PSEUDOS = ["Doudou", "PHCH", "dro58", "Amine", "Exaucé", "Elimic", "MANNE", "Camille75", "jpm", "Sylvie",
           "Marc_B", "lucie.r", "Nadia", "Thomas", "Fatou", "bzh29", "Karim", "Mme K.", "Jean-L. B.", "Zoé"]
SENTIMENTS = ("Négatif", "Neutre", "Positif")
TAG_FIELDS = ("accessibilite", "information_explication", "relation", "reactivite", "simplicite_complexite")
REPLY_MIDDLES = [
    "Nous sommes navrés des désagréments rencontrés et nous comprenons votre mécontentement.",
    "Après vérification de votre dossier, nous constatons que votre demande a bien été enregistrée et qu'elle est en cours de traitement par nos services.",
    "Votre situation a été transmise au service compétent qui reprendra contact avec vous dans les meilleurs délais.",
    "Nous vous invitons à déposer une réclamation depuis votre espace personnel, rubrique « Mes démarches », afin que nous puissions étudier votre situation.",
    "Les délais de traitement sont actuellement allongés en raison d'un nombre important de demandes ; nous mettons tout en œuvre pour les réduire.",
    "Un conseiller a tenté de vous joindre par téléphone le {d} sans succès ; nous vous proposons un rendez-vous à l'accueil de votre agence.",
    "Nous vous remercions pour votre retour positif, que nous avons partagé avec les équipes concernées.",
]
REPLY_CLOSINGS = [
    "Nous restons à votre disposition pour tout renseignement complémentaire.\n\nBien cordialement,\n\nLe service relation usagers",
    "Nous vous prions d'agréer nos salutations distinguées.\n\nL'équipe {s}",
    "Cordialement,\n\nLe pôle qualité de service",
]


def _load_real() -> list[dict]:
    with gzip.open(REAL_2022, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _load_reply_examples() -> list[str]:
    samples = json.loads(REAL_SAMPLES.read_text(encoding="utf-8"))
    return [
        s["record"]["reponse_structure_1"]
        for s in samples
        if s["kind"] == "structure_response_example" and s["record"].get("reponse_structure_1")
    ]


class Generator:
    """`Generator(seed).experiences(n)` yields n experiences as flat dicts keyed by API field name."""

    def __init__(self, seed: int = 42):
        self.rng = random.Random(seed)
        self.real = _load_real()
        self.real_replies = _load_reply_examples()
        self._channel_names = [c for c, _ in CHANNELS]
        self._channel_weights = [w for _, w in CHANNELS]
        self._network_weights = [n[2] for n in NETWORKS]

    # -- pieces
    def _channels(self) -> str | None:
        rng = self.rng
        if rng.random() < 0.08:
            return None
        k = rng.choices((1, 2, 3), (0.6, 0.3, 0.1))[0]
        picked = []
        while len(picked) < k:
            c = rng.choices(self._channel_names, self._channel_weights)[0]
            if c not in picked:
                picked.append(c)
        return ", ".join(picked) + ","

    def _reply(self, pseudo: str | None, structure: str, day: dt.date | None) -> str:
        rng = self.rng
        if rng.random() < 0.25:
            body = rng.choice(self.real_replies)
            if pseudo and body.startswith("Bonjour,"):
                body = f"Bonjour {pseudo}," + body[len("Bonjour,"):]
        else:
            greet = rng.choice([f"Bonjour {pseudo}," if pseudo else "Bonjour,", f"Bonjour{pseudo}," if pseudo else "Bonjour,", "Bonjour,&nbsp;", "Bonjour&nbsp;Madame, Monsieur,"])
            middles = rng.sample(REPLY_MIDDLES, rng.choice((1, 2, 3)))
            when = (day or dt.date(2024, 1, 1)) + dt.timedelta(days=rng.randint(1, 20))
            parts = [greet, "Nous vous remercions d'avoir partagé votre expérience sur Services Publics +."]
            parts += [m.format(d=when.strftime("%d/%m/%Y")) for m in middles]
            parts.append(rng.choice(REPLY_CLOSINGS).format(s=structure))
            body = "\n\n".join(parts)
        r = rng.random()
        if r < 0.2:
            body = body.replace("\n", "\r\n")
        elif r < 0.3:
            body = body.replace(" :", "\u00a0:").replace(" ;", "\u00a0;")
        elif r < 0.4:
            body = body.replace("\n\n", "&nbsp;\n\n", 1)
        return body

    def _slot(self, rec: dict, k: int, network: tuple, day: dt.date | None, replied: bool) -> None:
        rng = self.rng
        typology, structures, _, _ = network
        structure = rng.choice(structures)
        rec[f"intitule_typologie_{k}"] = typology
        rec[f"canaux_typologie_{k}"] = self._channels()
        rec[f"intitule_structure_{k}"] = structure
        if replied:
            rec[f"reponse_structure_{k}"] = self._reply(rec.get("pseudonyme_usager"), structure, day)
            rec[f"taux_de_similarite_reponse_ia_structure_{k}"] = (
                None if rng.random() < 0.45 else float(rng.choice([100, 100, 100, rng.randint(20, 99)]))
            )
        else:
            rec[f"reponse_structure_{k}"] = None
            rec[f"taux_de_similarite_reponse_ia_structure_{k}"] = None

    def enrich(self, rec: dict, day: dt.date | None) -> dict:
        """Fill every API field of `rec` (which has id, date, title, description and maybe more)."""
        rng = self.rng
        out = {name: None for name, _, _ in FIELDS}
        out.update({k: v for k, v in rec.items() if not k.startswith("_")})
        consular = out.get("intitule_typologie_1") == "Réseau consulaire"
        network = next(n for n in NETWORKS if n[0] == "Réseau consulaire") if consular else rng.choices(NETWORKS, self._network_weights)[0]
        if not out.get("ressenti_usager"):
            out["ressenti_usager"] = rng.choices(SENTIMENTS, network[3])[0]
        if not out.get("pays"):
            out["pays"] = rng.choices(COUNTRIES, [w for _, w in COUNTRIES])[0][0] if consular else ("France" if rng.random() < 0.97 else None)
        out["pseudonyme_usager"] = rng.choice(PSEUDOS) if rng.random() < 0.9 else None
        out["intitule_departement_usager"] = None if consular else rng.choice(DEPARTEMENTS)
        replied = rng.random() < 0.62
        keep_channels = out.get("canaux_typologie_1")
        self._slot(out, 1, network, day, replied)
        if keep_channels is not None or consular:
            out["canaux_typologie_1"] = keep_channels
        if rng.random() < 0.09:
            self._slot(out, 2, rng.choices(NETWORKS, self._network_weights)[0], day, rng.random() < 0.5)
            if rng.random() < 0.18:
                self._slot(out, 3, rng.choices(NETWORKS, self._network_weights)[0], day, rng.random() < 0.4)
        for tag in TAG_FIELDS:
            if rng.random() < 0.35:
                out[tag] = out["ressenti_usager"] if rng.random() < 0.7 else rng.choice(SENTIMENTS)
        out["etat_experience"] = "Traitée" if replied else "A traiter"
        out["poste_comme"] = rng.choices(["Usager", "Aidant", "Agent"], (0.9, 0.07, 0.03))[0]
        if day is not None:
            out["date_de_publication"] = (day + dt.timedelta(days=rng.randint(0, 3))).isoformat()
        if replied:
            out["evaluation_utile_reponse_structure_1_par_visiteurs"] = rng.choice((0, 0, 0, 1, 1, 2, 3, 5))
            if rng.random() < 0.1:
                out["action"] = "Rappel de l'usager et régularisation du dossier."
                out["amelioration_de_service_a_considerer"] = rng.choice(("Oui", "Non"))
                if day is not None:
                    out["date_action_engagee"] = (day + dt.timedelta(days=rng.randint(2, 30))).isoformat()
                    if rng.random() < 0.5:
                        out["date_action_realisee"] = (day + dt.timedelta(days=rng.randint(31, 90))).isoformat()
        if rng.random() < 0.05:
            out["tags_metiers"] = rng.choice(("Délais", "Dématérialisation", "Prise de rendez-vous", "Paiement"))
        return out

    def sample(self) -> Iterator[dict]:
        """The real 2022 experiences, each enriched with the fields the 2022 file lacks."""
        for rec in self.real:
            day = dt.date.fromisoformat(rec["ecrit_le"]) if rec.get("ecrit_le") else None
            yield self.enrich(rec, day)

    def experiences(self, n: int, start_id: int = 3_000_000, start: dt.date = dt.date(2021, 10, 1),
                    end: dt.date = dt.date(2026, 11, 30)) -> Iterator[dict]:
        """n experiences with sparse increasing ids and send dates spread evenly from start to end."""
        rng = self.rng
        span = (end - start).days
        next_id = start_id
        for i in range(n):
            next_id += rng.randint(1, 120)
            src = self.real[rng.randrange(len(self.real))]
            day = start + dt.timedelta(days=(i * span) // max(n, 1))
            rec = {"id_experience": next_id, "titre": src["titre"], "description": src["description"],
                   "ecrit_le": None if rng.random() < 0.0005 else day.isoformat()}
            yield self.enrich(rec, day)


def write_jsonl(rows, path: Path) -> int:
    """Write rows as JSON lines (gzip when the name ends in .gz); return the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    count = 0
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False))
            f.write("\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
