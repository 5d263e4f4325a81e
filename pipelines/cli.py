"""Serve: the `spp` command line (sync, models, status, query, export, report, replica).

Every failure ends in one line on stderr, `spp: error: …`, and an exit code from errors.py;
`--debug` adds the traceback. Options can also come from dlt's configuration (environment or
.dlt/config.toml), e.g. SOURCES__SPP__BASE_URL or `[sources.spp] base_url = …`; a command-line
option wins over both.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from pipelines import __version__
from pipelines import errors
from pipelines.errors import DatabaseError, QueryError, SppError, UsageError

CONFIG_KEYS = {  # option -> dlt config key
    "base_url": "sources.spp.base_url",
    "dataset": "sources.spp.dataset",
    "db": "sources.spp.db",
    "destination": "sources.spp.destination",
    "lookback_days": "sources.spp.lookback_days",
    "window_rows": "sources.spp.window_rows",
    "export_format": "sources.spp.export_format",
    "timeout": "sources.spp.timeout",
    "max_quota_wait": "sources.spp.max_quota_wait",
    "retries": "sources.spp.retries",
    "on_bad_rows": "sources.spp.on_bad_rows",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not the whole usage text."""

    def error(self, message):
        self.exit(errors.USAGE, f"spp: error: {message} (see `{self.prog} --help`)\n")


def _date(value: str) -> dt.date:
    try:
        if len(value) != 10:
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {value!r}: use YYYY-MM-DD, e.g. 2024-01-31") from None


def _bounded_int(lo: int, hi: int):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {value!r}: use a whole number from {lo} to {hi}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{n} is out of range: use a whole number from {lo} to {hi}")
        return n
    return parse


def _positive_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {value!r}") from None
    if f <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be more than 0")
    return f


def _config(name: str, cli_value, default, convert=None):
    """CLI value, else dlt config (env / config.toml), else the default."""
    if cli_value is not None:
        return cli_value
    import dlt

    value = dlt.config.get(CONFIG_KEYS[name])
    if value is None:
        return default
    if convert is not None:
        try:
            return convert(str(value))
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"configuration {CONFIG_KEYS[name]}: {e}") from None
    return value


def _db(args):
    """The DuckDB file (--db), or the lake --destination names; a lake keeps its local state
    (dlt's working folder, the sync lock) in the folder of --db."""
    from pipelines.lake import DESTINATIONS, target
    from pipelines.sync import DEFAULT_DB

    def destination(v):
        if v not in DESTINATIONS:
            raise argparse.ArgumentTypeError(f"unknown destination {v!r}: use one of {', '.join(DESTINATIONS)}")
        return v

    db = Path(_config("db", args.db, DEFAULT_DB))
    return target(_config("destination", args.destination, "duckdb", destination), db)


