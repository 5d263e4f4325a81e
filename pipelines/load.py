"""Load: merge one window of the export into DuckDB with dlt, as Arrow tables in Parquet files.

Two tables, both merged (delete-insert) in the `raw` dataset:
  raw.experiences             one row per id_experience
  raw.experiences__responses  one row per (id_experience, slot); merge key id_experience, so a
                              reloaded experience gets its response rows replaced as a whole
Rows are compared with what the database holds for the same window (a hash of the full API
row, kept in `_row_hash`): unchanged rows are not loaded at all, so a no-op sync writes
nothing. Experiences the window no longer contains are deleted through dlt's `hard_delete`
column `_deleted` (always NULL on stored rows).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dlt
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from pipelines.database import CONFIG, connect, release_memory, table_exists
from pipelines.errors import DatabaseError, PortalError, SppError, chain, is_out_of_memory, memory_error, out_of_memory
from pipelines.fields import CURSOR, PRIMARY_KEY
from pipelines.reshape import split

log = logging.getLogger("spp.load")
DATASET = "raw"
PARENT = "experiences"
CHILD = "experiences__responses"
PIPELINE_NAME = "spp_experiences"
MERGE = {"disposition": "merge", "strategy": "delete-insert", "deduplicated": True}
DELETED = "_deleted"
ROW_HASH = "_row_hash"
# Part of every row hash: bump it when reshaping changes, so the next sync reloads every row.
ROW_FORMAT_VERSION = 1


def _hints(disposition):
    parent = dlt.mark.make_hints(
        table_name=PARENT, write_disposition=disposition, primary_key=PRIMARY_KEY,
        columns={DELETED: {"data_type": "bool", "hard_delete": True}, CURSOR: {"data_type": "date"}},
    )
    child = dlt.mark.make_hints(
        table_name=CHILD, write_disposition=disposition, primary_key=[PRIMARY_KEY, "slot"], merge_key=PRIMARY_KEY,
        columns={DELETED: {"data_type": "bool", "hard_delete": True}},
    )
    return parent, child


PARENT_HINTS, CHILD_HINTS = _hints(MERGE)
# Into an empty table, merging buys nothing: appending skips dlt's staging copy (measured: the
# load step of a first sync about twice as fast). Only used when the table holds no row at all.
APPEND_PARENT_HINTS, APPEND_CHILD_HINTS = _hints("append")
REJECTED = "rejected_rows"
REJECTED_HINTS = dlt.mark.make_hints(table_name=REJECTED, write_disposition=MERGE, primary_key=[PRIMARY_KEY, "field"])



@dataclass
class Window:
    """A slice of the export by send date: lo <= ecrit_le < hi, plus the null dates if `nulls`."""

    lo: object = None  # datetime.date or None
    hi: object = None
    nulls: bool = False

    def odsql(self) -> str | None:
        parts = []
        if self.lo:
            parts.append(f"{CURSOR} >= date'{self.lo.isoformat()}'")
        if self.hi:
            parts.append(f"{CURSOR} < date'{self.hi.isoformat()}'")
        bounded = " AND ".join(parts)
        if self.nulls:
            return f"({bounded}) OR {CURSOR} is null" if bounded else None
        return bounded or f"{CURSOR} is not null"

    def sql(self) -> str:
        parts = []
        if self.lo:
            parts.append(f"{CURSOR} >= DATE '{self.lo.isoformat()}'")
        if self.hi:
            parts.append(f"{CURSOR} < DATE '{self.hi.isoformat()}'")
        bounded = " AND ".join(parts) or f"{CURSOR} IS NOT NULL"
        return f"(({bounded}) OR {CURSOR} IS NULL)" if self.nulls else f"({bounded})"

    def __str__(self) -> str:
        lo = self.lo.isoformat() if self.lo else "start"
        hi = self.hi.isoformat() if self.hi else "end"
        return f"[{lo} .. {hi}){' + undated' if self.nulls else ''}"


@dataclass
class Counts:
    fetched: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    duplicates: int = 0
    rejected: int = 0
    responses: int = 0

    def add(self, other: "Counts") -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))


def make_pipeline(db) -> dlt.Pipeline:
    """dlt's pipeline for a DuckDB file, or for a lake (its working folder is local either way)."""
    if isinstance(db, Path):
        pipelines_dir = db.parent / f".{db.name}.dlt"
        destination = dlt.destinations.duckdb(DuckDbCredentials(str(db), global_config=dict(CONFIG)))
    else:
        pipelines_dir, destination = db.pipelines_dir, db.destination()
    return dlt.pipeline(pipeline_name=PIPELINE_NAME, pipelines_dir=str(pipelines_dir),
                        destination=destination, dataset_name=DATASET)


