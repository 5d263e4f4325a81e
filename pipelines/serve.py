"""Serve: read-only copies for BI tools, so that a reader never blocks the sync.

DuckDB allows one writer or many readers, never both. BI tools therefore never open the working
database: after each successful sync and model build, `publish()` writes

  serving/spp.duckdb          raw tables, staging views as tables, marts
  serving/parquet/<mart>.parquet

beside the database. Each is built under a temporary name and swapped in with one rename: the
DuckDB file by os.replace (a reader holding the old file keeps reading the old version), the
Parquet folder through a symlink that is replaced atomically. Readers see the previous or the new
version, never a mix, and never hold a lock the sync needs.

Patching instead of rewriting. Copying every table is the slow part of publishing (the raw and
staging text), while a sync usually changes a few experiences. So the previous version is kept
beside the current one (`.spp.standby.duckdb`) and the next publication patches it in place:
only the rows of the experiences changed since that version are replaced in each
experience-keyed table (raw, staging, intermediate); the marts, small, are rewritten. Then it
becomes `spp.duckdb`, and the version it replaces becomes the standby (a hard link, then
renames). A reader that still holds the standby file (it opened that version and never closed)
keeps DuckDB's read lock on it: the write lock then fails at once, and the publication patches a
copy of the current file instead, or copies everything as before. After copying everything (the
first publication, a full model rebuild), the standby starts as a file copy of the new version.
How a version is known: the working database keeps the `_row_hash` of every experience each file
holds (ops.served_rows, ops.served_rows_standby) and a token naming each (ops.serving_state);
each serving file carries its token and the model generation in `ops.published`. Any mismatch
(a run killed between steps, a full model rebuild, a missing file) means the slower way.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from pathlib import Path

import duckdb

from pipelines.database import connect, keep_order, table_exists
from pipelines.errors import DatabaseError, UsageError

SERVED_SCHEMAS = ("raw", "staging", "intermediate", "marts")
RAW_TABLES = ("experiences", "experiences__responses")
HIDDEN_COLUMNS = ("_row_hash", "_deleted")
KEY = "id_experience"
# Smaller row groups than DuckDB's 122,880 rows: writing the serving copy compresses one row group
# of the long text columns at a time, outside the memory limit (measured: ~100 MB less at 1M).
# Not stored in the file: every attachment for writing must give it, or DuckDB's checkpoint
# rewrites the tables to its default size (a patch then took ~10 s at 1M instead of ~0.3 s).
SERVING_ROW_GROUP_SIZE = 30720
_SERVING_OPTIONS = f"(ROW_GROUP_SIZE {SERVING_ROW_GROUP_SIZE})"
STANDBY = ".spp.standby.duckdb"  # the previous version, patched into the next one


def _lit(path: Path) -> str:
    """A file path as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def serving_dir(db: Path) -> Path:
    """`serving/` beside the database; `serving-<name>/` for a database not named spp.duckdb, so
    that two databases in one folder never share a serving copy."""
    return db.parent / ("serving" if db.stem == "spp" else f"serving-{db.stem}")


def _relations(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema IN ('staging', 'intermediate', 'marts') "
        "AND table_name NOT LIKE 'src\\_%' ESCAPE '\\' ORDER BY 1, 2").fetchall()
    return [("raw", t) for t in RAW_TABLES] + rows


def marts(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = 'marts' ORDER BY 1").fetchall()]


def _columns(con, schema: str, table: str, catalog: str | None = None) -> list[tuple[str, str]]:
    """(name, type) of a table's served columns, in the working database unless `catalog` is given."""
    return [(c, t) for c, t in con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = coalesce(?, current_database()) "
        "AND table_schema = ? AND table_name = ? ORDER BY ordinal_position", [catalog, schema, table]).fetchall()
        if c not in HIDDEN_COLUMNS]


def _select(con, schema: str, table: str) -> str:
    cols = [c for c, _ in _columns(con, schema, table)]
    return f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{schema}"."{table}"'


