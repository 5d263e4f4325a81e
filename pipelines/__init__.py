"""spp: Services Publics Plus experiences from the Explore API v2.1 into DuckDB.

The data's path through the package: fetch.py (HTTP) → reshape.py (Arrow) → load.py (dlt into
DuckDB) → models.py (SQL in sql/) → cli.py (the `spp` command). sync.py drives one sync.
"""

__version__ = "0.1.0"

import os as _os

# dlt settings this tool relies on, set before dlt is first imported (it reads some at import).
# The environment or .dlt/config.toml can still override each of them.
DLT_DEFAULTS = {
    "LOAD__TRUNCATE_STAGING_DATASET": "true",  # no second copy of each load left in raw_staging
    "RUNTIME__DLTHUB_TELEMETRY": "false",      # no network calls besides the portal
    # dlt's schema chatter and retry tracebacks are not for cron logs: every failure reaches the
    # user as spp's one line (`spp --debug` shows dlt's warnings and errors).
    "RUNTIME__LOG_LEVEL": "CRITICAL",
}
for _key, _value in DLT_DEFAULTS.items():
    _os.environ.setdefault(_key, _value)