class CrossBatchDuplicates(Exception):
    """An id came back in a later batch of the same export: the window must be re-read deduplicated."""


@dataclass
class ChangeDetector:
    """Compares fetched rows with the stored ones of the same window, by id and row hash."""

    existing: pa.Table  # id_experience, _row_hash of the stored rows in the window
    counts: Counts = field(default_factory=Counts)
    table_empty: bool = True  # raw.experiences holds no row at all
    skip_removals: bool = False  # a row was set aside without a usable id: unpublished ones can't be told

    def __post_init__(self):
        self.con = duckdb.connect(config=dict(CONFIG))
        self.con.register("existing_arrow", self.existing)
        self.con.execute("CREATE TABLE existing AS SELECT * FROM existing_arrow")
        self.con.unregister("existing_arrow")
        # Ids of the loaded rows, one array per batch, and of the rows set aside. Compared once at
        # the end of the window: a per-batch check against all earlier ids grew with the window.
        self.fetched: list[pa.Array] = []
        self.seen: list[pa.Array] = []

    @classmethod
    def for_window(cls, db_path, window: Window) -> "ChangeDetector":
        empty = pa.table({PRIMARY_KEY: pa.array([], pa.int64()), ROW_HASH: pa.array([], pa.int64())})
        if not db_path.exists():
            return cls(empty)
        con = connect(db_path)
        try:
            if not table_exists(con, DATASET, PARENT):
                return cls(empty)
            existing = con.execute(f"SELECT {PRIMARY_KEY}, {ROW_HASH} FROM {DATASET}.{PARENT} WHERE {window.sql()}").to_arrow_table()
            table_empty = con.execute(f"SELECT count(*) = 0 FROM (SELECT 1 FROM {DATASET}.{PARENT} LIMIT 1)").fetchone()[0]
            return cls(existing, table_empty=table_empty)
        finally:
            con.close()

    def changed(self, table: pa.Table) -> pa.Table:
        """The rows of `table` that are new or differ from the stored ones, with their `_row_hash`."""
        table = self._last_wins(table)
        self.counts.fetched += table.num_rows
        self.con.register("batch", table)
        # hash() over the whole row as a struct; shifted to fit a signed BIGINT column.
        hashes = self.con.execute(f"SELECT (hash(b, {ROW_FORMAT_VERSION}) >> 1)::BIGINT AS h FROM batch b").to_arrow_table().column("h")
        self.con.unregister("batch")
        ids = table.column(PRIMARY_KEY).combine_chunks()
        self.fetched.append(ids)
        if self.existing.num_rows:
            self.con.register("ids", pa.table({PRIMARY_KEY: ids, "pos": pa.array(range(len(ids)), pa.int64())}))
            old = self.con.execute(
                f"SELECT e.{ROW_HASH} AS old FROM ids LEFT JOIN existing e USING ({PRIMARY_KEY}) ORDER BY ids.pos"
            ).to_arrow_table().column("old")
            self.con.unregister("ids")
        else:  # nothing stored in this window: every row is new
            old = pa.nulls(table.num_rows, pa.int64())
        is_new = pc.is_null(old)
        same = pc.fill_null(pc.equal(old, hashes), False)
        n_new = pc.sum(is_new).as_py() or 0
        n_same = pc.sum(same).as_py() or 0
        self.counts.new += n_new
        self.counts.unchanged += n_same
        self.counts.updated += table.num_rows - n_new - n_same
        keep = pc.invert(same)
        return table.append_column(ROW_HASH, hashes).filter(keep)

    def _last_wins(self, table: pa.Table) -> pa.Table:
        """Within one batch, a repeated id keeps its last row."""
        ids = table.column(PRIMARY_KEY)
        if pc.count_distinct(ids).as_py() == table.num_rows:
            return table
        positions = pa.table({"id": ids, "pos": pa.array(range(table.num_rows), pa.int64())})
        last = positions.group_by("id").aggregate([("pos", "max")]).column("pos_max")
        self.counts.duplicates += table.num_rows - len(last)
        return table.take(pc.take(last, pc.sort_indices(last)))

    def see(self, ids: list[int]) -> None:
        """Ids the export holds although their rows were set aside: they are not unpublished."""
        if ids:
            self.seen.append(pa.array(ids, pa.int64()))

    def check_repeats(self) -> None:
        """An id loaded from two batches: rows already handed to dlt cannot be taken back, so sync
        re-reads the window with only the last occurrence of each id (see sync.last_occurrences)."""
        ids = pa.chunked_array(self.fetched, pa.int64())
        if pc.count_distinct(ids).as_py() != len(ids):
            raise CrossBatchDuplicates()

    def close(self) -> None:
        """Free the in-memory database (ids and hashes of the whole window) before the load starts."""
        self.con.close()
        self.existing = self.existing.slice(0, 0)
        self.fetched, self.seen = [], []

    def removed_ids(self) -> pa.Array:
        """Stored ids of the window that the export no longer holds."""
        self.con.register("fetched", pa.table({PRIMARY_KEY: pa.chunked_array(self.fetched + self.seen, pa.int64())}))
        removed = self.con.execute(
            f"SELECT {PRIMARY_KEY} FROM existing ANTI JOIN fetched USING ({PRIMARY_KEY}) ORDER BY 1"
        ).to_arrow_table().column(PRIMARY_KEY).combine_chunks()
        self.con.unregister("fetched")
        return removed