def publish(db, full: bool = False) -> Path | str:
    """Write the serving copy and the Parquet marts; return the serving folder.

    Patches the standby or a copy of the current file when it can (module docstring), unless `full`.
    A lake needs no copy: its readers attach the lake itself, pinned to the snapshot published here."""
    if not isinstance(db, Path):
        return db.publish()
    out = serving_dir(db)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(".spp.duckdb.*.tmp"), *out.glob(".spp.*.lnk")]:  # left by a killed run
        stale.unlink(missing_ok=True)  # (the sync lock keeps out any other publication)
    token = uuid.uuid4().hex[:10]
    current, standby = out / "spp.duckdb", out / STANDBY
    tmp_db = out / f".spp.duckdb.{token}.tmp"
    standby_tmp = out / f".spp.duckdb.{token}.standby.tmp"
    parquet_dir = out / f".parquet-{token}"
    parquet_dir.mkdir()
    con = connect(db)
    mode = "full"
    try:
        generation = _generation(con)
        state = _serving_state(con) if not full and generation is not None else None
        if state and state[1] and standby.exists() and _attach_if_free(con, standby):
            if _published(con) == (state[1], generation) and _same_tables(con):
                mode = "standby"
            else:
                con.execute("DETACH serving")
        if mode == "full" and state and current.exists():
            shutil.copyfile(current, tmp_db)  # only read: a reader may hold it
            con.execute(f"ATTACH {_lit(tmp_db)} AS serving {_SERVING_OPTIONS}")
            if _published(con) == (state[0], generation) and _same_tables(con):
                mode = "copy"
            else:
                con.execute("DETACH serving")
                tmp_db.unlink()
        marker = [dt.datetime.now(dt.timezone.utc), token, generation]
        if mode == "full":
            con.execute(f"ATTACH {_lit(tmp_db)} AS serving {_SERVING_OPTIONS}")
            _copy_all(con, marker)
        else:
            _patch(con, "ops.served_rows_standby" if mode == "standby" else "ops.served_rows", marker)
        con.execute("DETACH serving")  # checkpoints: the file is whole, with no WAL beside it
        keep_order(con)
        for mart in marts(con):
            con.execute(f"COPY ({_select(con, 'marts', mart)}) TO {_lit(parquet_dir / (mart + '.parquet'))} (FORMAT parquet)")
        if mode == "full":
            # The version replaced predates a full rebuild: useless as a standby. A file copy of the
            # new one (a few seconds at 1M rows, against the minutes of the full run) lets the next
            # sync patch the standby instead of copying the current file first.
            shutil.copyfile(tmp_db, standby_tmp)
        # What each file will hold, for the next publication. Recorded before the swap: killed in
        # between, the tokens do not match the files and the next run takes the slower way.
        previous = token if mode == "full" else (state[0] if state and current.exists() else None)
        _record_served(con, token, mode, previous)
    except BaseException:
        tmp_db.unlink(missing_ok=True)
        standby_tmp.unlink(missing_ok=True)
        shutil.rmtree(parquet_dir, ignore_errors=True)
        raise
    finally:
        con.close()
    # The new version becomes spp.duckdb (one rename, atomic for readers); the one it replaces
    # becomes the standby, through a hard link made first so that it is never without a name.
    link = out / f".spp.{token}.lnk"
    if mode != "full" and current.exists():
        os.link(current, link)
    os.replace(standby if mode == "standby" else tmp_db, current)
    if mode == "full":
        os.replace(standby_tmp, standby)
    elif link.exists():
        os.replace(link, standby)
    _swap_symlink(out / "parquet", parquet_dir.name)
    _prune(out, keep={parquet_dir.name})
    con = connect(db)
    try:
        if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() AND table_schema = 'ops' AND table_name = 'model_builds'").fetchone()[0]:
            con.execute("UPDATE ops.model_builds SET published = true WHERE built_at = (SELECT max(built_at) FROM ops.model_builds)")
    finally:
        con.close()
    return out


def _attach_if_free(con, path: Path) -> bool:
    """Attach a serving file for writing, unless a reader holds it (DuckDB's file lock says so)."""
    try:
        con.execute(f"ATTACH {_lit(path)} AS serving {_SERVING_OPTIONS}")
        return True
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            return False
        raise


def _generation(con) -> str | None:
    if not table_exists(con, "ops", "model_state"):
        return None
    row = con.execute("SELECT generation FROM ops.model_state").fetchone()
    return row[0] if row else None


def _serving_state(con) -> tuple | None:
    """(token of the current file, token of the standby file or None), None before any publication."""
    if not table_exists(con, "ops", "serving_state") or not table_exists(con, "ops", "served_rows"):
        return None
    cols = {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_schema = 'ops' AND table_name = 'serving_state'").fetchall()}
    if "standby_token" not in cols:
        return None
    return con.execute("SELECT token, standby_token FROM ops.serving_state").fetchone()


def _published(con) -> tuple | None:
    """(token, generation) of the attached serving file, None for a file from before patching."""
    if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'serving' "
                       "AND table_schema = 'ops' AND table_name = 'published'").fetchone()[0]:
        return None
    return con.execute("SELECT token, generation FROM serving.ops.published").fetchone()


