"""One sync: plan send-date windows, then fetch → reshape → load each, then build the models.

The cursor is the latest send date in raw.experiences, read from the data itself, so it can
never disagree with what was loaded. A run reads from the cursor minus the lookback (replies and
tags change after publication), or from --since, or everything (first run, --full). Large reads
are cut into windows of about --window-rows experiences, each committed on its own: an
interrupted backfill resumes after the last committed window. Rows with no send date travel
with the last window.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import math
import os
import sys
import time
import uuid
from urllib.parse import urlsplit
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from pipelines.errors import DatabaseError, LockedError, UsageError
from pipelines.fetch import Portal
from pipelines.fields import CURSOR
from pipelines.database import connect, lock_path, release_memory, table_exists
from pipelines.load import DATASET, PARENT, ChangeDetector, Counts, CrossBatchDuplicates, Window, finish_pending, make_pipeline, run_window, window_resource
from pipelines.models import build_models
from pipelines.reshape import normalise, read_batches
from pipelines.serve import publish, serving_dir

log = logging.getLogger("spp.sync")
DEFAULT_BASE_URL = "https://opendata.plus.transformation.gouv.fr"
DEFAULT_DATASET = "export-expa-c-riences"
DEFAULT_DB = "data/spp.duckdb"
DEFAULT_LOOKBACK_DAYS = 30
DEFAULT_WINDOW_ROWS = 250_000
EXPORT_FORMATS = ("jsonl", "parquet")


@dataclass
class SyncOptions:
    db: Path | object  # a DuckDB file, or a lake (pipelines.lake)
    base_url: str = DEFAULT_BASE_URL
    dataset: str = DEFAULT_DATASET
    since: dt.date | None = None
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    full: bool = False
    window_rows: int = DEFAULT_WINDOW_ROWS
    export_format: str = "jsonl"
    timeout: float = 60.0
    max_quota_wait: float = 900.0
    retries: int = 5
    on_bad_rows: str = "fail"  # or "quarantine": set such rows aside in raw.rejected_rows
    build_models: bool = True


@dataclass
class SyncSummary:
    run_id: str
    mode: str
    started_at: dt.datetime
    counts: Counts = field(default_factory=Counts)
    cursor_before: dt.date | None = None
    cursor_after: dt.date | None = None
    windows: int = 0
    resumed_pending_load: bool = False
    load_seconds: float = 0.0
    models_seconds: float = 0.0
    serving_seconds: float = 0.0
    duration_seconds: float = 0.0

    def line(self) -> str:
        c = self.counts
        before = self.cursor_before.isoformat() if self.cursor_before else "none"
        after = self.cursor_after.isoformat() if self.cursor_after else "none"
        dup = f", {c.duplicates} duplicate ids (last kept)" if c.duplicates else ""
        dup += f", {c.rejected} rows set aside in raw.rejected_rows" if c.rejected else ""
        return (f"sync {self.mode} ok: fetched {c.fetched}, new {c.new}, updated {c.updated}, removed {c.removed}, "
                f"unchanged {c.unchanged}{dup} | cursor {before} -> {after} | {self.windows} window(s) | "
                f"{self.duration_seconds:.1f}s")

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("counts"))
        return {k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v) for k, v in d.items()}


@contextlib.contextmanager
def db_lock(db):
    """One sync per database. The OS drops the lock when its holder dies, even by SIGKILL.
    For a lake the lock file is local: run its scheduled sync from one machine."""
    fd = os.open(lock_path(db), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise LockedError(f"another spp sync (pid {holder}) is already running on {db}; "
                              "this run changed nothing, try again when it has finished") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def read_cursor(db) -> dt.date | None:
    """The latest send date loaded, ignoring dates in the future (a typo must not stall the sync)."""
    if not db.exists():
        return None
    con = connect(db)
    try:
        if not table_exists(con, DATASET, PARENT):
            return None
        return con.execute(f"SELECT max({CURSOR}) FROM {DATASET}.{PARENT} WHERE {CURSOR} <= current_date + 1").fetchone()[0]
    finally:
        con.close()


def plan_windows(portal: Portal, lower: dt.date | None, window_rows: int) -> list[Window]:
    n, first, last = portal.bounds(Window(lo=lower).odsql())
    if n <= window_rows or first is None or last is None or first >= last:
        return [Window(lo=lower, nulls=True)]
    k = math.ceil(n / window_rows)
    step = max(1, math.ceil(((last - first).days + 1) / k))
    cuts = []
    cut = first + dt.timedelta(days=step)
    while cut <= last:
        cuts.append(cut)
        cut += dt.timedelta(days=step)
    bounds = [lower, *cuts, None]
    windows = [Window(lo=bounds[i], hi=bounds[i + 1]) for i in range(len(bounds) - 1)]
    windows[-1].nulls = True
    return windows


def checkpoint(name: str) -> None:
    """Test hook: with SPP_PAUSE_AT=name the run stops here so a test can kill it at a known point."""
    if os.environ.get("SPP_PAUSE_AT") == name:
        print(f"spp-test: paused at {name}", file=sys.stderr, flush=True)
        time.sleep(3600)


def _needs_models(db, summary: SyncSummary) -> bool:
    """Rebuilding the models and the serving copy is the slow part of a sync: skip it when they are
    already built and published from the latest load (a run that changed no row makes no load)."""
    if isinstance(db, Path) and not (serving_dir(db) / "spp.duckdb").exists():
        return True
    con = connect(db)
    try:
        if not table_exists(con, "ops", "model_builds") or not table_exists(con, DATASET, "_dlt_loads"):
            return True
        latest = con.execute(f"SELECT max(load_id) FROM {DATASET}._dlt_loads WHERE status = 0").fetchone()[0]
        built = con.execute("SELECT load_id, published FROM ops.model_builds ORDER BY built_at DESC LIMIT 1").fetchone()
        return built is None or built[0] != latest or not built[1]
    finally:
        con.close()


def check_source(db, opts: SyncOptions) -> None:
    """A database holds one portal's dataset: syncing another one into it would mix them."""
    if not db.exists():
        return
    con = connect(db)
    try:
        if not table_exists(con, "ops", "sync_runs"):
            return
        cols = {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_catalog = current_database() AND table_schema = 'ops' AND table_name = 'sync_runs'").fetchall()}
        if "base_url" not in cols:
            return
        last = con.execute("SELECT base_url, dataset FROM ops.sync_runs ORDER BY finished_at DESC LIMIT 1").fetchone()
    finally:
        con.close()
    # Compared by host, not port: a local replica gets a new port each time it starts.
    if last and (urlsplit(last[0] or "").hostname, last[1]) != (urlsplit(opts.base_url).hostname, opts.dataset):
        where = "give another --db (or delete this file to start over)" if isinstance(db, Path) else "use another lake"
        raise UsageError(f"{db} holds {last[1]} from {last[0]}, not {opts.dataset} from {opts.base_url}; {where}")


def check_db_path(db: Path) -> None:
    if db.is_dir():
        raise DatabaseError(f"--db {db} is a directory; give a file path such as {db / 'spp.duckdb'}")
    parent = db.parent if str(db.parent) else Path(".")
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise DatabaseError(f"cannot write to {db}; check its permissions or choose another --db")
    if db.exists() and db.stat().st_size:
        with open(db, "rb") as f:
            head = f.read(16)
        if head[8:12] != b"DUCK":
            raise DatabaseError(f"{db} is not a DuckDB database; move it away or choose another --db")


def sync(opts: SyncOptions, portal: Portal | None = None) -> SyncSummary:
    db = opts.db
    if isinstance(db, Path):
        check_db_path(db)
    started = time.monotonic()
    mode = "full" if opts.full else ("since" if opts.since else "incremental")
    summary = SyncSummary(run_id=uuid.uuid4().hex[:12], mode=mode, started_at=dt.datetime.now(dt.timezone.utc))
    own_portal = portal is None
    portal = portal or Portal(opts.base_url, opts.dataset, timeout=opts.timeout, max_quota_wait=opts.max_quota_wait,
                              max_attempts=opts.retries + 1)
    try:
        with db_lock(db):
            check_source(db, opts)
            pipeline = make_pipeline(db)
            summary.resumed_pending_load = finish_pending(pipeline, db)
            summary.cursor_before = read_cursor(db)
            if opts.full:
                lower = None
            elif opts.since:
                lower = opts.since
            elif summary.cursor_before:
                lower = summary.cursor_before - dt.timedelta(days=opts.lookback_days)
            else:
                summary.mode = "initial"
                lower = None
            field_types = portal.field_types()
            windows = plan_windows(portal, lower, opts.window_rows)
            spool = Path(pipeline.working_dir) / "exports"
            spool.mkdir(parents=True, exist_ok=True)
            t_load = time.monotonic()
            for i, window in enumerate(windows, 1):
                log.info("window %d/%d %s: downloading", i, len(windows), window)
                expected = portal.bounds(window.odsql())[0]
                path = spool / f"window.{opts.export_format}"
                try:
                    size = portal.download(opts.export_format, window.odsql(), path,
                                           on_progress=lambda: checkpoint(f"download:{i}"))
                    log.info("window %d/%d: %.1f MB downloaded, loading", i, len(windows), size / 1e6)
                    t_window = time.monotonic()
                    detector = ChangeDetector.for_window(db, window)
                    rejects = [] if opts.on_bad_rows == "quarantine" else None
                    batches = (normalise(b, field_types, rejects) for b in read_batches(path, opts.export_format, field_types))
                    step = lambda name: checkpoint(f"{name}:{i}")  # noqa: E731
                    try:
                        run_window(pipeline, window_resource(batches, detector, expected, portal.published, rejects),
                                   checkpoint=step)
                    except CrossBatchDuplicates:
                        log.warning("window %d/%d: the export repeats ids across batches; reading it again, "
                                    "keeping the last of each", i, len(windows))
                        detector = ChangeDetector.for_window(db, window)
                        rejects = [] if opts.on_bad_rows == "quarantine" else None
                        batches = last_occurrences(path, opts.export_format, field_types, detector.counts, rejects)
                        run_window(pipeline, window_resource(batches, detector, expected, portal.published, rejects),
                                   checkpoint=step)
                finally:
                    for spooled in spool.glob("window.*"):
                        spooled.unlink(missing_ok=True)
                c = detector.counts
                log.info("window %d/%d: %d experiences read in %.1fs (%.0f/s): %d new, %d updated, %d removed",
                         i, len(windows), c.fetched, time.monotonic() - t_window,
                         c.fetched / max(time.monotonic() - t_window, 1e-6), c.new, c.updated, c.removed)
                summary.counts.add(detector.counts)
                summary.windows += 1
            summary.load_seconds = time.monotonic() - t_load
            if opts.build_models and not _needs_models(db, summary):
                log.info("nothing changed: the models and the serving copy are left as they are")
            elif opts.build_models:
                t_models = time.monotonic()
                release_memory()
                build_models(db, on_model=lambda name: checkpoint(f"models:{name}"))
                summary.models_seconds = time.monotonic() - t_models
                t_serving = time.monotonic()
                checkpoint("serving")
                release_memory()
                publish(db)
                summary.serving_seconds = time.monotonic() - t_serving
            summary.cursor_after = read_cursor(db)
            summary.duration_seconds = time.monotonic() - started
            record_run(db, summary, opts)
    finally:
        if own_portal:
            portal.close()
    return summary


def last_occurrences(path: Path, fmt: str, field_types: dict, counts: Counts, rejects: list | None = None):
    """Batches of the export keeping only the last row of each id (a second pass, only when needed)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.fields import PRIMARY_KEY

    ids = [normalise(b, field_types, [] if rejects is not None else None).column(PRIMARY_KEY)
           for b in read_batches(path, fmt, field_types)]
    ids = pa.chunked_array(ids).combine_chunks() if ids else pa.array([], pa.int64())
    positions = pa.table({"id": ids, "pos": pa.array(range(len(ids)), pa.int64())})
    keep = positions.group_by("id").aggregate([("pos", "max")]).column("pos_max")
    counts.duplicates += len(ids) - len(keep)
    keep_mask = pc.is_in(pa.array(range(len(ids)), pa.int64()), value_set=keep.combine_chunks())
    offset = 0
    for b in read_batches(path, fmt, field_types):
        table = normalise(b, field_types, rejects)
        yield table.filter(keep_mask.slice(offset, table.num_rows))
        offset += table.num_rows


RUNS_DDL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.sync_runs (
    run_id VARCHAR, mode VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
    fetched BIGINT, new BIGINT, updated BIGINT, unchanged BIGINT, removed BIGINT, duplicates BIGINT,
    responses BIGINT, cursor_before DATE, cursor_after DATE, windows INTEGER, resumed_pending_load BOOLEAN,
    load_seconds DOUBLE, models_seconds DOUBLE, duration_seconds DOUBLE
);
ALTER TABLE ops.sync_runs ADD COLUMN IF NOT EXISTS serving_seconds DOUBLE;
ALTER TABLE ops.sync_runs ADD COLUMN IF NOT EXISTS base_url VARCHAR;
ALTER TABLE ops.sync_runs ADD COLUMN IF NOT EXISTS dataset VARCHAR;
ALTER TABLE ops.sync_runs ADD COLUMN IF NOT EXISTS rejected BIGINT;
"""


def record_run(db, s: SyncSummary, opts: SyncOptions) -> None:
    c = s.counts
    try:
        con = connect(db)
    except duckdb.Error as e:
        raise DatabaseError(f"cannot open {db} to record the run: {e}") from None
    try:
        con.execute(RUNS_DDL)
        values = {
            "run_id": s.run_id, "mode": s.mode, "started_at": s.started_at, "fetched": c.fetched, "new": c.new,
            "updated": c.updated, "unchanged": c.unchanged, "removed": c.removed, "duplicates": c.duplicates, "rejected": c.rejected,
            "responses": c.responses, "cursor_before": s.cursor_before, "cursor_after": s.cursor_after,
            "windows": s.windows, "resumed_pending_load": s.resumed_pending_load, "load_seconds": s.load_seconds,
            "models_seconds": s.models_seconds, "serving_seconds": s.serving_seconds,
            "duration_seconds": s.duration_seconds, "base_url": opts.base_url.rstrip("/"), "dataset": opts.dataset,
        }
        con.execute(f"INSERT INTO ops.sync_runs (finished_at, {', '.join(values)}) "
                    f"VALUES (now(), {', '.join('?' for _ in values)})", list(values.values()))
    finally:
        con.close()
