"""A local replica of the OpenDataSoft Explore API v2.1, serving one experiences data file.

Endpoints (under /api/explore/v2.1/catalog/datasets):
  GET /{dataset}                   dataset metadata with its `fields`
  GET /{dataset}/records           paged records: limit <= 100, offset + limit <= 10,000
  GET /{dataset}/exports           the export formats
  GET /{dataset}/exports/{format}  json, jsonl, csv or parquet, no row cap, streamed from disk

Queries run in an in-memory DuckDB: ODSQL `select`, `where` and `order_by` are compiled by
odsql.py. Export bodies are written once per (query, data version) and then streamed from a
file, so a large export costs the replica one DuckDB COPY and the client sees bytes at disk
speed. The data file is reloaded when it changes on disk, so tests can edit it between runs.
Error bodies follow the real portal (docs: §4.6 of the API note, copied in data/README.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import duckdb

from pipelines.fields import FIELDS
from pipelines.replica.faults import Faults
from pipelines.replica.odsql import ODSQLError, compile_order_by, compile_select, compile_where

API_PREFIX = "/api/explore/v2.1/catalog/datasets"
DATASET_IDS = ("export-expa-c-riences", "export-experiences")
EXPORT_FORMATS = ("json", "jsonl", "csv", "parquet")
DUCK_TYPES = {"text": "VARCHAR", "int": "BIGINT", "double": "DOUBLE", "date": "DATE", "datetime": "TIMESTAMPTZ", "boolean": "BOOLEAN"}
RECORDS_MAX_LIMIT = 100
RECORDS_MAX_WINDOW = 10_000


class ApiError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def _bad_param(message: str) -> ApiError:
    return ApiError(400, {"error_code": "InvalidRESTParameterError", "message": message})


class Store:
    """The served data, held in an in-memory DuckDB and reloaded when the file changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.con = duckdb.connect()
        self.version = None
        self.columns: dict[str, str] = {}
        self.labels: dict[str, str] = {name: label for name, label, _ in FIELDS}
        self.ods_types: dict[str, str] = {}
        self.rows = 0
        self.cache_dir = Path(tempfile.mkdtemp(prefix="spp-replica-"))
        self.export_cache: OrderedDict[tuple, Path] = OrderedDict()
        self.refresh()

    def refresh(self) -> None:
        st = self.path.stat()
        version = (st.st_mtime_ns, st.st_size)
        if version == self.version:
            return
        with self.lock:
            if version == self.version:
                return
            self._load()
            self.version = version
            for p in self.export_cache.values():
                p.unlink(missing_ok=True)
            self.export_cache.clear()

    def _load(self) -> None:
        path = str(self.path)
        if st_empty := (self.path.stat().st_size == 0):
            keys = []
        else:
            keys = [r[0] for r in self.con.execute(
                "SELECT k FROM (SELECT unnest(json_keys(json)) AS k, row_number() OVER () AS n "
                "FROM read_json_objects(?, format='newline_delimited')) GROUP BY k ORDER BY min(n)", [path]).fetchall()]
        declared = {name: ods for name, _, ods in FIELDS}
        # Known fields first in their documented order, then whatever else the file carries.
        ordered = [name for name, _, _ in FIELDS if name in keys] + [k for k in keys if k not in declared]
        columns = {k: DUCK_TYPES[declared[k]] if k in declared else "JSON" for k in ordered}
        if st_empty or not ordered:
            cols = {name: DUCK_TYPES[ods] for name, _, ods in FIELDS}
            self.con.execute("CREATE OR REPLACE TABLE experiences AS SELECT * FROM (SELECT "
                             + ", ".join(f'NULL::{t} AS "{c}"' for c, t in cols.items()) + ") WHERE FALSE")
            columns = cols
        else:
            spec = "{" + ", ".join(f"'{c}': '{t}'" for c, t in columns.items()) + "}"
            self.con.execute(
                f"CREATE OR REPLACE TABLE experiences AS SELECT * FROM read_json(?, format='newline_delimited', columns={spec})",
                [path])
        self.columns = columns
        self.ods_types = {c: declared.get(c, "text") for c in columns}
        self.rows = self.con.execute("SELECT count(*) FROM experiences").fetchone()[0]

    # -- queries
    def _query(self, params: dict) -> tuple[str, list, list[str], bool]:
        try:
            sel = compile_select(params.get("select"), self.columns)
            where = compile_where(params.get("where"), self.columns)
            order = compile_order_by(params.get("order_by"), self.columns)
        except ODSQLError as e:
            raise ApiError(400, {"error_code": "ODSQLError", "message": str(e)}) from None
        sql = f"SELECT {sel.sql} FROM experiences WHERE {where.sql}"
        if order.sql:
            sql += f" ORDER BY {order.sql}"
        return sql, sel.params + where.params + order.params, sel.names, sel.is_aggregate

    def records(self, params: dict) -> dict:
        limit = _int_param(params, "limit", 10)
        offset = _int_param(params, "offset", 0)
        if not -1 <= limit <= RECORDS_MAX_LIMIT:
            raise _bad_param(f"Invalid value for limit API parameter: {limit} was found but -1 <= limit <= 100 is expected.")
        if limit == -1:
            limit = RECORDS_MAX_LIMIT
        if offset < 0:
            raise _bad_param(f"Invalid value for offset API parameter: {offset} was found but >= 0 is expected.")
        if offset + limit > RECORDS_MAX_WINDOW:
            raise _bad_param(f"Invalid value for sum of offset + limit API parameter: {offset + limit} was found but <= 10000 is expected.")
        sql, args, names, aggregate = self._query(params)
        cur = self.con.cursor()
        if aggregate:
            rows = cur.execute(sql, args).fetchall()
            total = len(rows)
        else:
            total = cur.execute(f"SELECT count(*) FROM ({sql})", args).fetchone()[0]
            rows = cur.execute(f"{sql} LIMIT {limit} OFFSET {offset}", args).fetchall()
        results = [{n: _jsonable(v, self.columns.get(n)) for n, v in zip(names, row)} for row in rows]
        return {"total_count": total, "results": results}

    def export(self, fmt: str, params: dict) -> Path:
        if "offset" in params:
            raise _bad_param("The offset parameter is not supported on exports.")
        limit = _int_param(params, "limit", -1)
        key = (fmt, tuple(sorted(params.items())), self.version)
        with self.lock:
            cached = self.export_cache.get(key)
            if cached and cached.exists():
                self.export_cache.move_to_end(key)
                return cached
        sql, args, names, _ = self._query(params)
        if limit >= 0:
            sql += f" LIMIT {limit}"
        if fmt == "csv" and params.get("use_labels", "false").lower() == "true":
            sql = f"SELECT {', '.join(f'{chr(34)}{n}{chr(34)} AS {chr(34)}{self.labels.get(n, n)}{chr(34)}' for n in names)} FROM ({sql})"
        delimiter = params.get("delimiter", ";")
        if fmt == "csv" and (len(delimiter) != 1 or delimiter in "'\\"):
            raise _bad_param(f"Invalid value for delimiter API parameter: {delimiter!r}.")
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=f".{fmt}")
        os.close(fd)
        target = Path(tmp)
        cur = self.con.cursor()
        if fmt == "jsonl":
            cur.execute(f"COPY ({sql}) TO '{target}' (FORMAT json)", args)
        elif fmt == "json":
            cur.execute(f"COPY ({sql}) TO '{target}' (FORMAT json, ARRAY true)", args)
            _ensure_json_array(target)
        elif fmt == "parquet":
            cur.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet)", args)
        elif fmt == "csv":
            body = target.with_suffix(".body")
            cur.execute(f"COPY ({sql}) TO '{body}' (FORMAT csv, HEADER true, DELIMITER '{delimiter}')", args)
            with open(target, "wb") as out, open(body, "rb") as src:
                if params.get("with_bom", "true").lower() == "true":
                    out.write("\ufeff".encode())
                shutil.copyfileobj(src, out, 1 << 20)
            body.unlink()
        with self.lock:
            self.export_cache[key] = target
            while len(self.export_cache) > 8:
                _, old = self.export_cache.popitem(last=False)
                old.unlink(missing_ok=True)
        return target

    def metadata(self, dataset_id: str) -> dict:
        return {
            "dataset_id": dataset_id,
            "dataset_uid": "da_spp_replica",
            "has_records": self.rows > 0,
            "data_visible": True,
            "features": ["analyze"],
            "attachments": [],
            "metas": {"default": {"title": "Expériences Services Publics + (local replica)", "records_count": self.rows,
                                  "modified": dt.datetime.fromtimestamp(self.path.stat().st_mtime, dt.timezone.utc).isoformat()}},
            "fields": [{"name": c, "label": self.labels.get(c, c), "type": self.ods_types[c], "annotations": {}, "description": None}
                       for c in self.columns],
        }


