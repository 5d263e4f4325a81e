"""The SQL models: data tests fail the build, show the offending rows, and leave the marts as they were."""

import duckdb

from conftest import query, spp, table_dump


def test_failing_data_test_rolls_back_and_shows_rows(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    marts_before = {k: v for k, v in table_dump(db).items() if k.startswith("marts.")}
    con = duckdb.connect(str(db))
    victim = con.execute("SELECT min(id_experience) FROM raw.experiences").fetchone()[0]
    con.execute(f"UPDATE raw.experiences SET ressenti_usager = 'Furieux' WHERE id_experience = {victim}")
    con.execute("INSERT INTO raw.experiences__responses (id_experience, slot, intitule_structure) VALUES (42, 1, 'Orphan')")
    con.close()
    out = spp("models", "--db", str(db))
    assert out.returncode == 6
    assert "stg_experiences_sentiment_accepted: 1 offending row(s)" in out.stderr
    assert f"id_experience={victim}" in out.stderr and "'Furieux'" in out.stderr
    assert "stg_responses_have_parent: 1 offending row(s)" in out.stderr
    after = {k: v for k, v in table_dump(db).items() if k.startswith("marts.")}
    assert after == marts_before


def test_models_list_and_rebuild(tmp_path, small_data, make_replica):
    out = spp("models", "--list", check=True).stdout
    assert "marts.experiences_by_structure" in out and "staging.stg_experiences" in out and "test " in out
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), "--no-models", check=True)
    assert query(db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'marts'") == [(0,)]
    out = spp("models", "--db", str(db), check=True)
    assert "built 12 models and passed 12 data tests" in out.stdout
    assert query(db, "SELECT sum(experiences) FROM marts.sentiment_by_month") == [(600,)]


def test_missing_optional_field_is_no_error(tmp_path, small_data, make_replica):
    from pipelines.replica.generator import read_jsonl, write_jsonl

    rows = read_jsonl(small_data)
    for r in rows:
        del r["pays"], r["tags_metiers"]
    write_jsonl(rows, small_data)
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    assert query(db, "SELECT count(*), count(pays) FROM staging.stg_experiences") == [(600, 0)]