def _child_markers(ids: pa.Array) -> pa.Table:
    """Rows that only carry the merge key: their delete clears every stored slot of these ids."""
    return pa.table({PRIMARY_KEY: ids, "slot": pa.array([0] * len(ids), pa.int16()),
                     DELETED: pa.array([True] * len(ids), pa.bool_())})


def window_resource(batches: Iterator[pa.Table], detector: ChangeDetector, expected: int | None = None,
                    still_published=None, rejects: list | None = None):
    """A dlt resource that yields the changed parent and response rows of one window, then deletions.

    Before deleting anything it checks that the export held as many rows as the portal counts for
    the window (a short body must never read as mass unpublishing), and asks the portal about each
    id it would delete (`still_published`): one whose send date moved out of the window is kept.
    """

    def set_aside():
        """Rows normalise() rejected (--on-bad-rows quarantine), into raw.rejected_rows."""
        if not rejects:
            return None
        rows = list(rejects)
        rejects.clear()
        detector.counts.rejected += len({(r[PRIMARY_KEY], r["row_json"]) for r in rows})
        ids = [r[PRIMARY_KEY] for r in rows]
        usable = [int(i) for i in ids if i and i.lstrip("-").isdigit()]
        detector.see(usable)
        if len(usable) < len(ids):
            detector.skip_removals = True
        table = pa.Table.from_pylist(rows).append_column(
            "rejected_at", pa.array([dt.datetime.now(dt.timezone.utc)] * len(rows), pa.timestamp("us", tz="UTC")))
        return dlt.mark.with_hints(table, REJECTED_HINTS)

    @dlt.resource(name=PARENT, max_table_nesting=0)
    def experiences():
        try:
            yield from changes()
        finally:
            detector.close()

    def changes():
        for table in batches:
            if (aside := set_aside()) is not None:
                yield aside
            changed = detector.changed(table)
            if not changed.num_rows:
                continue
            parent, responses = split(changed)
            detector.counts.responses += responses.num_rows
            parent = parent.append_column(DELETED, pa.nulls(parent.num_rows, pa.bool_()))
            responses = responses.append_column(DELETED, pa.nulls(responses.num_rows, pa.bool_()))
            if detector.table_empty:
                yield dlt.mark.with_hints(parent, APPEND_PARENT_HINTS)
                yield dlt.mark.with_hints(responses, APPEND_CHILD_HINTS)
                continue
            yield dlt.mark.with_hints(parent, PARENT_HINTS)
            markers = _child_markers(changed.column(PRIMARY_KEY).combine_chunks())
            yield dlt.mark.with_hints(pa.concat_tables([markers, responses], promote_options="default"), CHILD_HINTS)
        if (aside := set_aside()) is not None:
            yield aside
        detector.check_repeats()
        received = detector.counts.fetched + detector.counts.duplicates + detector.counts.rejected
        if expected is not None and received < expected:
            raise PortalError(f"the export held {received} experiences where the portal counts {expected}; "
                              "nothing was changed, run again")
        removed = detector.removed_ids()
        if len(removed) and detector.skip_removals:
            log.warning("%d experiences look unpublished, but a row without a usable id was set aside: "
                        "none is removed this time", len(removed))
            removed = removed.slice(0, 0)
        if len(removed) and still_published is not None:
            moved = still_published(removed.to_pylist())
            if moved:
                removed = pc.filter(removed, pc.invert(pc.is_in(removed, value_set=pa.array(sorted(moved), pa.int64()))))
        detector.counts.removed = len(removed)
        if len(removed):
            yield dlt.mark.with_hints(pa.table({PRIMARY_KEY: removed, DELETED: pa.array([True] * len(removed))}), PARENT_HINTS)
            yield dlt.mark.with_hints(_child_markers(removed), CHILD_HINTS)

    return experiences


