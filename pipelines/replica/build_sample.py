"""Rebuild data/experiences_sample.jsonl.gz from the real 2022 experiences (deterministic, seed 2022)."""

from pipelines.replica.generator import DATA_DIR, Generator, write_jsonl

SAMPLE = DATA_DIR / "experiences_sample.jsonl.gz"
SEED = 2022

if __name__ == "__main__":
    n = write_jsonl(Generator(seed=SEED).sample(), SAMPLE)
    print(f"wrote {n} experiences to {SAMPLE}")
