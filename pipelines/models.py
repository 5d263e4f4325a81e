"""Model: run the SQL models in sql/ (dbt style) and their data tests, in one transaction.

  sql/staging/*.sql       views in schema `staging`   (stg_ models: typed, cleaned)
  sql/intermediate/*.sql  views in schema `intermediate` (int_ models)
  sql/marts/*.sql         tables in schema `marts`
  sql/tests/*.sql         data tests: each query returns the offending rows, none when it passes
  sql/macros/*.sql        DuckDB macros (CREATE OR REPLACE MACRO …), run before the models

A model file is one SELECT (CTEs welcome); its first `-- ` comment line is its description.
Models run in dependency order, found from the `schema.model` names each one reads. Everything
(models and tests) happens in one DuckDB transaction: a failing model or test rolls it all back,
so the marts stay as they were.

The models read the raw tables through two source views the runner writes first,
`staging.src_experiences` and `staging.src_responses`: every documented API field is there, as
NULL when the portal does not (or no longer does) send it, so a missing optional field never
breaks a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import duckdb

from pipelines.database import connect
from pipelines.errors import DatabaseError, ModelError
from pipelines.fields import FIELDS, SLOT_FIELD_RE, SLOT_FIELDS

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
LAYERS = (("staging", "VIEW"), ("intermediate", "VIEW"), ("marts", "TABLE"))
DUCK_TYPES = {"text": "VARCHAR", "int": "BIGINT", "double": "DOUBLE", "date": "DATE", "datetime": "TIMESTAMPTZ", "boolean": "BOOLEAN"}
_REF_RE = re.compile(r"\b(staging|intermediate|marts)\.([a-z_][a-z0-9_]*)", re.IGNORECASE)
MAX_FAILED_ROWS_SHOWN = 10


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


def build_models(db, sql_dir: Path = SQL_DIR, on_model=None) -> list[Model]:
    """Build every model and run every data test in one transaction; raise ModelError on failure."""
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
        for path in sorted((sql_dir / "macros").glob("*.sql")):
            con.execute(path.read_text(encoding="utf-8"))
        for stmt in _source_views(con):
            con.execute(stmt)
        for m in models:
            if on_model:
                on_model(m.name)
            try:
                con.execute(f"CREATE OR REPLACE {m.kind} {m.qualified} AS\n{m.sql}")
            except duckdb.Error as e:
                raise ModelError(f"model {m.qualified} ({m.path.relative_to(sql_dir.parent)}) failed: {e}") from None
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
        # Which load these models were built from: a sync that loads nothing new can then skip them.
        con.execute("CREATE SCHEMA IF NOT EXISTS ops")
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
