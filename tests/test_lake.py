"""The same pipeline on DuckLake: catalog in a real PostgreSQL on loopback, data files in a folder.

The lake is checked through its own plain DuckDB attach (conftest.LakeRef), not through the code
under test, and compared with a DuckDB-file sync of the same replica.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import ROOT, assert_matches_replica, generated, open_db, spp, table_dump
from pipelines.replica.generator import write_jsonl
from test_crash import kill, start_paused


def lake_spp(lake, *args, **kw):
    return spp(*args, "--destination", "ducklake", "--db", str(lake.data_path.parent / "state" / "spp.duckdb"),
               env=lake.env, **kw)


def changed_portal(replica) -> list[dict]:
    """Late reply, moved structure, a removed slot and an unpublished experience, near the cursor."""
    rows = replica.rows()
    recent = sorted((r for r in rows if r["ecrit_le"]), key=lambda r: r["ecrit_le"])[-40:]
    late = next(r for r in recent if r["reponse_structure_1"] is None)
    two_slots = next(r for r in recent if r["intitule_structure_2"])
    moved, gone = [r for r in recent if r is not late and r is not two_slots][:2]
    late["reponse_structure_1"] = "Réponse arrivée tard."
    moved["intitule_structure_1"] = "CAF du Nord"
    for k in ("intitule_typologie_2", "canaux_typologie_2", "intitule_structure_2", "reponse_structure_2",
              "taux_de_similarite_reponse_ia_structure_2"):
        two_slots[k] = None
    rows.remove(gone)
    old = next(r for r in sorted((r for r in rows if r["ecrit_le"]), key=lambda r: r["ecrit_le"])
               if r["ressenti_usager"] != "Positif")
    old["ressenti_usager"] = "Positif"  # outside the lookback: only --full sees it
    replica.write(rows)
    return rows, old["id_experience"]


def test_lake_sync_incremental_and_full_equal_duckdb(tmp_path, small_data, make_replica, make_lake):
    replica = make_replica(small_data)
    lake, db = make_lake(), tmp_path / "spp.duckdb"
    out = lake_spp(lake, "sync", "--base-url", replica.url, "--json", check=True)
    assert json.loads(out.stdout)["new"] == 600
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    assert_matches_replica(lake, replica.rows())
    # Raw tables and every mart equal the DuckDB build's, row for row.
    assert table_dump(lake) == table_dump(db)
    assert len([t for t in table_dump(lake) if t.startswith("marts.")]) == 8

    rows, old_id = changed_portal(replica)
    for run in (lambda *a: spp(*a, "--db", str(db), check=True), lambda *a: lake_spp(lake, *a, check=True)):
        s = json.loads(run("sync", "--base-url", replica.url, "--json").stdout)
        assert (s["updated"], s["removed"]) == (3, 1)
    assert table_dump(lake) == table_dump(db)
    sentiment = f"SELECT ressenti_usager FROM raw.experiences WHERE id_experience = {old_id}"
    assert open_db(lake).execute(sentiment).fetchone()[0] != "Positif"  # outside the lookback
    for run in (lambda *a: lake_spp(lake, *a, check=True), lambda *a: spp(*a, "--db", str(db), check=True)):
        run("sync", "--base-url", replica.url, "--full")
    assert_matches_replica(lake, rows)
    assert table_dump(lake) == table_dump(db)
    assert open_db(lake).execute(sentiment).fetchone()[0] == "Positif"

    # Nothing new: no load, no model build, a new run recorded.
    s = json.loads(lake_spp(lake, "sync", "--base-url", replica.url, "--json", check=True).stdout)
    assert (s["new"], s["updated"], s["removed"], s["models_seconds"]) == (0, 0, 0, 0.0)


def test_query_status_report_export_read_the_lake(tmp_path, small_data, make_replica, make_lake):
    replica = make_replica(small_data)
    lake = make_lake()
    lake_spp(lake, "sync", "--base-url", replica.url, check=True)
    out = lake_spp(lake, "query", "SELECT sum(experiences) AS n FROM marts.sentiment_by_month", "--format", "csv", check=True)
    assert out.stdout.splitlines() == ["n", "600"]
    status = lake_spp(lake, "status", check=True).stdout
    assert "ducklake spp" in status and "raw.experiences" in status and "600" in status
    assert lake_spp(lake, "report", "--out", str(tmp_path / "r.html"), check=True).returncode == 0
    assert "<svg" in (tmp_path / "r.html").read_text()
    lake_spp(lake, "export", "--out", str(tmp_path / "exp"), check=True)
    con = open_db(lake)
    want = con.execute("SELECT count(*) FROM marts.volume_by_month_structure").fetchone()[0]
    import duckdb

    got = duckdb.sql(f"SELECT count(*) FROM '{tmp_path / 'exp' / 'volume_by_month_structure.parquet'}'").fetchone()[0]
    assert got == want > 0
    bad = lake_spp(lake, "query", "SELECT * FROM nowhere")
    assert bad.returncode == 7 and bad.stderr.count("\n") == 1


READER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import duckdb
    from pipelines.lake import Lake
    stop = Path(sys.argv[1])
    lake = Lake.from_config(Path(sys.argv[2]))
    seen, errors, n = set(), [], 0
    while not stop.exists():
        try:
            # What spp query / report / export do: read-only, pinned to the last finished sync.
            con = lake.connect(read_only=True)
            raw, marts = con.execute("SELECT (SELECT count(*) FROM raw.experiences), "
                                     "(SELECT sum(experiences) FROM marts.sentiment_by_month)").fetchone()
            con.close()
            seen.add((raw, int(marts)))
            # What a BI tool attaching the lake does: the latest commit, whatever is running.
            con = lake.connect(read_only=True, published=False)
            con.execute("SELECT count(*) FROM marts.experiences_by_structure").fetchone()
            con.close()
            n += 1
        except Exception as e:
            errors.append(str(e).splitlines()[0])
    print(json.dumps({"seen": sorted(seen), "errors": errors, "reads": n}))
""")


