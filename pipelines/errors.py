"""Errors the command line turns into one clear line and a documented exit code."""

from __future__ import annotations

# Exit codes (documented in README "Exit codes").
OK = 0
FAILED = 1          # unexpected error (a bug): run again with --debug and report it
USAGE = 2           # bad option or argument
PORTAL = 3          # the portal could not be reached or refused the request
DATA = 4            # the portal's data could not be loaded as it is
DATABASE = 5        # the database file cannot be used
MODELS = 6          # a SQL model or data test failed; marts were left as they were
QUERY = 7           # `spp query`: the SQL is wrong
LOCKED = 75         # another sync holds the database (EX_TEMPFAIL): try again later


class SppError(Exception):
    """An error with a message fit for the user and an exit code."""

    exit_code = FAILED

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(SppError):
    exit_code = USAGE


class PortalError(SppError):
    exit_code = PORTAL


class DataError(SppError):
    exit_code = DATA


class DatabaseError(SppError):
    exit_code = DATABASE


class ModelError(SppError):
    exit_code = MODELS


class QueryError(SppError):
    exit_code = QUERY


class LockedError(SppError):
    exit_code = LOCKED


def chain(e: BaseException | None):
    """`e`, then its causes and contexts, each once (a chain can loop back on itself)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def memory_advice() -> str:
    from pipelines.database import MEMORY_LIMIT

    return f"raise SPP_DUCKDB_MEMORY_LIMIT (now {MEMORY_LIMIT}), e.g. SPP_DUCKDB_MEMORY_LIMIT=512MB"


def is_out_of_memory(e: BaseException | str) -> bool:
    """DuckDB's error, or a message that dlt kept of it (a failed load job keeps only the text)."""
    import duckdb

    return isinstance(e, duckdb.OutOfMemoryException) or "Out of Memory Error" in str(e).split("\n", 1)[0]


def out_of_memory(e: BaseException) -> DatabaseError | None:
    """DuckDB's Out of Memory error anywhere in the chain (dlt wraps it), as one line with the fix."""
    for inner in chain(e):
        if is_out_of_memory(inner):
            return memory_error(str(inner))
    return None


def memory_error(duckdb_message: str) -> DatabaseError:
    return DatabaseError(f"DuckDB ran out of memory ({duckdb_message.splitlines()[0]}); {memory_advice()} and run again")
