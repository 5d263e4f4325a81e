"""Destinations beyond one DuckDB file: a DuckLake, or MotherDuck.

A DuckDB file allows one writer or many readers, on one machine. A DuckLake keeps its catalog in
PostgreSQL and its data as Parquet files in a folder or on S3-style storage, and is read and
written by many DuckDB clients on many machines at once, each in snapshot isolation.

The load goes through dlt's own `ducklake` / `motherduck` destinations; everything else (cursor,
change detection, models, queries, report, exports) opens a DuckDB connection with the lake
attached and selected (`USE`), so the same SQL reads `raw.experiences` whatever the destination.

Settings are dlt's usual ones (environment or .dlt/secrets.toml), read once here and handed to
dlt unchanged, so the loader and the readers always open the same lake:

  DESTINATION__DUCKLAKE__CREDENTIALS__CATALOG             postgres://user:password@host:5432/dbname
  DESTINATION__DUCKLAKE__CREDENTIALS__STORAGE__BUCKET_URL /shared/spp-lake  or  s3://bucket/prefix
  DESTINATION__DUCKLAKE__CREDENTIALS__DUCKLAKE_NAME       spp (the attach name and catalog schema)
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipelines.errors import DatabaseError, UsageError

DESTINATIONS = ("duckdb", "ducklake", "motherduck")
DEFAULT_LAKE_NAME = "spp"
# The PyPI packages that carry DuckDB's extensions as files, for machines that cannot download
# them. `duckdb-extension-postgres` holds the same binary named postgres.duckdb_extension, which
# DuckDB cannot LOAD by path (it derives the entry point from the file name); this one is named right.
# httpfs: S3-style storage.
EXTENSION_PACKAGES = {"postgres_scanner": "duckdb-extension-postgres-scanner", "ducklake": "duckdb-extension-ducklake",
                      "httpfs": "duckdb-extension-httpfs"}


def extension_files(names=("postgres_scanner", "ducklake")) -> list[str]:
    """Paths of the extension files matching this DuckDB, from their PyPI packages."""
    out = []
    for name in names:
        package = EXTENSION_PACKAGES[name]
        spec = importlib.util.find_spec(f"duckdb_extension_{name}")
        if spec is None or spec.origin is None:
            raise DatabaseError(f"the DuckLake destination needs the {package}=={duckdb.__version__} package; "
                                f"install it (pip install {package}=={duckdb.__version__})")
        found = glob.glob(os.path.join(os.path.dirname(spec.origin), "extensions", f"v{duckdb.__version__}",
                                       f"{name}.duckdb_extension"))
        if not found:
            raise DatabaseError(f"{package} does not match DuckDB {duckdb.__version__}; "
                                f"install {package}=={duckdb.__version__}")
        out.append(found[0])
    return out


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class LocalState:
    """What a remote destination keeps on this machine, in `state_dir`: dlt's working folder
    (pending load packages survive a crash there) and the sync lock."""

    state_dir: Path
    name: str
    state_suffix: str  # "lake" → data/spp.lake.lock, data/.spp.lake.dlt

    def exists(self) -> bool:
        return True  # created on first use; an empty one simply has no tables

    @property
    def lock_path(self) -> Path:
        return self.state_dir / f"{self.name}.{self.state_suffix}.lock"

    @property
    def pipelines_dir(self) -> Path:
        return self.state_dir / f".{self.name}.{self.state_suffix}.dlt"


@dataclass
class Lake(LocalState):
    """A DuckLake: the catalog in PostgreSQL (or another DuckLake catalog), the data in `storage_url`.

    `state_dir` is local: dlt's working folder (pending load packages survive a crash there) and
    the sync lock live in it.
    """

    credentials: object  # dlt's DuckLakeCredentials, resolved
    state_dir: Path
    kind = "ducklake"
    state_suffix = "lake"

    @classmethod
    def from_config(cls, state_dir: Path) -> "Lake":
        import dlt
        from dlt.common.configuration.exceptions import ConfigurationException

        os.environ.setdefault("DESTINATION__DUCKLAKE__CREDENTIALS__DUCKLAKE_NAME", DEFAULT_LAKE_NAME)
        if not (os.environ.get("DESTINATION__DUCKLAKE__CREDENTIALS__CATALOG")
                or dlt.secrets.get("destination.ducklake.credentials.catalog")):
            raise UsageError("--destination ducklake needs a catalog: set DESTINATION__DUCKLAKE__CREDENTIALS__CATALOG "
                             "(e.g. postgres://user:password@host:5432/dbname) or [destination.ducklake.credentials] "
                             "catalog in .dlt/secrets.toml")
        dest = dlt.destinations.ducklake()
        try:
            config = dest.configuration(dest.spec()._bind_dataset_name("raw"))
        except ConfigurationException as e:
            raise UsageError(f"the DuckLake settings are incomplete: {str(e).splitlines()[0]}") from None
        creds = config.credentials
        if creds.catalog.drivername not in ("postgres", "postgresql"):
            # A file catalog (sqlite/duckdb) works for one machine only, which is what a DuckDB file is for.
            raise UsageError(f"the DuckLake catalog must be PostgreSQL (postgres://…), not {creds.catalog.drivername}")
        remote = not creds.storage.is_local_filesystem
        creds.extensions = [_lit(p) for p in extension_files(("postgres_scanner", "ducklake") + (("httpfs",) if remote else ()))]
        from pipelines.database import CONFIG

        creds.global_config = {**dict(CONFIG), "autoinstall_known_extensions": False}
        return cls(creds, Path(state_dir))

    # -- what the rest of the code asks of a destination

    @property
    def name(self) -> str:
        return self.credentials.ducklake_name

    def __str__(self) -> str:
        c = self.credentials.catalog
        return f"ducklake {self.name} (catalog postgres://{c.host}:{c.port or 5432}/{c.database}, data {self.credentials.storage_url})"

    def destination(self):
        import dlt

        return dlt.destinations.ducklake(credentials=self.credentials)

    def connect(self, read_only: bool = False, published: bool | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the lake attached and selected.

        `published` (default: when read-only): pinned to the snapshot of the last finished sync
        (see `publish`), so a reader never sees a sync half-way: windows loaded, models not rebuilt.
        """
        published = read_only if published is None else published
        from dlt.destinations.impl.ducklake.sql_client import DuckLakeSqlClient

        con = duckdb.connect(config=dict(self.credentials.global_config))
        try:
            for ext in self.credentials.extensions:
                con.execute(f"LOAD {ext}")
            attach = DuckLakeSqlClient.build_attach_statement(
                ducklake_name=self.name, metadata_schema=self.credentials.metadata_schema,
                catalog=self.credentials.catalog, storage_url=self.credentials.storage_url)
            if not self.credentials.storage.is_local_filesystem:
                self._create_secret(con)
            options = ", READ_ONLY" if read_only else ""
            con.execute(attach[:-1] + options + ")")
            con.execute(f'USE "{self.name}"')
            if published and (snapshot := self._published_snapshot(con)) is not None:
                con.execute(f'USE memory; DETACH "{self.name}"')
                con.execute(attach[:-1] + f", SNAPSHOT_VERSION {int(snapshot)})")
                con.execute(f'USE "{self.name}"')
        except Exception as e:  # duckdb's, or dlt's wrapping of them while creating the storage secret
            con.close()
            raise DatabaseError(f"cannot open {self}: {str(e).splitlines()[0]}") from None
        return con

    def _create_secret(self, con) -> None:
        from dlt.destinations.impl.ducklake.sql_client import DuckLakeSqlClient

        client = DuckLakeSqlClient("raw", "raw_staging", self.credentials, None)
        client._conn = con
        client.create_secret(self.credentials.storage.bucket_url, self.credentials.storage.credentials)

    def _published_snapshot(self, con) -> int | None:
        from pipelines.database import table_exists

        if not table_exists(con, "ops", "lake_published"):
            return None
        return con.execute("SELECT max(snapshot_id) FROM ops.lake_published").fetchone()[0]

    def publish(self) -> str:
        """Mark the lake's current snapshot as what readers see (the serving copy of a lake)."""
        con = self.connect()
        try:
            snapshot = con.execute(f"SELECT id FROM ducklake_current_snapshot({_lit(self.name)})").fetchone()[0]
            con.execute("CREATE SCHEMA IF NOT EXISTS ops")
            con.execute("CREATE TABLE IF NOT EXISTS ops.lake_published (snapshot_id BIGINT, published_at TIMESTAMPTZ)")
            con.execute("BEGIN")
            con.execute("INSERT INTO ops.lake_published VALUES (?, now())", [snapshot])
            con.execute("UPDATE ops.model_builds SET published = true WHERE built_at = (SELECT max(built_at) FROM ops.model_builds)")
            con.execute("COMMIT")
        finally:
            con.close()
        return f"readers of {self} see its snapshot {snapshot}"


