"""Opening the DuckDB file: one place for the settings every connection of a sync shares."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

# DuckDB caches up to 80% of RAM by default; a bounded cache keeps a sync's memory flat as the
# data grows (it spills to disk instead). SPP_DUCKDB_MEMORY_LIMIT overrides it, e.g. "2GB".
MEMORY_LIMIT = os.environ.get("SPP_DUCKDB_MEMORY_LIMIT", "512MB")
CONFIG = {"memory_limit": MEMORY_LIMIT}


def connect(db: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(db), read_only=read_only, config=dict(CONFIG))


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, table]
    ).fetchone()[0])
