"""Serve: read-only copies for BI tools, so that a reader never blocks the sync.

DuckDB allows one writer or many readers, never both. BI tools therefore never open the working
database: after each successful sync and model build, `publish()` writes

  serving/spp.duckdb          raw tables, staging views as tables, marts
  serving/parquet/<mart>.parquet

beside the database. Each is built under a temporary name and swapped in with one rename: the
DuckDB file by os.replace (a reader holding the old file keeps reading the old version), the
Parquet folder through a symlink that is replaced atomically. Readers see the previous or the new
version, never a mix, and never hold a lock the sync needs.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import duckdb

from pipelines.database import connect
from pipelines.errors import DatabaseError, UsageError

SERVED_SCHEMAS = ("raw", "staging", "intermediate", "marts")
RAW_TABLES = ("experiences", "experiences__responses")
HIDDEN_COLUMNS = ("_row_hash", "_deleted")


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
        "WHERE table_catalog = current_database() AND table_schema IN ('staging', 'intermediate', 'marts') AND table_name NOT LIKE 'src\\_%' ESCAPE '\\' "
        "ORDER BY 1, 2").fetchall()
    return [("raw", t) for t in RAW_TABLES] + rows


def marts(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() AND table_schema = 'marts' ORDER BY 1").fetchall()]


def _select(con, schema: str, table: str) -> str:
    cols = [c for (c,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position", [schema, table]).fetchall() if c not in HIDDEN_COLUMNS]
    return f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{schema}"."{table}"'


def publish(db) -> Path | str:
    """Write the serving copy and the Parquet marts; return the serving folder. A lake needs no
    copy: its readers attach the lake itself, pinned to the snapshot published here."""
    if not isinstance(db, Path):
        return db.publish()
    out = serving_dir(db)
    out.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:10]
    tmp_db = out / f".spp.duckdb.{token}.tmp"
    parquet_dir = out / f".parquet-{token}"
    parquet_dir.mkdir()
    con = connect(db)
    try:
        con.execute(f"ATTACH {_lit(tmp_db)} AS serving")
        for schema in SERVED_SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS serving.{schema}")
        for schema, table in _relations(con):
            con.execute(f'CREATE TABLE serving."{schema}"."{table}" AS {_select(con, schema, table)}')
        con.execute("DETACH serving")
        for mart in marts(con):
            con.execute(f"COPY ({_select(con, 'marts', mart)}) TO {_lit(parquet_dir / (mart + '.parquet'))} (FORMAT parquet)")
    except BaseException:
        tmp_db.unlink(missing_ok=True)
        shutil.rmtree(parquet_dir, ignore_errors=True)
        raise
    finally:
        con.close()
    os.replace(tmp_db, out / "spp.duckdb")
    _swap_symlink(out / "parquet", parquet_dir.name)
    _prune(out, keep={parquet_dir.name})
    con = connect(db)
    try:
        if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() AND table_schema = 'ops' AND table_name = 'model_builds'").fetchone()[0]:
            con.execute("UPDATE ops.model_builds SET published = true WHERE built_at = (SELECT max(built_at) FROM ops.model_builds)")
    finally:
        con.close()
    return out


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
