"""Portal faults injected by the replica: every run ends with exact data, or a clear error and an unchanged database."""

from __future__ import annotations

import json
import time

import pytest

from conftest import assert_matches_replica, query, spp, table_dump

FAST = ["--timeout", "3"]


def faults_file(tmp_path, rules):
    path = tmp_path / "faults.json"
    path.write_text(json.dumps(rules))
    return path


@pytest.mark.parametrize("rules", [
    [{"endpoint": "export", "requests": [1, 2], "fault": "503"}],
    [{"endpoint": "export", "requests": [1], "fault": "500"}, {"endpoint": "records", "requests": [1], "fault": "502"}],
    [{"endpoint": "metadata", "requests": [1], "fault": "html"}],
    [{"endpoint": "export", "requests": [1], "fault": "truncate"}],
    [{"endpoint": "export", "requests": [1], "fault": "reset"}],
    [{"endpoint": "metadata", "requests": [1], "fault": "malformed"}],
    [{"endpoint": "records", "requests": [1], "fault": "ods_error"}],
    [{"endpoint": "export", "requests": [1], "fault": "429", "reset_in": 1}],
    [{"endpoint": "export", "requests": [1], "fault": "slow", "seconds": 5}],
], ids=["503x2", "500+502", "html-proxy", "truncated-body", "reset-mid-body", "malformed-json", "200-with-error",
        "429-short-reset", "slower-than-timeout"])
def test_transient_faults_are_retried_to_an_exact_result(rules, tmp_path, small_data, make_replica):
    replica = make_replica(small_data, faults_file(tmp_path, rules))
    db = tmp_path / "spp.duckdb"
    out = spp("sync", "--base-url", replica.url, "--db", str(db), *FAST, check=True)
    assert "retrying" in out.stderr  # each retry is logged with its reason
    assert_matches_replica(db, replica.rows())


def test_persistent_5xx_fails_clearly_and_changes_nothing(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    before = table_dump(db)
    broken = make_replica(small_data, faults_file(tmp_path, [{"endpoint": "export", "fault": "503"}]))
    out = spp("sync", "--base-url", broken.url, "--db", str(db), "--full", "--retries", "2", *FAST)
    assert out.returncode == 3
    assert "kept failing after 3 attempts" in out.stderr and "HTTP 503" in out.stderr
    assert table_dump(db) == before
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)  # and the next run succeeds


def test_quota_exhausted_beyond_max_wait(tmp_path, small_data, make_replica):
    replica = make_replica(small_data, faults_file(tmp_path, [{"endpoint": "*", "fault": "429", "reset_in": 7200}]))
    db = tmp_path / "spp.duckdb"
    started = time.monotonic()
    out = spp("sync", "--base-url", replica.url, "--db", str(db), "--max-quota-wait", "60")
    assert time.monotonic() - started < 30  # no pointless waiting
    assert out.returncode == 3
    assert "quota is exhausted until" in out.stderr and "10005" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not db.exists() or query(db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw'") == [(0,)]


def test_unknown_dataset_is_not_retried(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    out = spp("sync", "--base-url", replica.url, "--dataset", "no-such-dataset", "--db", str(tmp_path / "x.duckdb"))
    assert out.returncode == 3
    assert "HTTP 404 DatasetNotFound" in out.stderr and "check --dataset" in out.stderr
    assert "retrying" not in out.stderr


@pytest.mark.parametrize("change", ["new_field", "missing_field", "id_as_string", "date_format"])
def test_safe_schema_drift_is_absorbed(change, tmp_path, small_data, make_replica):
    rule = {"endpoint": "export", "fault": "drift", "change": change, "field": "pays"}
    replica = make_replica(small_data, faults_file(tmp_path, [rule]))
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    rows = replica.rows()
    if change == "missing_field":
        for r in rows:
            r["pays"] = None
    assert_matches_replica(db, rows)
    if change == "new_field":
        assert query(db, "SELECT count(nouveau_champ) FROM raw.experiences") == [(300,)]


@pytest.mark.parametrize("change, field", [("bad_date", "ecrit_le"), ("bad_id", "id_experience")])
def test_unsafe_drift_stops_with_field_and_value(change, field, tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    before = table_dump(db)
    drifting = make_replica(small_data, faults_file(tmp_path, [{"endpoint": "export", "fault": "drift", "change": change}]))
    out = spp("sync", "--base-url", drifting.url, "--db", str(db), "--full")
    assert out.returncode == 4, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("spp: error:") and f"field '{field}'" in last and ("'bientôt'" in last or "'abc-12'" in last)
    assert "Traceback" not in out.stderr
    assert table_dump(db) == before


def test_duplicate_ids_last_wins_and_are_reported(tmp_path, small_data, make_replica):
    replica = make_replica(small_data, faults_file(tmp_path, [{"endpoint": "export", "fault": "drift", "change": "duplicate_ids"}]))
    db = tmp_path / "spp.duckdb"
    out = spp("sync", "--base-url", replica.url, "--db", str(db), "--json", check=True)
    s = json.loads(out.stdout)
    assert s["duplicates"] == 1 and s["fetched"] == 600
    first = replica.rows()[0]["id_experience"]
    assert query(db, f"SELECT titre FROM raw.experiences WHERE id_experience = {first}") == [("Titre corrigé (doublon)",)]


def test_duplicate_ids_across_batches_last_wins(tmp_path, make_replica):
    from conftest import generated
    from pipelines.replica.generator import write_jsonl

    rows = generated(4000, seed=11)  # about 9 MB of JSON lines: several read batches
    data = tmp_path / "big.jsonl"
    write_jsonl(rows, data)
    replica = make_replica(data, faults_file(tmp_path, [{"endpoint": "export", "fault": "drift", "change": "duplicate_ids"}]))
    db = tmp_path / "spp.duckdb"
    out = spp("sync", "--base-url", replica.url, "--db", str(db), "--json", check=True)
    s = json.loads(out.stdout)
    assert s["duplicates"] == 1 and s["new"] == 4000
    assert "repeats ids across batches" in out.stderr
    first = rows[0]["id_experience"]
    assert query(db, f"SELECT titre FROM raw.experiences WHERE id_experience = {first}") == [("Titre corrigé (doublon)",)]
    assert query(db, "SELECT count(*), count(DISTINCT id_experience) FROM raw.experiences") == [(4000, 4000)]


@pytest.mark.parametrize("change, field, value", [("bad_date", "ecrit_le", "bientôt"), ("bad_id", "id_experience", "abc-12")])
def test_quarantine_sets_bad_rows_aside_and_loads_the_rest(change, field, value, tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    before = table_dump(db)["raw.experiences"]
    drifting = make_replica(small_data, faults_file(tmp_path, [{"endpoint": "export", "fault": "drift", "change": change}]))
    out = spp("sync", "--base-url", drifting.url, "--db", str(db), "--full", "--on-bad-rows", "quarantine", "--json", check=True)
    s = json.loads(out.stdout)
    assert s["rejected"] == 1 and s["removed"] == 0 and s["updated"] == 0
    rejected = query(db, "SELECT id_experience, field, value, expected_type FROM raw.rejected_rows")
    assert len(rejected) == 1 and rejected[0][1:3] == (field, value)
    # The row set aside keeps its previous version; nothing else changed.
    assert table_dump(db)["raw.experiences"] == before
