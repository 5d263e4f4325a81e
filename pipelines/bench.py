"""`make bench`: our sync against the physical limit and against the usual dlt way, side by side.

For each N it generates N experiences with the replica's generator, serves them from a replica
process on loopback (export bodies precomputed, so the client is what is measured) and runs,
each in its own process so peak RSS is that case's own:

  limit      download the export to disk + DuckDB alone (read_json + unnest) into the same two tables
  ours       `spp sync` into a new database (load and model build reported separately)
  baseline   dlt's common way: one dict per experience with a nested `responses` list
  noop       `spp sync` again with nothing new
  new1pct    `spp sync` after 1% new experiences were published

Prints a table and writes it as JSON (--out). Figures, not assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HUGE_WINDOW = "100000000"  # one window, so every case reads the same (cached) export


def run_measured(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB (of that child alone, from wait4) and stdout of a child process."""
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))
    streams: dict[str, str] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: streams.__setitem__(n, f.read()))
               for n, f in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{streams['err'][-3000:]}")
    return wall, usage.ru_maxrss / 1024, streams["out"]


def case_limit(url: str, dataset: str, work: Path) -> dict:
    """Child process: download + DuckDB-native load of the same two tables."""
    import duckdb
    import httpx

    t0 = time.monotonic()
    path = work / "limit.jsonl"
    with httpx.stream("GET", f"{url}/api/explore/v2.1/catalog/datasets/{dataset}/exports/jsonl",
                      params={"timezone": "UTC"}, timeout=600) as r, open(path, "wb") as f:
        for chunk in r.iter_raw(1 << 20):
            f.write(chunk)
    t1 = time.monotonic()
    con = duckdb.connect(str(work / "limit.duckdb"))
    con.execute("CREATE SCHEMA raw")
    con.execute(f"CREATE TABLE raw.src AS SELECT * FROM read_json('{path}', format='newline_delimited')")
    slot_cols = ["intitule_typologie", "canaux_typologie", "intitule_structure", "reponse_structure"]
    parent_cols = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'src'").fetchall()
                   if not any(c.startswith(p + "_") and c[-1].isdigit() and c.count("_") for p in slot_cols + ["taux_de_similarite_reponse_ia_structure"])]
    con.execute(f"CREATE TABLE raw.experiences AS SELECT {', '.join(parent_cols)} FROM raw.src")
    structs = ", ".join(
        "{" + f"'slot': {k}, " + ", ".join(f"'{c}': {c}_{k}" for c in slot_cols)
        + f", 'taux_de_similarite_reponse_ia': taux_de_similarite_reponse_ia_structure_{k}" + "}" for k in (1, 2, 3))
    con.execute(f"""CREATE TABLE raw.experiences__responses AS
        SELECT id_experience, s.* FROM (SELECT id_experience, unnest([{structs}]) AS s FROM raw.src)
        WHERE coalesce(s.intitule_typologie, s.canaux_typologie, s.intitule_structure, s.reponse_structure) IS NOT NULL
           OR s.taux_de_similarite_reponse_ia IS NOT NULL""")
    con.execute("DROP TABLE raw.src")
    counts = con.execute("SELECT (SELECT count(*) FROM raw.experiences), (SELECT count(*) FROM raw.experiences__responses)").fetchone()
    con.close()
    t2 = time.monotonic()
    return {"download_s": t1 - t0, "load_s": t2 - t1, "rows": counts[0], "responses": counts[1]}


def case_baseline(url: str, dataset: str, work: Path) -> dict:
    """Child process: the common dlt way, one dict per experience with a nested responses list."""
    import dlt
    import httpx

    from pipelines.fields import SLOT_FIELD_RE

    def experiences():
        with httpx.stream("GET", f"{url}/api/explore/v2.1/catalog/datasets/{dataset}/exports/jsonl",
                          params={"timezone": "UTC"}, timeout=600) as r:
            page = []
            for line in r.iter_lines():
                if not line:
                    continue
                rec = json.loads(line)
                slots: dict[int, dict] = {}
                for key in list(rec):
                    m = SLOT_FIELD_RE.match(key)
                    if m:
                        value = rec.pop(key)
                        if value not in (None, ""):
                            slots.setdefault(int(m.group("slot")), {})[m.group("prefix")] = value
                rec["responses"] = [dict(slot=k, **v) for k, v in sorted(slots.items())]
                page.append(rec)
                if len(page) == 1000:
                    yield page
                    page = []
            if page:
                yield page

    pipeline = dlt.pipeline("bench_baseline", pipelines_dir=str(work / "dlt"),
                            destination=dlt.destinations.duckdb(str(work / "baseline.duckdb")), dataset_name="raw")
    t0 = time.monotonic()
    pipeline.run(dlt.resource(experiences, name="experiences", primary_key="id_experience", write_disposition="merge",
                              max_table_nesting=1), loader_file_format="parquet")
    counts = pipeline.last_trace.last_normalize_info.row_counts
    return {"load_s": time.monotonic() - t0, "rows": counts.get("experiences"), "responses": counts.get("experiences__responses")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench")
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma list of N")
    p.add_argument("--baseline-max", type=int, default=100_000, help="largest N for the (slow) baseline")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:  # inside a measured child process
        fn = {"limit": case_limit, "baseline": case_baseline}[args.case]
        print(json.dumps(fn(args.url, "export-expa-c-riences", args.work)))
        return 0
    results = []
    for n in [int(x) for x in args.sizes.split(",")]:
        results.extend(bench_size(n, args.baseline_max))
    meta = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}", "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, indent=1))
    print_table(meta)
    return 0


