"""Bad input: one clear line on stderr, a documented exit code, and the database untouched."""

import pytest

from conftest import query, spp, table_dump


@pytest.mark.parametrize("args, code, text", [
    (["sync", "--since", "2024-13-01"], 2, "invalid date '2024-13-01': use YYYY-MM-DD"),
    (["sync", "--since", "yesterday"], 2, "invalid date 'yesterday'"),
    (["sync", "--lookback-days", "-3"], 2, "out of range"),
    (["sync", "--lookback-days", "ten"], 2, "invalid number 'ten'"),
    (["sync", "--window-rows", "0"], 2, "out of range"),
    (["sync", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["sync", "--full", "--since", "2024-01-01"], 2, "--full and --since do not go together"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_bad_options(args, code, text, tmp_path):
    out = spp(*args, "--db", str(tmp_path / "x.duckdb")) if args[0] == "sync" else spp(*args)
    assert out.returncode == code
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spp: error:") and text in lines[0], out.stderr
    assert not (tmp_path / "x.duckdb").exists()


def test_db_is_a_directory(tmp_path):
    out = spp("sync", "--base-url", "http://127.0.0.1:9", "--db", str(tmp_path))
    assert out.returncode == 5 and "is a directory" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_db_is_not_duckdb(tmp_path):
    bad = tmp_path / "notes.duckdb"
    bad.write_text("hello, this is not a database\n" * 10)
    out = spp("sync", "--base-url", "http://127.0.0.1:9", "--db", str(bad))
    assert out.returncode == 5 and "is not a DuckDB database" in out.stderr
    assert bad.read_text() == "hello, this is not a database\n" * 10


def test_unreachable_portal_fails_cleanly_and_changes_nothing(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    before = table_dump(db)
    # Port 9 (discard) is closed on loopback: connection refused, retried, then a clear failure.
    out = spp("sync", "--base-url", "http://127.0.0.1:9", "--db", str(db), "--timeout", "2", "--retries", "1")
    assert out.returncode == 3, out.stderr
    assert "kept failing after 2 attempts" in out.stderr and "Traceback" not in out.stderr
    assert table_dump(db) == before


def test_query_is_read_only_and_sql_errors_are_one_line(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    before = table_dump(db)
    out = spp("query", "DELETE FROM raw.experiences", "--db", str(db))
    assert out.returncode == 7 and "read-only" in out.stderr and "--write" in out.stderr
    out = spp("query", "SELEC 1", "--db", str(db))
    assert out.returncode == 7 and out.stderr.startswith("spp: error: SQL error:")
    assert len(out.stderr.strip().splitlines()) == 1
    assert table_dump(db) == before
    out = spp("query", "SELECT count(*) AS n FROM raw.experiences", "--db", str(db), "--format", "csv", check=True)
    assert out.stdout.splitlines() == ["n", "600"]
    out = spp("query", "SELECT 1 AS a", "--db", str(tmp_path / "missing.duckdb"))
    assert out.returncode == 5 and "no database" in out.stderr


@pytest.mark.parametrize("limit", ["2MB", "8MB"])
def test_duckdb_out_of_memory_is_one_line_naming_the_setting(limit, tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    before = table_dump(db)
    # Too small a limit, wherever DuckDB hits it (opening, a model, a data test): one line naming
    # the setting and its value, a documented exit code, the database as it was.
    out = spp("models", "--db", str(db), env={"SPP_DUCKDB_MEMORY_LIMIT": limit})
    lines = out.stderr.strip().splitlines()
    assert out.returncode in (5, 6), out.stderr
    assert len(lines) == 1 and lines[0].startswith("spp: error:") and "Out of Memory" in lines[0], out.stderr
    assert f"SPP_DUCKDB_MEMORY_LIMIT (now {limit})" in lines[0]
    assert table_dump(db) == before
    assert spp("models", "--db", str(db)).returncode == 0


def test_out_of_memory_in_the_load_is_one_line_and_the_next_run_completes(tmp_path, small_data, make_replica):
    # dlt retries the failed load job, then wraps DuckDB's error several times over: still one line.
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    out = spp("sync", "--base-url", replica.url, "--db", str(db), "--quiet", env={"SPP_DUCKDB_MEMORY_LIMIT": "4MB"},
              timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 5, out.stderr
    assert len(lines) == 1 and "SPP_DUCKDB_MEMORY_LIMIT (now 4MB)" in lines[0] and "Out of Memory" in lines[0], out.stderr
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    ids = sorted(int(r["id_experience"]) for r in replica.rows())
    assert [i for (i,) in query(db, "SELECT id_experience FROM raw.experiences ORDER BY 1")] == ids