def _ensure_json_array(path: Path) -> None:
    # DuckDB writes nothing at all for an empty result; the portal sends [].
    if path.stat().st_size == 0:
        path.write_text("[]\n")


def _int_param(params: dict, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _bad_param(f"Invalid value for {name} API parameter: {raw} was found but an integer is expected.") from None


def _jsonable(value, duck_type: str | None):
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if duck_type == "JSON" and isinstance(value, str):
        return json.loads(value)
    return value


class Handler(BaseHTTPRequestHandler):
    server_version = "spp-replica/1"
    protocol_version = "HTTP/1.1"
    store: Store
    faults: Faults

    def log_message(self, fmt, *args):  # keep test output quiet; --verbose turns it back on
        if getattr(self.server, "verbose", False):
            super().log_message(fmt, *args)

    def do_GET(self):  # noqa: N802 - http.server naming
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [p for p in url.path[len(API_PREFIX):].split("/") if p] if url.path.startswith(API_PREFIX) else None
        endpoint = _endpoint(parts)
        try:
            if self.faults.apply(self, endpoint):
                return
            if parts is None or endpoint == "unknown":
                raise ApiError(404, {"error_code": "NotFound", "message": f"No route for {url.path}"})
            if not parts:
                self._json(200, {"total_count": len(DATASET_IDS), "results": [{"dataset_id": d} for d in DATASET_IDS]})
                return
            dataset = parts[0]
            if dataset not in DATASET_IDS:
                raise ApiError(404, {"error_code": "DatasetNotFound", "message": f"Dataset '{dataset}' does not exist or is not accessible."})
            self.store.refresh()
            if endpoint == "metadata":
                self._json(200, self.store.metadata(dataset))
            elif endpoint == "records":
                self._json(200, self.store.records(params))
            elif endpoint == "exports":
                self._json(200, {"links": [{"rel": f, "href": f"{API_PREFIX}/{dataset}/exports/{f}"} for f in EXPORT_FORMATS]})
            else:
                fmt = parts[2]
                if fmt not in EXPORT_FORMATS:
                    raise _bad_param(f"Invalid value for format API parameter: {fmt} is not a supported export format.")
                self._file(self.store.export(fmt, params), fmt)
        except ApiError as e:
            self._json(e.status, e.body)
        except duckdb.Error as e:
            # A query that parses but cannot run (e.g. comparing a date with text): the portal says 400.
            self._json(400, {"error_code": "ODSQLError", "message": f"ODSQL query is malformed: {str(e).splitlines()[0]}"})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, status: int, body: dict, headers: dict | None = None):
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _file(self, path: Path, fmt: str):
        content_type = {"json": "application/json", "jsonl": "application/jsonl", "csv": "text/csv; charset=utf-8",
                        "parquet": "application/vnd.apache.parquet"}[fmt]
        body = self.faults.transform(self, path)
        size = len(body) if body is not None else path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Disposition", f'attachment; filename="export-expa-c-riences.{fmt}"')
        self.end_headers()
        if body is not None:
            self.wfile.write(body)
        else:
            self.faults.stream(self, path, size)


def _endpoint(parts: list[str] | None) -> str:
    if parts is None:
        return "unknown"
    if len(parts) <= 1:
        return "metadata" if parts else "catalog"
    if parts[1] == "records" and len(parts) == 2:
        return "records"
    if parts[1] == "exports":
        return "exports" if len(parts) == 2 else ("export" if len(parts) == 3 else "unknown")
    return "unknown"


class ReplicaServer(ThreadingHTTPServer):
    def server_close(self):
        super().server_close()
        shutil.rmtree(self.store.cache_dir, ignore_errors=True)  # the cached export bodies


def make_server(data: Path, host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None,
                verbose: bool = False) -> ThreadingHTTPServer:
    store = Store(data)
    handler = type("BoundHandler", (Handler,), {"store": store, "faults": faults or Faults()})
    server = ReplicaServer((host, port), handler)
    server.daemon_threads = True
    server.verbose = verbose
    server.store = store
    return server