def build_parser() -> Parser:
    from pipelines.lake import DESTINATIONS
    from pipelines.sync import DEFAULT_BASE_URL, DEFAULT_DATASET, DEFAULT_DB, DEFAULT_LOOKBACK_DAYS, DEFAULT_WINDOW_ROWS, EXPORT_FORMATS

    p = Parser(prog="spp", description="Services Publics Plus experiences in DuckDB.")
    p.add_argument("--version", action="version", version=f"spp {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    def db_option(sp):
        sp.add_argument("--db", help=f"DuckDB file (default {DEFAULT_DB})")
        sp.add_argument("--destination", choices=DESTINATIONS,
                        help="duckdb (default: the --db file), ducklake or motherduck (settings: README, Scaling out)")

    s = sub.add_parser("sync", help="load new and changed experiences, then build the models")
    s.add_argument("--base-url", help=f"portal address (default {DEFAULT_BASE_URL})")
    s.add_argument("--dataset", help=f"dataset id (default {DEFAULT_DATASET})")
    db_option(s)
    s.add_argument("--since", type=_date, help="re-read from this send date (YYYY-MM-DD)")
    s.add_argument("--lookback-days", type=_bounded_int(0, 3650),
                   help=f"days re-read before the cursor, for late replies and edits (default {DEFAULT_LOOKBACK_DAYS})")
    s.add_argument("--full", action="store_true", help="re-read everything and remove experiences no longer published")
    s.add_argument("--window-rows", type=_bounded_int(1, 100_000_000),
                   help=f"experiences per committed window in large reads (default {DEFAULT_WINDOW_ROWS})")
    s.add_argument("--export-format", choices=EXPORT_FORMATS, help="export format to download (default jsonl)")
    s.add_argument("--timeout", type=_positive_float, help="seconds to wait for the portal per request (default 60)")
    s.add_argument("--max-quota-wait", type=_positive_float,
                   help="longest wait in seconds for a quota reset before failing (default 900)")
    s.add_argument("--retries", type=_bounded_int(0, 20),
                   help="retries of a failed request (timeouts, resets, 429, 5xx) before giving up (default 5)")
    s.add_argument("--on-bad-rows", choices=("fail", "quarantine"),
                   help="a value that does not fit its field: stop the run (default) or set the row aside in raw.rejected_rows")
    s.add_argument("--no-models", action="store_true", help="load only; do not rebuild the SQL models")
    s.add_argument("--quiet", action="store_true", help="print only the summary line (errors still go to stderr)")
    s.add_argument("--json", action="store_true", help="print the run summary as JSON")

    m = sub.add_parser("models", help="(re)build the SQL models and run their data tests")
    db_option(m)
    m.add_argument("--list", action="store_true", help="list the models with their descriptions; build nothing")

    st = sub.add_parser("status", help="cursor, last runs and row counts")
    db_option(st)
    st.add_argument("--runs", type=_bounded_int(1, 1000), default=5, help="how many recent runs to show (default 5)")

    q = sub.add_parser("query", help="run SQL against the database (read-only)")
    q.add_argument("sql", help="the SQL statement")
    db_option(q)
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.add_argument("--write", action="store_true", help="open the database read-write (for DDL/DML)")

    e = sub.add_parser("export", help="write every mart to a folder, as Parquet or CSV")
    db_option(e)
    e.add_argument("--out", type=Path, default=Path("data/export"), help="folder (default data/export)")
    e.add_argument("--format", choices=("parquet", "csv"), default="parquet")

    rp = sub.add_parser("report", help="write a self-contained HTML report with charts")
    db_option(rp)
    rp.add_argument("--out", type=Path, default=Path("data/report.html"), help="HTML file (default data/report.html)")

    r = sub.add_parser("replica", help="serve a local replica of the Explore API v2.1")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=_bounded_int(0, 65535), default=8765, help="port (0: any free port)")
    r.add_argument("--data", type=Path, help="experiences as JSON lines, .gz allowed (default: the bundled sample)")
    r.add_argument("--faults", type=Path, help="fault plan (JSON), see pipelines/replica/faults.py")
    r.add_argument("--verbose", action="store_true", help="log every request")
    return p


# -- commands

def cmd_sync(args) -> int:
    from pipelines.sync import (DEFAULT_BASE_URL, DEFAULT_DATASET, DEFAULT_LOOKBACK_DAYS, DEFAULT_WINDOW_ROWS,
                                EXPORT_FORMATS, SyncOptions, sync)

    if args.full and args.since:
        raise UsageError("--full and --since do not go together: --full already re-reads everything")

    def fmt(v):
        if v not in EXPORT_FORMATS:
            raise argparse.ArgumentTypeError(f"unknown export format {v!r}: use one of {', '.join(EXPORT_FORMATS)}")
        return v

    def bad_rows(v):
        if v not in ("fail", "quarantine"):
            raise argparse.ArgumentTypeError(f"unknown value {v!r}: use fail or quarantine")
        return v

    opts = SyncOptions(
        db=_db(args),
        base_url=_config("base_url", args.base_url, DEFAULT_BASE_URL),
        dataset=_config("dataset", args.dataset, DEFAULT_DATASET),
        since=args.since,
        lookback_days=_config("lookback_days", args.lookback_days, DEFAULT_LOOKBACK_DAYS, _bounded_int(0, 3650)),
        full=args.full,
        window_rows=_config("window_rows", args.window_rows, DEFAULT_WINDOW_ROWS, _bounded_int(1, 100_000_000)),
        export_format=_config("export_format", args.export_format, "jsonl", fmt),
        timeout=_config("timeout", args.timeout, 60.0, _positive_float),
        max_quota_wait=_config("max_quota_wait", args.max_quota_wait, 900.0, _positive_float),
        retries=_config("retries", args.retries, 5, _bounded_int(0, 20)),
        on_bad_rows=_config("on_bad_rows", args.on_bad_rows, "fail", bad_rows),
        build_models=not args.no_models,
    )
    summary = sync(opts)
    print(json.dumps(summary.as_dict()) if args.json else summary.line(), flush=True)
    return errors.OK


