"""Shared fixtures: a real replica process on a free loopback port, the real CLI, real DuckDB files."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import tempfile
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipelines.fields import FIELDS, SLOT_COUNT, SLOT_FIELDS
from pipelines.replica.generator import Generator, read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def spp(*args: str, env: dict | None = None, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real command line in a child process."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"spp {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


class Replica:
    """`spp replica` in its own process, serving a data file the test may rewrite."""

    def __init__(self, data: Path, faults: Path | None = None):
        self.data = Path(data)
        args = [sys.executable, "-m", "pipelines.cli", "replica", "--port", "0", "--data", str(self.data)]
        if faults:
            args += ["--faults", str(faults)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if " at http://" not in line:
            self.proc.kill()
            raise RuntimeError(f"replica did not start: {line}{self.proc.stderr.read()}")
        self.url = line.strip().rsplit(" at ", 1)[1]

    def rows(self) -> list[dict]:
        return read_jsonl(self.data)

    def write(self, rows: list[dict]) -> None:
        # A new mtime is what makes the replica reload; make sure it moves.
        before = self.data.stat().st_mtime_ns if self.data.exists() else 0
        write_jsonl(rows, self.data)
        if self.data.stat().st_mtime_ns == before:
            os.utime(self.data, ns=(before + 1_000_000, before + 1_000_000))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def make_replica():
    started = []

    def start(data: Path, faults: Path | None = None) -> Replica:
        r = Replica(data, faults)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def generated(n: int, seed: int = 7, **kw) -> list[dict]:
    return list(Generator(seed).experiences(n, **kw))


@pytest.fixture
def small_data(tmp_path) -> Path:
    """600 experiences from 2024-01-01 to 2024-12-31, with a few undated ones."""
    rows = generated(600, start=dt.date(2024, 1, 1), end=dt.date(2024, 12, 31))
    for r in rows[::150]:
        r["ecrit_le"] = None
    path = tmp_path / "experiences.jsonl"
    write_jsonl(rows, path)
    return path


# -- PostgreSQL for the DuckLake tests: a throwaway cluster on loopback, or SPP_TEST_POSTGRES_URL

def _postgres_bin() -> Path | None:
    for pattern in ("/usr/lib/postgresql/*/bin/initdb", "/usr/local/pgsql/bin/initdb"):
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[-1].parent
    return None


@pytest.fixture(scope="session")
def postgres_server():
    """Base URL of a PostgreSQL server (postgres://user@host:port). CI sets SPP_REQUIRE_POSTGRES=1
    so a missing server fails the run instead of skipping the DuckLake tests."""
    if url := os.environ.get("SPP_TEST_POSTGRES_URL"):
        yield url.rstrip("/")
        return
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("SPP_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (SPP_REQUIRE_POSTGRES=1) but no initdb was found")
        pytest.skip("no PostgreSQL server binaries for the DuckLake tests: apt-get install postgresql "
                    "(CI installs it and sets SPP_REQUIRE_POSTGRES=1, which makes this a failure)")
    # PostgreSQL refuses to run as root: run it as the postgres user the Debian package creates,
    # in a folder of its own (pytest's temporary folders are private to root).
    root = Path(tempfile.mkdtemp(prefix="spp-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data = root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgres://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


class LakeRef:
    """A DuckLake for one test: its own PostgreSQL database and data folder. Opened here with plain
    DuckDB SQL (LOAD, ATTACH), independently of pipelines.lake, to check what the code wrote."""

    def __init__(self, server: str, name: str, data_path: Path, s3_endpoint: str | None = None):
        self.catalog = f"{server}/{name}"
        self.data_path = data_path  # local: the data folder; with S3, the folder for local state
        self.s3_endpoint = s3_endpoint
        self.url = f"s3://lake/{name}" if s3_endpoint else str(data_path)
        self.env = {"DESTINATION__DUCKLAKE__CREDENTIALS__CATALOG": self.catalog,
                    "DESTINATION__DUCKLAKE__CREDENTIALS__STORAGE__BUCKET_URL": self.url}
        if s3_endpoint:
            prefix = "DESTINATION__DUCKLAKE__CREDENTIALS__STORAGE__CREDENTIALS__"
            self.env.update({prefix + "AWS_ACCESS_KEY_ID": "test", prefix + "AWS_SECRET_ACCESS_KEY": "test",
                             prefix + "ENDPOINT_URL": s3_endpoint, prefix + "REGION_NAME": "us-east-1"})

    def connect(self, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
        from pipelines.lake import extension_files

        con = duckdb.connect(config={"autoinstall_known_extensions": False})
        for path in extension_files(("postgres_scanner", "ducklake", "httpfs")):
            con.execute(f"LOAD '{path}'")
        if self.s3_endpoint:
            con.execute(f"CREATE SECRET (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', "
                        f"ENDPOINT '{self.s3_endpoint.split('//')[1]}', URL_STYLE 'path', USE_SSL false)")
        pin = f", SNAPSHOT_VERSION {snapshot}" if snapshot is not None else ""
        con.execute(f"ATTACH 'ducklake:postgres:{self.catalog}' AS lake (DATA_PATH '{self.url}', "
                    f"METADATA_SCHEMA 'spp', READ_ONLY{pin})")
        con.execute("USE lake")
        return con


@pytest.fixture
def make_lake(postgres_server, tmp_path):
    created = []

    def make(name: str = "lake", s3_endpoint: str | None = None) -> LakeRef:
        db = f"spp_test_{os.getpid()}_{len(created)}_{int(time.time() * 1000) % 10**8}"
        _psql(postgres_server, f"CREATE DATABASE {db}")
        created.append(db)
        return LakeRef(postgres_server, db, tmp_path / f"{name}-files", s3_endpoint)

    yield make
    for db in created:
        _psql(postgres_server, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@pytest.fixture
def s3_server():
    """moto's S3 server on loopback with an empty bucket `lake`: object storage for the lake test
    (the one stand-in in these tests, as no real object store runs here). Yields its endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")

    def up():
        try:
            client.create_bucket(Bucket="lake")
            return True
        except Exception:
            return False

    try:
        assert wait_for(up, timeout=30), "moto's S3 server did not start"
        yield endpoint, client
    finally:
        proc.terminate()
        proc.wait(10)


def _psql(server: str, sql: str) -> None:
    subprocess.run(["psql", f"{server}/postgres", "-qc", sql], check=True, capture_output=True)


def open_db(db) -> duckdb.DuckDBPyConnection:
    return db.connect() if isinstance(db, LakeRef) else duckdb.connect(str(db), read_only=True)


# -- expected tables, computed from the served rows without the code under test

PARENT_FIELDS = [n for n, _, _ in FIELDS if not any(n == f"{p}_{k}" for _, p, _ in SLOT_FIELDS for k in range(1, SLOT_COUNT + 1))]
DATE_FIELDS = {n for n, _, t in FIELDS if t == "date"}


def _value(name: str, v):
    if v is None:
        return None
    if name in DATE_FIELDS:
        return dt.date.fromisoformat(v)
    return v


def expected_parent(rows: list[dict]) -> dict[int, tuple]:
    return {r["id_experience"]: tuple(_value(f, r.get(f)) for f in PARENT_FIELDS) for r in rows}


def expected_responses(rows: list[dict]) -> dict[tuple[int, int], tuple]:
    out = {}
    for r in rows:
        for k in range(1, SLOT_COUNT + 1):
            vals = tuple(r.get(f"{prefix}_{k}") for _, prefix, _ in SLOT_FIELDS)
            if any(v is not None and v != "" for v in vals):
                vals = vals[:-1] + (None if vals[-1] is None else float(vals[-1]),)
                out[(r["id_experience"], k)] = vals
    return out


def db_parent(db: Path) -> dict[int, tuple]:
    con = open_db(db)
    try:
        cols = ", ".join(f'"{f}"' for f in PARENT_FIELDS)
        return {row[0]: tuple(row) for row in con.execute(f"SELECT {cols} FROM raw.experiences").fetchall()}
    finally:
        con.close()


def db_responses(db: Path) -> dict[tuple[int, int], tuple]:
    con = open_db(db)
    try:
        cols = ", ".join(c for c, _, _ in SLOT_FIELDS)
        rows = con.execute(f"SELECT id_experience, slot, {cols} FROM raw.experiences__responses").fetchall()
        return {(r[0], r[1]): tuple(r[2:]) for r in rows}
    finally:
        con.close()


def query(db: Path, sql: str) -> list[tuple]:
    con = open_db(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def table_dump(db: Path) -> dict[str, list[tuple]]:
    """Every user table's full content, sorted: what 'the same database state' means in tests."""
    con = open_db(db)
    try:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema IN ('raw', 'marts') AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\' ORDER BY 1, 2").fetchall()
        return {f"{s}.{t}": sorted(con.execute(f'SELECT * FROM "{s}"."{t}"').fetchall(), key=repr) for s, t in tables}
    finally:
        con.close()


def assert_matches_replica(db: Path, rows: list[dict]) -> None:
    """raw.experiences and raw.experiences__responses equal, row for row, what the replica served."""
    got_parent, want_parent = db_parent(db), expected_parent(rows)
    assert set(got_parent) == set(want_parent), (
        f"ids differ: {len(set(got_parent) - set(want_parent))} extra, {len(set(want_parent) - set(got_parent))} missing")
    for i, want in want_parent.items():
        assert got_parent[i] == want, f"experience {i} differs:\n db:      {got_parent[i]}\n replica: {want}"
    got_children, want_children = db_responses(db), expected_responses(rows)
    assert set(got_children) == set(want_children), (
        f"response keys differ: extra {sorted(set(got_children) - set(want_children))[:5]}, "
        f"missing {sorted(set(want_children) - set(got_children))[:5]}")
    for key, want in want_children.items():
        assert got_children[key] == want, f"response {key} differs:\n db:      {got_children[key]}\n replica: {want}"


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def read_json(text: str):
    return json.loads(text)