def _same_tables(con) -> bool:
    """The attached serving file has the same tables with the same columns (a raw column may appear)."""
    served = {(s, t) for s, t in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = 'serving' "
        "AND table_schema IN ('raw', 'staging', 'intermediate', 'marts')").fetchall()}
    relations = _relations(con)
    return served == set(relations) and all(
        _columns(con, s, t) == _columns(con, s, t, "serving") for s, t in relations if s != "marts")


def _copy_all(con, marker: list) -> None:
    for schema in SERVED_SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS serving.{schema}")
    for schema, table in _relations(con):
        keep_order(con, schema == "marts")
        con.execute(f'CREATE TABLE serving."{schema}"."{table}" AS {_select(con, schema, table)}')
    _mark(con, marker)


def _mark(con, marker: list) -> None:
    """Which version the file holds (`ops.published`): written with the data it describes."""
    con.execute("CREATE SCHEMA IF NOT EXISTS serving.ops")
    con.execute("CREATE OR REPLACE TABLE serving.ops.published AS SELECT ?::TIMESTAMPTZ AS published_at, "
                "?::VARCHAR AS token, ?::VARCHAR AS generation", marker)


def _patch(con, served_rows: str, marker: list) -> None:
    """Bring the attached serving file up to date, in one transaction; `served_rows` is what it holds."""
    con.execute("BEGIN TRANSACTION")
    # Experiences added, changed or removed since that version, by row hash.
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _served_changed AS
        SELECT coalesce(r.{KEY}, s.{KEY}) AS {KEY}
        FROM (SELECT {KEY}, _row_hash FROM raw.experiences) AS r
        FULL JOIN {served_rows} AS s USING ({KEY})
        WHERE r._row_hash IS DISTINCT FROM s._row_hash""")
    changed = f"(SELECT {KEY} FROM _served_changed)"
    for schema, table in _relations(con):
        keep_order(con, schema == "marts")
        if schema == "marts":
            con.execute(f'CREATE OR REPLACE TABLE serving.marts."{table}" AS {_select(con, schema, table)}')
        else:  # raw, staging and intermediate tables hold rows of one experience each
            con.execute(f'DELETE FROM serving."{schema}"."{table}" WHERE {KEY} IN {changed}')
            con.execute(f'INSERT INTO serving."{schema}"."{table}" {_select(con, schema, table)} WHERE {KEY} IN {changed}')
    _mark(con, marker)
    con.execute("COMMIT")


def _record_served(con, token: str, mode: str, standby_token: str | None) -> None:
    """The new file holds the raw rows as they are now. The standby is either the file it replaces
    (which held ops.served_rows) or, after a full copy, a copy of the new one (`standby_token` = `token`)."""
    con.execute("BEGIN TRANSACTION")
    con.execute("CREATE SCHEMA IF NOT EXISTS ops")
    con.execute("DROP TABLE IF EXISTS ops.served_rows_standby")
    if standby_token is not None and standby_token != token:
        con.execute("ALTER TABLE ops.served_rows RENAME TO served_rows_standby")
    con.execute(f"CREATE OR REPLACE TABLE ops.served_rows AS SELECT {KEY}, _row_hash FROM raw.experiences")
    if standby_token == token:
        con.execute("CREATE TABLE ops.served_rows_standby AS FROM ops.served_rows")
    con.execute("CREATE OR REPLACE TABLE ops.serving_state AS SELECT ?::VARCHAR AS token, ?::VARCHAR AS standby_token, "
                "? AS mode", [token, standby_token, mode])
    con.execute("COMMIT")


def _swap_symlink(link: Path, target: str) -> None:
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)  # a plain folder from an older layout
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:6]}.lnk")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _prune(out: Path, keep: set[str]) -> None:
    """Drop Parquet versions older than the previous one (a reader may still be on the previous)."""
    versions = sorted((p for p in out.glob(".parquet-*") if p.name not in keep), key=lambda p: p.stat().st_mtime)
    for old in versions[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def export(db, out_dir: Path, fmt: str) -> list[Path]:
    """One file per mart in out_dir, as Parquet or CSV, from a read-only connection."""
    if fmt not in ("parquet", "csv"):
        raise UsageError(f"unknown export format {fmt!r}: use parquet or csv")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    con = connect(db, read_only=True)
    written = []
    try:
        names = marts(con)
        if not names:
            raise DatabaseError(f"{db} has no marts yet: run `spp sync` (or `spp models`) first")
        for mart in names:
            target = out_dir / f"{mart}.{fmt}"
            tmp = out_dir / f".{mart}.{fmt}.tmp"
            options = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER true"
            try:
                con.execute(f"COPY ({_select(con, 'marts', mart)}) TO {_lit(tmp)} ({options})")
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, target)
            written.append(target)
    finally:
        con.close()
    return written