def bench_size(n: int, baseline_max: int) -> list[dict]:
    from pipelines.replica.generator import Generator, write_jsonl

    work = Path(tempfile.mkdtemp(prefix=f"spp-bench-{n}-"))
    rows_out = []
    try:
        data = work / "data.jsonl"
        t = time.monotonic()
        write_jsonl(Generator(seed=1).experiences(n, start=dt.date(2019, 1, 1), end=dt.date(2026, 11, 30)), data)
        print(f"N={n}: generated in {time.monotonic() - t:.1f}s ({data.stat().st_size / 1e6:.0f} MB)", file=sys.stderr)
        replica = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "replica", "--port", "0", "--data", str(data)],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        url = replica.stdout.readline().strip().rsplit(" at ", 1)[1]
        try:
            import httpx

            # Warm the replica's export cache: the client is what is measured, not the server. Streamed
            # and discarded: Linux carries the parent's peak RSS into a child's ru_maxrss at exec.
            with httpx.stream("GET", f"{url}/api/explore/v2.1/catalog/datasets/export-expa-c-riences/exports/jsonl",
                              params={"timezone": "UTC"}, timeout=600) as r:
                for _ in r.iter_raw(1 << 20):
                    pass

            def warm():
                # The replica reloads a changed data file on its next request: do that outside the timing.
                httpx.get(f"{url}/api/explore/v2.1/catalog/datasets/export-expa-c-riences", timeout=600)

            def child(case):
                wall, rss, out = run_measured([sys.executable, "-m", "pipelines.bench", "--case", case, "--url", url,
                                               "--work", str(work)])
                return wall, rss, json.loads(out.strip().splitlines()[-1])

            wall, rss, info = child("limit")
            rows_out.append({"n": n, "case": "limit", "wall_s": wall, "rows_per_s": n / wall, "peak_rss_mb": rss,
                             "load_s": info["load_s"], "download_s": info["download_s"]})
            db = work / "ours.duckdb"
            sync = [sys.executable, "-m", "pipelines.cli", "sync", "--base-url", url, "--db", str(db), "--json", "--quiet",
                    "--window-rows", HUGE_WINDOW]
            wall, rss, out = run_measured(sync)
            s = json.loads(out)
            rows_out.append({"n": n, "case": "ours", "wall_s": wall, "rows_per_s": n / wall, "peak_rss_mb": rss,
                             "load_s": s["load_seconds"], "models_s": s["models_seconds"], "serving_s": s["serving_seconds"]})
            if n <= baseline_max:
                wall, rss, info = child("baseline")
                rows_out.append({"n": n, "case": "baseline", "wall_s": wall, "rows_per_s": n / wall, "peak_rss_mb": rss,
                                 "load_s": info["load_s"]})
            warm()
            wall, rss, out = run_measured(sync)
            rows_out.append({"n": n, "case": "noop", "wall_s": wall, "rows_per_s": None, "peak_rss_mb": rss,
                             "fetched": json.loads(out)["fetched"]})
            extra = max(1, n // 100)
            with open(data, "a", encoding="utf-8") as f:
                for r in Generator(seed=2).experiences(extra, start_id=900_000_000, start=dt.date(2026, 11, 30),
                                                       end=dt.date(2026, 12, 1)):
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            warm()
            wall, rss, out = run_measured(sync)
            s = json.loads(out)
            rows_out.append({"n": n, "case": "new1pct", "wall_s": wall, "rows_per_s": None, "peak_rss_mb": rss,
                             "fetched": s["fetched"], "new": s["new"], "load_s": s["load_seconds"],
                             "models_s": s["models_seconds"], "serving_s": s["serving_seconds"]})
        finally:
            replica.terminate()
            replica.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows_out


def print_table(meta: dict) -> None:
    print(f"# {meta['date']}, {meta['machine']}")
    print(f"{'N':>9}  {'case':<9} {'wall s':>8} {'rows/s':>10} {'load s':>8} {'models s':>8} {'serving s':>9} {'peak RSS MB':>11}")
    for r in meta["results"]:
        rate = f"{r['rows_per_s']:,.0f}" if r.get("rows_per_s") else "-"
        load = f"{r['load_s']:.2f}" if r.get("load_s") is not None else "-"
        models = f"{r['models_s']:.2f}" if r.get("models_s") is not None else "-"
        serving = f"{r['serving_s']:.2f}" if r.get("serving_s") is not None else "-"
        print(f"{r['n']:>9,}  {r['case']:<9} {r['wall_s']:>8.2f} {rate:>10} {load:>8} {models:>8} {serving:>9} {r['peak_rss_mb']:>11.0f}")


if __name__ == "__main__":
    sys.exit(main())