def finish_pending(pipeline: dlt.Pipeline, db) -> bool:
    """Complete a load a killed run left behind, before anything new is read from the database."""
    if not pipeline.has_pending_data:
        return False
    pipeline.normalize()
    pipeline.load()
    _drop_repeated_rows(db)
    return True


def _drop_repeated_rows(db) -> None:
    """A first-sync (append) job killed between DuckDB's commit and dlt's bookkeeping is loaded
    again on resume; the repeated rows are exact copies, so keep one of each key."""
    con = connect(db)
    try:
        for table, key in ((PARENT, PRIMARY_KEY), (CHILD, f"{PRIMARY_KEY}, slot")):
            if table_exists(con, DATASET, table):
                con.execute(f"""DELETE FROM {DATASET}.{table} WHERE rowid IN (
                    SELECT rowid FROM (SELECT rowid, row_number() OVER (PARTITION BY {key} ORDER BY rowid) AS n
                                       FROM {DATASET}.{table}) WHERE n > 1)""")
    finally:
        con.close()


def run_window(pipeline: dlt.Pipeline, resource, checkpoint=None) -> None:
    """Extract, normalise and load one window: one dlt load package, committed as a whole."""
    step = checkpoint or (lambda name: None)
    try:
        pipeline.extract(resource, loader_file_format="parquet")
        step("normalise")
        release_memory()
        pipeline.normalize()
        step("load")
        release_memory()
        info = pipeline.load()
    except Exception as e:  # dlt wraps everything in PipelineStepFailed
        raise _explain(e) from e
    if info.has_failed_jobs:
        message = info.load_packages[0].jobs["failed_jobs"][0].failed_message or ""
        if is_out_of_memory(message):
            raise memory_error(message)
        raise DatabaseError(f"the load into DuckDB failed: {(message.splitlines() or [''])[0]}")


def _explain(e: Exception) -> Exception:
    """The error to show for a failed dlt step: ours if dlt wrapped one, else a known DuckDB cause."""
    inner = None
    for inner in chain(e):
        if isinstance(inner, (SppError, CrossBatchDuplicates)):
            return inner
    if (oom := out_of_memory(e)) is not None:
        return oom
    text = str(inner)
    if "lock" in text.lower() and "conflicting" in text.lower():
        return DatabaseError("the database file is open in another program (a BI tool or DuckDB shell?); "
                             "close it and run again")
    return e
