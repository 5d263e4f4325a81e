"""Model: run the SQL models in sql/ (dbt style) and their data tests, in one transaction.

  sql/staging/*.sql       tables in schema `staging`   (stg_ models: typed, cleaned), incremental
  sql/intermediate/*.sql  tables in schema `intermediate` (int_ models), incremental
  sql/marts/*.sql         tables in schema `marts`, rebuilt from the tables above
  sql/tests/*.sql         data tests: each query returns the offending rows, none when it passes
  sql/macros/*.sql        DuckDB macros (CREATE OR REPLACE MACRO …), run before the models

A model file is one SELECT (CTEs welcome); its first `-- ` comment line is its description.
Models run in dependency order, found from the `schema.model` names each one reads. Everything
(models and tests) happens in one DuckDB transaction: a failing model or test rolls it all back,
so the marts stay as they were.

Incremental staging and intermediate models. Cleaning the text is the slow part of a build, so
these layers are tables kept up to date by experience: each of their rows belongs to one
experience (an `id_experience` column) and depends only on that experience's raw rows. A build
finds the experiences whose raw row changed since the last build (ops.model_inputs keeps the
`_row_hash` of every experience the tables were built from), deletes their rows and inserts them
again from the model's SQL run over just those experiences. The marts, aggregates over whole
tables, are then rebuilt in full from these tables (fast: no text to clean, and no join: what
a mart needs from two per-experience tables is joined in the intermediate layer). The per-experience
layers are built a slice of experiences at a time (SLICE_ROWS), so their joins hold one slice in
memory: a full build runs within the same DuckDB memory limit at 3M experiences as at 100k. The result is the
same as a full rebuild (tests/test_models.py compares both); a full rebuild happens on the first
build, when a SQL file changed (ops.model_state keeps a fingerprint of them) and with `spp models`.

The models read the raw tables through two source views the runner writes first,
`staging.src_experiences` and `staging.src_responses`: every documented API field is there, as
NULL when the portal does not (or no longer does) send it, so a missing optional field never
breaks a model.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import duckdb

from pipelines.database import connect, keep_order, table_exists
from pipelines.errors import DatabaseError, ModelError, is_out_of_memory, memory_advice
from pipelines.fields import FIELDS, SLOT_FIELD_RE, SLOT_FIELDS

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
LAYERS = (("staging", "TABLE"), ("intermediate", "TABLE"), ("marts", "TABLE"))
# Layers kept up to date experience by experience (see the module docstring).
INCREMENTAL_LAYERS = ("staging", "intermediate")
KEY = "id_experience"
DUCK_TYPES = {"text": "VARCHAR", "int": "BIGINT", "double": "DOUBLE", "date": "DATE", "datetime": "TIMESTAMPTZ", "boolean": "BOOLEAN"}
_REF_RE = re.compile(r"\b(staging|intermediate|marts)\.([a-z_][a-z0-9_]*)", re.IGNORECASE)
MAX_FAILED_ROWS_SHOWN = 10
# Experiences per slice when building the per-experience layers (memory per slice, not per dataset).
SLICE_ROWS = int(os.environ.get("SPP_MODEL_SLICE_ROWS", "500000"))


@dataclass
class Model:
    schema: str
    name: str
    kind: str  # VIEW or TABLE
    sql: str
    path: Path
    description: str = ""
    deps: set[str] = field(default_factory=set)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def incremental(self) -> bool:
        return self.schema in INCREMENTAL_LAYERS


def _description(sql: str) -> str:
    for line in sql.splitlines():
        line = line.strip()
        if line.startswith("--"):
            return line.lstrip("-").strip()
        if line:
            break
    return ""


def discover(sql_dir: Path = SQL_DIR) -> list[Model]:
    """All models, in an order where each comes after the models it reads."""
    models: dict[str, Model] = {}
    for schema, kind in LAYERS:
        for path in sorted((sql_dir / schema).glob("*.sql")):
            sql = path.read_text(encoding="utf-8").strip().rstrip(";")
            m = Model(schema, path.stem, kind, sql, path, _description(sql))
            m.deps = {f"{s.lower()}.{n.lower()}" for s, n in _REF_RE.findall(_strip_comments(sql))} - {m.qualified}
            models[m.qualified] = m
    graph = {q: {d for d in m.deps if d in models} for q, m in models.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        raise ModelError(f"the SQL models depend on each other in a cycle: {' -> '.join(e.args[1])}") from None
    layer = {schema: i for i, (schema, _) in enumerate(LAYERS)}
    position = {q: i for i, q in enumerate(order)}
    # Layers only read lower layers (or their own), so this order still respects every dependency.
    return sorted((models[q] for q in order), key=lambda m: (layer[m.schema], position[m.qualified]))


def discover_tests(sql_dir: Path = SQL_DIR) -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((sql_dir / "tests").glob("*.sql")):
        sql = path.read_text(encoding="utf-8").strip().rstrip(";")
        out.append((path.stem, sql, _description(sql)))
    return out


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def _source_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """SQL for staging.src_experiences / src_responses over raw, filling absent fields with NULL."""
    def columns(table: str) -> dict[str, str]:
        rows = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_catalog = current_database() AND table_schema = 'raw' AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()
        return dict(rows)

    parent_cols = columns("experiences")
    child_cols = columns("experiences__responses")
    if not parent_cols or not child_cols:
        raise ModelError("the database has no experiences yet: run `spp sync` first")
    documented = [(n, DUCK_TYPES[t]) for n, _, t in FIELDS if not SLOT_FIELD_RE.match(n)]
    select = [f'"{n}"' if n in parent_cols else f'CAST(NULL AS {t}) AS "{n}"' for n, t in documented]
    documented_names = {n for n, _ in documented}
    select += [f'"{c}"' for c in parent_cols if c not in documented_names and not c.startswith("_")]
    child = [("id_experience", "BIGINT"), ("slot", "SMALLINT")] + [(c, DUCK_TYPES[t]) for c, _, t in SLOT_FIELDS]
    child_select = [f'"{n}"' if n in child_cols else f'CAST(NULL AS {t}) AS "{n}"' for n, t in child]
    return [
        "CREATE OR REPLACE VIEW staging.src_experiences AS SELECT " + ", ".join(select) + " FROM raw.experiences",
        "CREATE OR REPLACE VIEW staging.src_responses AS SELECT " + ", ".join(child_select) + " FROM raw.experiences__responses",
    ]


def _failure_rows(cur: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple], int]:
    rel = cur.sql(sql)
    total = cur.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
    rows = rel.limit(MAX_FAILED_ROWS_SHOWN).fetchall() if total else []
    return rel.columns, rows, total


def _for_changed(m: Model, upstream: set[str]) -> str:
    """The model's SQL over only the changed experiences: each upstream relation it reads is
    replaced by its rows for the ids in the temp table `_changed`."""
    def sub(match: re.Match) -> str:
        name = f"{match.group(1).lower()}.{match.group(2).lower()}"
        if name not in upstream:
            return match.group(0)  # a macro such as staging.clean_text
        return f"(select * from {name} where {KEY} in (select {KEY} from _changed))"
    return _REF_RE.sub(sub, m.sql)


def _slices(con, rows: int) -> list[tuple[int, int]]:
    """(first id, last id) of consecutive slices of about `rows` ids of `_all_changed`; at least one."""
    bounds = con.execute(f"""SELECT min({KEY}), max({KEY}) FROM (
        SELECT {KEY}, (row_number() OVER (ORDER BY {KEY}) - 1) // {rows} AS slice FROM _all_changed)
        GROUP BY slice ORDER BY slice""").fetchall()
    return bounds or [(0, -1)]


def _model_error(m: Model, sql_dir: Path, e: Exception) -> ModelError:
    first = str(e).splitlines()[0]
    hint = f"; {memory_advice()} and run `spp models`" if is_out_of_memory(e) else ""
    return ModelError(f"model {m.qualified} ({m.path.relative_to(sql_dir.parent)}) failed: {first}{hint}")


def _fingerprint(sql_dir: Path, source_views: list[str]) -> str:
    """Changes when any SQL file or the source views change: the incremental tables must then be rebuilt."""
    h = hashlib.sha256()
    for path in sorted(sql_dir.rglob("*.sql")):
        h.update(str(path.relative_to(sql_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    for stmt in source_views:
        h.update(stmt.encode() + b"\0")
    return h.hexdigest()


def _can_build_incrementally(con, models: list[Model], fingerprint: str) -> bool:
    if not table_exists(con, "ops", "model_state") or not table_exists(con, "ops", "model_inputs"):
        return False
    state = con.execute("SELECT fingerprint FROM ops.model_state").fetchone()
    if state is None or state[0] != fingerprint:
        return False
    kinds = dict(con.execute("SELECT table_schema || '.' || table_name, table_type FROM information_schema.tables "
                             "WHERE table_schema IN ('staging', 'intermediate')").fetchall())
    return all(kinds.get(m.qualified) == "BASE TABLE" for m in models if m.incremental)


def build_models(db, sql_dir: Path = SQL_DIR, on_model=None, full: bool = False) -> list[Model]:
    """Build every model and run every data test in one transaction; raise ModelError on failure.

    Incremental unless `full` (or the SQL changed, or nothing was built yet): see the module docstring."""
    models = discover(sql_dir)
    tests = discover_tests(sql_dir)
    try:
        con = connect(db)
    except duckdb.Error as e:
        raise DatabaseError(f"cannot open {db}: {e}") from None
    try:
        con.execute("BEGIN TRANSACTION")
        for schema, _ in LAYERS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute("CREATE SCHEMA IF NOT EXISTS ops")
        for path in sorted((sql_dir / "macros").glob("*.sql")):
            con.execute(path.read_text(encoding="utf-8"))
        source_views = _source_views(con)
        for stmt in source_views:
            con.execute(stmt)
        fingerprint = _fingerprint(sql_dir, source_views)
        incremental = not full and _can_build_incrementally(con, models, fingerprint)
        if incremental:
            # Experiences added, changed or removed since the last build, by row hash.
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _all_changed AS
                SELECT coalesce(r.{KEY}, i.{KEY}) AS {KEY}
                FROM (SELECT {KEY}, _row_hash FROM raw.experiences) AS r
                FULL JOIN ops.model_inputs AS i USING ({KEY})
                WHERE r._row_hash IS DISTINCT FROM i._row_hash""")
        else:
            # Response rows without their experience included: the data tests must see them.
            con.execute(f"CREATE OR REPLACE TEMP TABLE _all_changed AS SELECT {KEY} FROM raw.experiences "
                        f"UNION SELECT {KEY} FROM raw.experiences__responses")
            # Databases built before the staging layer was materialised hold views there.
            for (name,) in con.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables "
                                       "WHERE table_schema IN ('staging', 'intermediate') AND table_type = 'VIEW' "
                                       "AND table_name NOT LIKE 'src\\_%' ESCAPE '\\'").fetchall():
                con.execute(f"DROP VIEW {name}")
        upstream = {"staging.src_experiences", "staging.src_responses"}
        upstream |= {m.qualified for m in models if m.incremental}
        # The per-experience layers are built a slice of experiences at a time, so that their joins
        # and aggregates hold one slice in memory, never the whole dataset. Their row order is free.
        keep_order(con, False)
        for i, (lo, hi) in enumerate(_slices(con, SLICE_ROWS)):
            con.execute(f"CREATE OR REPLACE TEMP TABLE _changed AS SELECT {KEY} FROM _all_changed "
                        f"WHERE {KEY} >= {lo} AND {KEY} <= {hi}")
            for m in models:
                if not m.incremental:
                    continue
                if on_model and i == 0:
                    on_model(m.name)
                try:
                    if incremental:
                        con.execute(f"DELETE FROM {m.qualified} WHERE {KEY} IN (SELECT {KEY} FROM _changed)")
                    if incremental or i > 0:
                        con.execute(f"INSERT INTO {m.qualified} BY NAME\n{_for_changed(m, upstream)}")
                    else:
                        con.execute(f"CREATE OR REPLACE TABLE {m.qualified} AS\n{_for_changed(m, upstream)}")
                except duckdb.Error as e:
                    raise _model_error(m, sql_dir, e) from None
                if i == 0 and not incremental and KEY not in [c for (c,) in con.execute(
                        f"SELECT column_name FROM (DESCRIBE {m.qualified})").fetchall()]:
                    raise ModelError(f"model {m.qualified} ({m.path.relative_to(sql_dir.parent)}) has no {KEY} column: "
                                     f"{'/'.join(INCREMENTAL_LAYERS)} models are kept up to date by experience")
        keep_order(con, True)  # a mart's ORDER BY is how BI tools read it
        for m in models:
            if m.incremental:
                continue
            if on_model:
                on_model(m.name)
            try:
                con.execute(f"CREATE OR REPLACE {m.kind} {m.qualified} AS\n{m.sql}")
            except duckdb.Error as e:
                raise _model_error(m, sql_dir, e) from None
        failures = []
        for name, sql, _ in tests:
            try:
                cols, rows, total = _failure_rows(con, sql)
            except duckdb.Error as e:
                raise ModelError(f"data test {name} could not run: {e}") from None
            if total:
                shown = "\n".join("    " + ", ".join(f"{c}={v!r}" for c, v in zip(cols, row)) for row in rows)
                failures.append(f"  {name}: {total} offending row(s)\n{shown}")
        if failures:
            raise ModelError("data tests failed; the marts were left as they were:\n" + "\n".join(failures))
        # The raw rows the incremental tables now reflect, and the SQL they were built with.
        if incremental:
            con.execute(f"DELETE FROM ops.model_inputs WHERE {KEY} IN (SELECT {KEY} FROM _all_changed)")
            con.execute(f"INSERT INTO ops.model_inputs SELECT {KEY}, _row_hash FROM raw.experiences "
                        f"WHERE {KEY} IN (SELECT {KEY} FROM _all_changed)")
        else:
            con.execute(f"CREATE OR REPLACE TABLE ops.model_inputs AS SELECT {KEY}, _row_hash FROM raw.experiences")
            # A new generation after each full build: the serving copy then knows it cannot be patched.
            con.execute("CREATE OR REPLACE TABLE ops.model_state AS SELECT ? AS fingerprint, ? AS generation",
                        [fingerprint, uuid.uuid4().hex])
        # Which load these models were built from: a sync that loads nothing new can then skip them.
        con.execute("CREATE TABLE IF NOT EXISTS ops.model_builds (load_id VARCHAR, built_at TIMESTAMPTZ, published BOOLEAN)")
        con.execute("INSERT INTO ops.model_builds SELECT max(load_id), now(), false FROM raw._dlt_loads WHERE status = 0")
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    finally:
        con.close()
    return models