def cmd_models(args) -> int:
    from pipelines.models import build_models, discover, discover_tests

    if args.list:
        for m in discover():
            print(f"{m.qualified:<45} {m.kind.lower():<5} {m.description}")
        for name, _, desc in discover_tests():
            print(f"{'test ' + name:<45} {'test':<5} {desc}")
        return errors.OK
    db = _db(args)
    if not db.exists():
        raise DatabaseError(f"no database at {db}: run `spp sync` first")
    from pipelines.sync import check_db_path, db_lock

    if isinstance(db, Path):
        check_db_path(db)
    from pipelines.serve import publish

    with db_lock(db):
        # The explicit command rebuilds everything from scratch (a sync builds incrementally).
        models = build_models(db, full=True)
        out = publish(db, full=True)
    where = f"serving copy in {out}" if isinstance(out, Path) else out
    print(f"built {len(models)} models and passed {len(discover_tests())} data tests in {db}; {where}")
    return errors.OK


def _open_read_only(db, published: bool = True):
    from pipelines.database import connect

    if not isinstance(db, Path):
        return connect(db, read_only=True, published=published)
    if not db.exists():
        raise DatabaseError(f"no database at {db}: run `spp sync` first (or give --db)")
    if db.is_dir():
        raise DatabaseError(f"--db {db} is a directory; give the DuckDB file")
    return connect(db, read_only=True)


def cmd_status(args) -> int:
    from pipelines.database import table_exists

    db = _db(args)
    con = _open_read_only(db, published=False)
    try:
        print(f"database: {db}")
        if not table_exists(con, "raw", "experiences"):
            print("no experiences loaded yet: run `spp sync`")
            return errors.OK
        cursor, undated = con.execute(
            "SELECT max(ecrit_le) FILTER (WHERE ecrit_le <= current_date + 1), count(*) FILTER (WHERE ecrit_le IS NULL) "
            "FROM raw.experiences").fetchone()
        print(f"cursor (latest send date loaded): {cursor or 'none'}")
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema IN ('raw', 'staging', 'intermediate', 'marts') AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\' "
            "AND table_type = 'BASE TABLE' ORDER BY 1, 2").fetchall()
        print("rows:")
        for schema, name in tables:
            n = con.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()[0]
            extra = f"  ({undated} without send date)" if (schema, name) == ("raw", "experiences") and undated else ""
            print(f"  {schema}.{name:<40} {n:>10}{extra}")
        if table_exists(con, "ops", "sync_runs"):
            runs = con.execute(
                "SELECT finished_at, mode, fetched, new, updated, removed, unchanged, cursor_before, cursor_after, duration_seconds "
                "FROM ops.sync_runs ORDER BY finished_at DESC LIMIT ?", [args.runs]).fetchall()
            print("last runs:")
            for r in runs:
                print(f"  {r[0]:%Y-%m-%d %H:%M:%S} {r[1]:<11} fetched {r[2]}, new {r[3]}, updated {r[4]}, removed {r[5]}, "
                      f"unchanged {r[6]} | cursor {r[7] or 'none'} -> {r[8] or 'none'} | {r[9]:.1f}s")
    finally:
        con.close()
    return errors.OK