def test_readers_query_the_lake_through_a_sync(tmp_path, make_replica, make_lake):
    data = tmp_path / "experiences.jsonl"
    rows = generated(3000)
    write_jsonl(rows[:1000], data)
    replica = make_replica(data)
    lake = make_lake()
    lake_spp(lake, "sync", "--base-url", replica.url, check=True)
    replica.write(rows)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(stop), str(lake.data_path.parent / "state")],
                              cwd=ROOT, env=dict(os.environ, **lake.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # --full with small windows: several commits before the models are rebuilt.
        out = lake_spp(lake, "sync", "--base-url", replica.url, "--full", "--window-rows", "500", "--json", check=True)
        assert json.loads(out.stdout)["windows"] >= 4
    finally:
        stop.touch()
        stdout, stderr = reader.communicate(timeout=120)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["errors"] == [], result["errors"][:3]
    assert result["reads"] >= 3
    # Pinned readers saw the state before or after the sync, never windows without their models.
    assert set(map(tuple, result["seen"])) <= {(1000, 1000), (3000, 3000)}, result["seen"]
    assert lake_spp(lake, "query", "SELECT count(*) AS n FROM raw.experiences", "--format", "csv",
                    check=True).stdout.splitlines() == ["n", "3000"]


def test_sigkill_during_a_lake_sync_then_resync(tmp_path, small_data, make_replica, make_lake):
    replica = make_replica(small_data)
    db = tmp_path / "clean.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    for point in ("load:1", "models:experiences_by_structure"):
        lake = make_lake(point.replace(":", "_"))
        args = ["sync", "--base-url", replica.url, "--destination", "ducklake",
                "--db", str(lake.data_path.parent / f"state-{lake.data_path.name}" / "spp.duckdb")]
        os.environ.update(lake.env)
        try:
            kill(start_paused(args, point))
            out = spp(*args, "--json", check=True)
        finally:
            for k in lake.env:
                os.environ.pop(k)
        assert json.loads(out.stdout)["resumed_pending_load"] is (point == "load:1")
        assert table_dump(lake) == table_dump(db), point
        assert_matches_replica(lake, replica.rows())


def test_lake_on_s3_style_storage(tmp_path, small_data, make_replica, make_lake, s3_server):
    endpoint, s3 = s3_server
    replica = make_replica(small_data)
    lake, db = make_lake(s3_endpoint=endpoint), tmp_path / "spp.duckdb"
    lake_spp(lake, "sync", "--base-url", replica.url, check=True)
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    assert_matches_replica(lake, replica.rows())
    assert table_dump(lake) == table_dump(db)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake").get("Contents", [])]
    assert any("/raw/experiences/" in k and k.endswith(".parquet") for k in keys), keys
    assert not lake.data_path.exists()  # nothing written locally but the state folder beside --db
    out = lake_spp(lake, "query", "SELECT count(*) AS n FROM raw.experiences", "--format", "csv", check=True)
    assert out.stdout.splitlines() == ["n", "600"]


def test_lake_settings_errors_are_one_line(tmp_path, make_lake):
    out = spp("status", "--destination", "ducklake", "--db", str(tmp_path / "x.duckdb"),
              env={"DESTINATION__DUCKLAKE__CREDENTIALS__CATALOG": ""})
    assert out.returncode == 2 and "needs a catalog" in out.stderr and out.stderr.count("\n") == 1
    lake = make_lake()
    env = dict(lake.env, DESTINATION__DUCKLAKE__CREDENTIALS__CATALOG="postgres://postgres@127.0.0.1:1/nowhere")
    out = spp("status", "--destination", "ducklake", "--db", str(tmp_path / "x.duckdb"), env=env)
    assert out.returncode == 5 and out.stderr.startswith("spp: error: cannot open ducklake spp") and out.stderr.count("\n") == 1
    out = spp("sync", "--destination", "motherduck", "--db", str(tmp_path / "x.duckdb"),
              env={"motherduck_token": "", "MOTHERDUCK_TOKEN": ""})
    assert out.returncode == 2 and "needs a token" in out.stderr
    # With a token, the attempt fails here only because MotherDuck (and its extension) cannot be
    # reached from this machine: one line, exit 5, no local file written.
    out = spp("status", "--destination", "motherduck", "--db", str(tmp_path / "md" / "x.duckdb"),
              env={"motherduck_token": "not-a-real-token"})
    assert out.returncode == 5 and out.stderr.startswith("spp: error: cannot open motherduck md:spp")
    assert out.stderr.count("\n") == 1 and not (tmp_path / "md" / "x.duckdb").exists()
