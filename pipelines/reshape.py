"""Reshape: export file on disk → typed Arrow batches → parent rows and per-slot response rows.

Everything here is columnar (pyarrow compute); no Python loop runs per row. Memory is bounded
by the block size, not by the size of the export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from pipelines.errors import DataError
from pipelines.fields import PRIMARY_KEY, SLOT_FIELD_RE, SLOT_FIELDS

BLOCK_SIZE = 4 << 20  # bytes of JSON per batch: about 2,000 experiences (measured: faster and leaner than 16 MB)
PARQUET_BATCH_ROWS = 10_000
READ_TYPES = {"text": pa.string(), "int": pa.int64(), "double": pa.float64(), "boolean": pa.bool_(),
              "date": pa.string(), "datetime": pa.string()}  # dates are parsed after reading, tolerantly
STORE_TYPES = {"text": pa.string(), "int": pa.int64(), "double": pa.float64(), "boolean": pa.bool_(),
               "date": pa.date32(), "datetime": pa.timestamp("us", tz="UTC")}
_CONFLICT_RE = re.compile(r"Column\(/([^)]+)\) changed from (\w+) to (\w+)")
_JSON_KIND = {"string": pa.string(), "number": pa.float64(), "boolean": pa.bool_(), "array": pa.list_(pa.string())}


def read_batches(path: Path, fmt: str, field_types: dict[str, str], block_size: int = BLOCK_SIZE) -> Iterator[pa.RecordBatch]:
    """Record batches of the export at `path`, with API field names as columns.

    `field_types` maps field name to ODS type, from the portal's metadata. A field whose JSON
    type differs from what was expected (a list where text was announced, a text id, a field
    first seen as all-null) does not fail the run: the reader restarts with the type it saw,
    skipping the rows it already delivered, and normalise() coerces the column afterwards.
    """
    if fmt == "parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS)
        return
    if fmt != "jsonl":
        raise ValueError(f"unsupported export format for reading: {fmt}")
    read_types = {name: READ_TYPES.get(t, pa.string()) for name, t in field_types.items()}
    delivered = 0
    retyped: set[str] = set()
    while True:
        schema = pa.schema(list(read_types.items()))
        seen = 0
        try:
            # Opening already parses the first block, so it belongs inside the try.
            reader = pj.open_json(path, read_options=pj.ReadOptions(block_size=block_size),
                                  parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"))
            for batch in reader:
                if seen + batch.num_rows <= delivered:
                    seen += batch.num_rows
                    continue
                skip = max(0, delivered - seen)
                seen += batch.num_rows
                out = batch.slice(skip) if skip else batch
                delivered += out.num_rows
                yield out
            return
        except pa.ArrowInvalid as e:
            m = _CONFLICT_RE.search(str(e))
            if not m or m.group(3) not in _JSON_KIND:
                raise DataError(f"the export is not valid JSON lines ({e}); run the sync again, and report it if it persists") from None
            name, new_kind = m.group(1), m.group(3)
            if read_types.get(name) == _JSON_KIND[new_kind] or name in retyped:
                # A column that mixes JSON types (numbers and strings): pyarrow cannot read it.
                path = _stringify_field(path, name)
                read_types[name] = pa.string()
                continue
            retyped.add(name)
            # A number column that later holds text is read as text and cast back in normalise().
            read_types[name] = pa.string() if m.group(2) != "null" and new_kind != "array" else _JSON_KIND[new_kind]


def _stringify_field(path: Path, name: str) -> Path:
    """Rare path, per line: rewrite one mixed-type field as text; normalise() then casts it back or
    reports the values that cannot be cast."""
    out_path = Path(str(path) + f".{name}.jsonl")
    with open(path, encoding="utf-8") as src, open(out_path, "w", encoding="utf-8") as out:
        for line in src:
            if not line.strip():
                continue
            row = json.loads(line)
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                row[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out_path


_NUMBER_RE = {"int": r"^-?[0-9]+$", "double": r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"}


def _parse_dates(col) -> tuple[pa.Array, pa.Array]:
    """ODS dates arrive as YYYY-MM-DD; ISO datetimes, DD/MM/YYYY, YYYY/MM/DD and YYYY-MM also parse.
    Returns the dates and a mask of the values that are not dates."""
    col = pc.utf8_trim_whitespace(col.cast(pa.string()))
    head = pc.utf8_slice_codeunits(col, 0, 10)
    candidates = [pc.strptime(head, format=f, unit="s", error_is_null=True) for f in ("%Y-%m-%d", "%d/%m/%Y", "%Y/%m/%d")]
    month = pc.if_else(pc.equal(pc.utf8_length(col), 7), pc.binary_join_element_wise(col, "-01", ""), None)
    candidates.append(pc.strptime(month, format="%Y-%m-%d", unit="s", error_is_null=True))
    parsed = pc.coalesce(*candidates)
    bad = pc.and_kleene(pc.and_(pc.is_valid(col), pc.is_null(parsed)), pc.not_equal(col, ""))
    return parsed.cast(pa.date32()), pc.fill_null(bad, False)


def _bad_values(col, ods_type: str):
    """Mask of the values that cannot be stored as `ods_type` (None when every value can)."""
    if ods_type == "date":
        return _parse_dates(col)[1]
    target = STORE_TYPES.get(ods_type, pa.string())
    if not pa.types.is_string(col.type) or target not in (pa.int64(), pa.float64()):
        return None
    text = pc.utf8_trim_whitespace(col)
    ok = pc.or_kleene(pc.match_substring_regex(text, _NUMBER_RE[ods_type]), pc.equal(text, ""))
    return pc.fill_null(pc.invert(ok), False)


def _coerce(col, name: str, ods_type: str):
    target = STORE_TYPES.get(ods_type, pa.string())
    if ods_type == "date":
        return _parse_dates(col)[0]
    if pa.types.is_list(col.type):
        # A multivalued field: keep the portal's CSV rendering ("a, b,") so every row reads alike.
        joined = pc.binary_join(col, ", ")
        return pc.if_else(pc.greater(pc.list_value_length(col), 0), pc.binary_join_element_wise(joined, ",", ""), None)
    if col.type == target or pa.types.is_null(col.type):
        return col.cast(target)
    if pa.types.is_string(col.type) and target in (pa.int64(), pa.float64()):
        col = pc.utf8_trim_whitespace(col)
        col = pc.if_else(pc.equal(col, ""), None, col)
    return col.cast(target)


def normalise(batch: pa.RecordBatch, field_types: dict[str, str], rejects: list | None = None) -> pa.Table:
    """Cast every known field to its stored type; unknown fields keep the type they were read with.

    A value that cannot be stored as its field's type stops the run with the field and the value
    named; or, when `rejects` is a list (--on-bad-rows quarantine), its row is left out and
    described in `rejects` (id as text, field, value, the whole row as JSON).
    """
    table = pa.Table.from_batches([batch])
    if PRIMARY_KEY not in table.column_names:
        raise DataError(f"the export has no {PRIMARY_KEY!r} field; check --dataset")
    bad_rows = None
    for name in table.column_names:
        if name not in field_types:
            continue
        bad = _bad_values(table.column(name), field_types[name])
        if bad is None or not pc.any(bad).as_py():
            continue
        values = pc.filter(table.column(name), bad).to_pylist()
        if rejects is None:
            expected = "YYYY-MM-DD" if field_types[name] == "date" else field_types[name]
            raise DataError(f"field {name!r} should be {expected} but has the value {values[0]!r}; nothing was loaded "
                            "(or run with --on-bad-rows quarantine to set such rows aside)")
        for row, value in zip(table.filter(bad).to_pylist(), values):  # only the rejected rows, so few
            rejects.append({"id_experience": None if row.get(PRIMARY_KEY) is None else str(row[PRIMARY_KEY]),
                            "field": name, "value": str(value), "expected_type": field_types[name],
                            "row_json": json.dumps(row, ensure_ascii=False, default=str)})
        bad_rows = bad if bad_rows is None else pc.or_(bad_rows, bad)
    if bad_rows is not None:
        table = table.filter(pc.invert(bad_rows))
    columns, names = [], []
    for name in table.column_names:
        col = table.column(name)
        if name in field_types:
            col = _coerce(col, name, field_types[name])
        elif pa.types.is_null(col.type):
            col = col.cast(pa.string())
        elif pa.types.is_list(col.type) or pa.types.is_struct(col.type):
            # A nested value the API did not announce: keep it as JSON text (rare, so per value).
            col = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in col.to_pylist()], pa.string())
        columns.append(col)
        names.append(name)
    table = pa.table(dict(zip(names, columns)))
    if table.column(PRIMARY_KEY).null_count:
        raise DataError(f"the export has rows without {PRIMARY_KEY!r}")
    return table


def split(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """One parent row per experience, and one response row per experience and filled slot."""
    slot_cols: dict[int, dict[str, str]] = {}
    for name in table.column_names:
        m = SLOT_FIELD_RE.match(name)
        if m:
            slot_cols.setdefault(int(m.group("slot")), {})[m.group("prefix")] = name
    parent = table.drop_columns([c for cols in slot_cols.values() for c in cols.values()])
    ids = table.column(PRIMARY_KEY)
    parts = []
    for slot in sorted(slot_cols):
        cols = slot_cols[slot]
        values = {}
        filled = None
        for child_name, prefix, ods_type in SLOT_FIELDS:
            col = table.column(cols[prefix]) if prefix in cols else pa.nulls(table.num_rows, STORE_TYPES[ods_type])
            col = col.cast(STORE_TYPES[ods_type])
            values[child_name] = col
            is_set = pc.is_valid(col)
            if pa.types.is_string(col.type):
                is_set = pc.and_kleene(is_set, pc.not_equal(col, ""))
            filled = is_set if filled is None else pc.or_kleene(filled, is_set)
        filled = pc.fill_null(filled, False)
        part = pa.table({PRIMARY_KEY: ids, "slot": pa.array([slot] * table.num_rows, pa.int16()), **values}).filter(filled)
        parts.append(part)
    if parts:
        responses = pa.concat_tables(parts)
    else:
        responses = pa.table({PRIMARY_KEY: pa.array([], pa.int64()), "slot": pa.array([], pa.int16()),
                              **{c: pa.array([], STORE_TYPES[t]) for c, _, t in SLOT_FIELDS}})
    return parent, responses
