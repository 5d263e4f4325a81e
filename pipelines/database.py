"""Opening the DuckDB file: one place for the settings every connection of a sync shares."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

# DuckDB caches up to 80% of RAM by default; a bounded cache keeps a sync's memory flat as the
# data grows (it spills to disk instead). SPP_DUCKDB_MEMORY_LIMIT overrides it, e.g. "2GB".
# DuckDB's process memory runs well above this limit (write buffers, per-thread memory the limit
# does not count): 160MB keeps a 1M-row sync near 520 MB in all (README, Performance).
MEMORY_LIMIT = os.environ.get("SPP_DUCKDB_MEMORY_LIMIT", "160MB")
# Row order only matters in the marts (their ORDER BY) and what is copied from them: everywhere
# else, letting DuckDB insert in any order saves memory and time (measured: README, Performance).
CONFIG = {"memory_limit": MEMORY_LIMIT, "preserve_insertion_order": False}


def keep_order(con: duckdb.DuckDBPyConnection, on: bool = True) -> None:
    """Make inserts keep the order of their query (a mart's ORDER BY), or let them go in any order."""
    con.execute(f"SET preserve_insertion_order = {'true' if on else 'false'}")


def release_memory() -> None:
    """Hand memory freed by the previous phase back to the system before the next one: Arrow's
    pool and glibc's malloc (DuckDB's allocator here) both keep freed pages for reuse otherwise."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def connect(db, read_only: bool = False, published: bool | None = None) -> duckdb.DuckDBPyConnection:
    """`db` is a DuckDB file, or a lake (pipelines.lake) whose read-only connections see, by
    default, the snapshot of the last finished sync (`published`). Read-only connections (query,
    report, export) keep row order: a mart read without ORDER BY comes out in its own order."""
    if not isinstance(db, Path):
        con = db.connect(read_only=read_only, published=read_only if published is None else published)
    else:
        try:
            con = duckdb.connect(str(db), read_only=read_only, config=dict(CONFIG))
        except duckdb.Error as e:
            raise open_error(db, e, read_only) from None
    if read_only:
        keep_order(con)
    return con


def open_error(db: Path, e: Exception, read_only: bool = False):
    from pipelines.errors import DatabaseError

    text = str(e)
    if "lock" in text.lower() and read_only:
        return DatabaseError(f"{db} is being written by another process (a sync?); try again in a moment, "
                             "or read the serving copy")
    if "lock" in text.lower():
        return DatabaseError(f"{db} is open in another program (a BI tool or DuckDB shell?); close it, or point "
                             "the tool at the serving copy, then run again")
    return DatabaseError(f"cannot open {db}: {text.splitlines()[0]}")


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    # current_database(): a lake's connection also sees DuckDB's own in-memory catalog.
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = ? AND table_name = ?", [schema, table]
    ).fetchone()[0])


def lock_path(db) -> Path:
    return db.with_name(db.name + ".lock") if isinstance(db, Path) else db.lock_path