@dataclass
class MotherDuck(LocalState):
    """A MotherDuck database (managed DuckDB). dlt's `motherduck` destination does the load.

    Settings: DESTINATION__MOTHERDUCK__CREDENTIALS__DATABASE and __PASSWORD (the token), or
    motherduck_token in the environment. Not reachable from this project's test machines: the
    code path is the same as for a lake, but it has not been run against MotherDuck.
    """

    database: str
    token: str | None
    state_dir: Path
    kind = "motherduck"
    state_suffix = "motherduck"

    @classmethod
    def from_config(cls, state_dir: Path) -> "MotherDuck":
        import dlt

        database = (os.environ.get("DESTINATION__MOTHERDUCK__CREDENTIALS__DATABASE")
                    or dlt.config.get("destination.motherduck.credentials.database") or "spp")
        token = (os.environ.get("DESTINATION__MOTHERDUCK__CREDENTIALS__PASSWORD")
                 or dlt.secrets.get("destination.motherduck.credentials.password")
                 or os.environ.get("motherduck_token") or os.environ.get("MOTHERDUCK_TOKEN"))
        if not token:
            raise UsageError("--destination motherduck needs a token: set motherduck_token (or "
                             "DESTINATION__MOTHERDUCK__CREDENTIALS__PASSWORD) in the environment or .dlt/secrets.toml")
        return cls(database, token, Path(state_dir))

    @property
    def name(self) -> str:
        return self.database

    def __str__(self) -> str:
        return f"motherduck md:{self.database}"

    def destination(self):
        import dlt
        from dlt.destinations.impl.motherduck.configuration import MotherDuckCredentials

        return dlt.destinations.motherduck(MotherDuckCredentials({"database": self.database, "password": self.token}))

    def connect(self, read_only: bool = False, published: bool = False) -> duckdb.DuckDBPyConnection:
        from pipelines.database import CONFIG

        try:
            return duckdb.connect(f"md:{self.database}", read_only=read_only,
                                  config={**CONFIG, "motherduck_token": self.token})
        except duckdb.Error as e:
            raise DatabaseError(f"cannot open {self}: {str(e).splitlines()[0]}") from None

    def publish(self) -> str:
        # MotherDuck serves many readers itself; the marts are rebuilt in one transaction.
        con = self.connect()
        try:
            con.execute("UPDATE ops.model_builds SET published = true WHERE built_at = (SELECT max(built_at) FROM ops.model_builds)")
        finally:
            con.close()
        return f"readers of {self} see the new marts"


def target(destination: str, db: Path):
    """What `--destination` names: the DuckDB file `db`, or a lake/MotherDuck keeping its local state beside `db`."""
    if destination == "duckdb":
        return Path(db)
    if destination not in DESTINATIONS:
        raise UsageError(f"unknown destination {destination!r}: use one of {', '.join(DESTINATIONS)}")
    state_dir = Path(db).parent if str(Path(db).parent) else Path(".")
    state_dir.mkdir(parents=True, exist_ok=True)
    return (Lake if destination == "ducklake" else MotherDuck).from_config(state_dir)