def cmd_query(args) -> int:
    import duckdb

    db = _db(args)
    if args.write:
        if not db.exists():
            raise DatabaseError(f"no database at {db}: run `spp sync` first (or give --db)")
        from pipelines.database import connect

        con = connect(db)
    else:
        con = _open_read_only(db)
    try:
        try:
            rel = con.sql(args.sql)
        except duckdb.Error as e:
            raise QueryError(_sql_error(e, args.write)) from None
        if rel is None:
            print("ok")
            return errors.OK
        try:
            columns, rows = rel.columns, rel.fetchall()
        except duckdb.Error as e:
            raise QueryError(_sql_error(e, args.write)) from None
    finally:
        con.close()
    out = sys.stdout
    if args.format == "csv":
        w = csv.writer(out)
        w.writerow(columns)
        w.writerows(rows)
    elif args.format == "json":
        json.dump([dict(zip(columns, r)) for r in rows], out, ensure_ascii=False, default=str, indent=1)
        out.write("\n")
    else:
        _print_table(columns, rows)
    return errors.OK


def _sql_error(e: Exception, write: bool) -> str:
    first = str(e).splitlines()[0]
    if "read-only" in first.lower() and not write:
        return f"{first} (spp query opens the database read-only; add --write to change it)"
    return f"SQL error: {first}"


def _print_table(columns, rows, max_width: int = 60):
    def cell(v):
        s = "NULL" if v is None else str(v)
        s = s.replace("\n", " ")
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def cmd_replica(args) -> int:
    from pipelines.replica.faults import Faults
    from pipelines.replica.generator import DATA_DIR
    from pipelines.replica.server import make_server

    data = args.data or DATA_DIR / "experiences_sample.jsonl.gz"
    if not Path(data).is_file():
        raise UsageError(f"--data {data}: no such file")
    try:
        faults = Faults.from_file(args.faults) if args.faults else None
    except (OSError, ValueError) as e:
        raise UsageError(f"--faults {args.faults}: {e}") from None
    try:
        server = make_server(Path(data), args.host, args.port, faults, verbose=args.verbose)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror}; choose another --port") from None
    import signal

    def stop(*_):
        raise KeyboardInterrupt

    # SIGTERM (how tests and service managers stop it) ends serve_forever, so the cache is removed.
    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print(f"replica serving {server.store.rows} experiences from {data} at http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return errors.OK


def cmd_export(args) -> int:
    from pipelines.serve import export

    db = _db(args)
    _open_read_only(db).close()  # the same clear errors as query/status for a missing or busy file
    written = export(db, args.out, args.format)
    print(f"wrote {len(written)} marts to {args.out}: {', '.join(p.name for p in written)}")
    return errors.OK


def cmd_report(args) -> int:
    from pipelines.report import build

    out = build(_db(args), args.out)
    print(f"report written to {out}")
    return errors.OK


COMMANDS = {"sync": cmd_sync, "export": cmd_export, "report": cmd_report, "models": cmd_models, "status": cmd_status, "query": cmd_query, "replica": cmd_replica}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.DEBUG if args.debug else (logging.WARNING if quiet else logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.debug and os.environ.get("RUNTIME__LOG_LEVEL") == "CRITICAL":  # our default, not the user's
        os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    if not args.debug:
        # Per-request lines from httpx and dlt's schema chatter drown the progress lines.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("dlt").setLevel(logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except SppError as e:
        if args.debug:
            traceback.print_exc()
        print(f"spp: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("spp: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: keep it to one line unless asked
        if args.debug:
            traceback.print_exc()
        if (oom := errors.out_of_memory(e)) is not None:
            print(f"spp: error: {oom}", file=sys.stderr)
            return oom.exit_code
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"spp: unexpected error: {type(e).__name__}: {first} (run again with --debug and report it)", file=sys.stderr)
        return errors.FAILED


if __name__ == "__main__":
    sys.exit(main())
