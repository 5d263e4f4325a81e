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
