"""BI outputs: a serving copy and Parquet marts that readers can hold open while syncs run, exports, the report."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap

import duckdb
import pytest

from conftest import generated, query, spp

READER = textwrap.dedent("""
    import duckdb, json, os, sys, time
    serving, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    seen, errors = set(), []
    deadline = time.monotonic() + seconds
    held = duckdb.connect(os.path.join(serving, "spp.duckdb"), read_only=True) if mode == "hold" else None
    while time.monotonic() < deadline:
        try:
            if mode == "parquet":
                folder = os.path.realpath(os.path.join(serving, "parquet"))
                con = duckdb.connect()
                a = con.execute(f"SELECT sum(experiences) FROM '{folder}/sentiment_by_month.parquet'").fetchone()[0]
                b = con.execute(f"SELECT sum(experiences) FROM '{folder}/top_countries.parquet'").fetchone()[0]
            else:
                con = held or duckdb.connect(os.path.join(serving, "spp.duckdb"), read_only=True)
                a = con.execute("SELECT count(*) FROM raw.experiences").fetchone()[0]
                b = con.execute("SELECT sum(experiences) FROM marts.sentiment_by_month").fetchone()[0]
            if a != b:
                errors.append([a, b])
            seen.add(a)
            if con is not held:
                con.close()
        except Exception as e:
            errors.append(repr(e))
        time.sleep(0.01)
    print(json.dumps({"seen": sorted(seen), "errors": errors[:5]}))
""")


def start_reader(serving, mode, seconds):
    return subprocess.Popen([sys.executable, "-c", READER, str(serving), mode, str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_readers_never_block_a_sync_and_never_see_a_mix(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    serving = tmp_path / "serving"
    assert (serving / "spp.duckdb").is_file() and (serving / "parquet" / "sentiment_by_month.parquet").is_file()
    readers = {mode: start_reader(serving, mode, 25) for mode in ("hold", "reopen", "parquet")}
    rows = replica.rows()
    counts = [len(rows)]
    for batch in range(3):
        rows += generated(50, seed=100 + batch, start_id=800_000_000 + batch * 10_000,
                          start=dt.date(2024, 12, 25), end=dt.date(2024, 12, 31))
        replica.write(rows)
        spp("sync", "--base-url", replica.url, "--db", str(db), check=True)  # never blocked by the readers
        counts.append(len(rows))
    results = {mode: json.loads(p.communicate(timeout=60)[0]) for mode, p in readers.items()}
    for mode, r in results.items():
        assert r["errors"] == [], (mode, r)
        assert set(r["seen"]) <= set(counts), (mode, r)
    assert results["hold"]["seen"] == [counts[0]]  # a reader holding the file keeps its version
    assert len(results["reopen"]["seen"]) >= 2  # a reader that reopens sees new versions
    assert len(results["parquet"]["seen"]) >= 2  # and so does one that follows the Parquet link
    assert query(serving / "spp.duckdb", "SELECT count(*) FROM raw.experiences") == [(counts[-1],)]


def test_serving_copy_contents(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    serving = tmp_path / "serving" / "spp.duckdb"
    tables = set(query(serving, "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"))
    for t in ("raw.experiences", "raw.experiences__responses", "staging.stg_experiences", "staging.stg_responses",
              "marts.experiences_by_structure", "marts.sentiment_by_month", "marts.contact_channels"):
        assert (t,) in tables
    for t in ("raw.experiences", "staging.stg_experiences", "marts.experiences_by_structure"):
        assert query(serving, f"SELECT * FROM {t} ORDER BY ALL") == query(db, f"SELECT * EXCLUDE (_row_hash, _deleted) FROM {t} ORDER BY ALL"
                                                                         if t.startswith("raw.") else f"SELECT * FROM {t} ORDER BY ALL")
    assert not list((tmp_path / "serving").glob("*.tmp"))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export(fmt, tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    out = spp("export", "--db", str(db), "--out", str(tmp_path / "x"), "--format", fmt, check=True)
    assert "wrote 8 marts" in out.stdout
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    got = duckdb.connect().execute(f"SELECT sum(experiences) FROM {reader}('{tmp_path / 'x' / ('sentiment_by_month.' + fmt)}')").fetchone()
    assert got == (600,)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM and os.environ.get("CI") != "true",
                    reason="needs Debian's chromium (`apt-get install chromium`); .ci/run installs it, and in CI this test never skips")
def test_report_renders_its_charts_in_headless_chromium(tmp_path, small_data, make_replica):
    from PIL import Image

    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    report = tmp_path / "report.html"
    spp("report", "--db", str(db), "--out", str(report), check=True)
    page = report.read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    for chart in ("months", "sentiment", "response_rate", "channels", "tags"):
        assert f'data-chart="{chart}"' in page
    png = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chromium'}", "--hide-scrollbars", "--window-size=920,2200",
                    f"--screenshot={png}", report.as_uri()], check=True, capture_output=True, timeout=120)
    image = Image.open(png).convert("RGB")
    colours = dict((rgb, n) for n, rgb in image.getcolors(maxcolors=1 << 20))
    # Every chart colour is really painted, over a real area.
    for hex_colour in ("#d1495b", "#edae49", "#00798c", "#30638e"):
        rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        assert colours.get(rgb, 0) > 2000, f"{hex_colour} barely drawn: {colours.get(rgb, 0)} pixels"


def test_standby_held_by_a_reader_is_left_alone(tmp_path, small_data, make_replica):
    """The previous version is patched into the next one, unless a reader still holds it."""
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    serving = tmp_path / "serving"
    rows = replica.rows()

    def sync_with_new_rows(k):
        rows.extend(generated(10, seed=200 + k, start_id=810_000_000 + k * 1000,
                              start=dt.date(2024, 12, 25), end=dt.date(2024, 12, 31)))
        replica.write(rows)
        spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
        return query(db, "SELECT mode FROM ops.serving_state")[0][0]

    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    held = duckdb.connect(str(serving / "spp.duckdb"), read_only=True)  # version 1
    try:
        assert sync_with_new_rows(1) == "standby"  # the standby (a copy of version 1) becomes version 2
        assert sync_with_new_rows(2) == "copy"  # the standby is now version 1, held: not written
        assert held.execute("SELECT count(*) FROM raw.experiences").fetchone()[0] == 600
        assert held.execute("SELECT sum(experiences) FROM marts.sentiment_by_month").fetchone()[0] == 600
    finally:
        held.close()
    assert sync_with_new_rows(3) == "standby"  # the standby, version 2, is free again: patched into version 4
    for f in (serving / "spp.duckdb", serving / ".spp.standby.duckdb"):
        n = query(f, "SELECT count(*) FROM raw.experiences")[0][0]
        assert query(f, "SELECT sum(experiences) FROM marts.sentiment_by_month") == [(n,)]
    assert query(serving / "spp.duckdb", "SELECT count(*) FROM raw.experiences") == [(630,)]
    assert query(serving / ".spp.standby.duckdb", "SELECT count(*) FROM raw.experiences") == [(620,)]
