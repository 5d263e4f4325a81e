"""spp: Services Publics Plus experiences from the Explore API v2.1 into DuckDB.

The data's path through the package: fetch.py (HTTP) → reshape.py (Arrow) → load.py (dlt into
DuckDB) → models.py (SQL in sql/) → cli.py (the `spp` command). sync.py drives one sync.
"""

__version__ = "0.1.0"
