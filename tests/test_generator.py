"""The shipped sample is exactly what the seeded generator makes, and looks like the real data."""

import statistics

from pipelines.replica.build_sample import SAMPLE, SEED
from pipelines.replica.generator import Generator, read_jsonl


def test_shipped_sample_is_reproducible():
    assert read_jsonl(SAMPLE) == list(Generator(seed=SEED).sample())


def test_generator_is_seeded_and_realistic():
    a = list(Generator(seed=3).experiences(2000))
    assert a == list(Generator(seed=3).experiences(2000))
    ids = [r["id_experience"] for r in a]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert 350 <= statistics.median(len(r["description"]) for r in a) <= 650
    replies = [r["reponse_structure_1"] for r in a if r["reponse_structure_1"]]
    assert 0.5 < len(replies) / len(a) < 0.75
    assert statistics.median(len(t) for t in replies) > 300
    assert any("&nbsp;" in t for t in replies) and any("\r\n" in t for t in replies)
    assert any(r["intitule_structure_2"] for r in a) and any(r["intitule_structure_3"] for r in a)
    assert all(r["canaux_typologie_1"].endswith(",") for r in a if r["canaux_typologie_1"])
    assert {r["ressenti_usager"] for r in a} == {"Négatif", "Neutre", "Positif"}
