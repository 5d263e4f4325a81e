"""Crash safety and overlapping runs: real sync processes killed with SIGKILL at known points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, assert_matches_replica, query, spp, table_dump


def start_paused(args: list[str], pause_at: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT,
                            env=dict(os.environ, SPP_PAUSE_AT=pause_at),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if f"paused at {pause_at}" in line:
            return proc
    proc.wait()
    raise AssertionError(f"sync never reached {pause_at}: exit {proc.returncode}\n{proc.stdout.read()}")


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.mark.parametrize("first_sync", [True, False], ids=["initial", "incremental"])
@pytest.mark.parametrize("point", ["download:1", "normalise:1", "load:1", "models:stg_experiences",
                                   "models:experiences_by_structure", "serving"])
def test_sigkill_then_resync_equals_clean_run(point, first_sync, tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    clean, crashed = tmp_path / "clean.duckdb", tmp_path / "crashed.duckdb"
    rows = replica.rows()
    if not first_sync:
        # Both databases start from the same synced state; then the portal changes.
        for db in (clean, crashed):
            spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
        recent = sorted((r for r in rows if r["ecrit_le"]), key=lambda r: r["ecrit_le"])[-5:]
        recent[0]["reponse_structure_1"] = "Réponse arrivée tard."
        recent[1]["intitule_structure_2"] = "CAF du Nord"
        rows.remove(recent[2])
        replica.write(rows)
    spp("sync", "--base-url", replica.url, "--db", str(clean), check=True)
    kill(start_paused(["sync", "--base-url", replica.url, "--db", str(crashed)], point))
    out = spp("sync", "--base-url", replica.url, "--db", str(crashed), "--json", check=True)
    # Killed after normalising, the load package was complete but not loaded: the next run loads it first.
    resumed = json.loads(out.stdout)["resumed_pending_load"]
    if point == "load:1":
        assert resumed is True
    elif point == "download:1" or point.startswith("models:"):
        assert resumed is False
    assert table_dump(crashed) == table_dump(clean)
    assert_matches_replica(crashed, rows)
    # The serving copy for BI tools caught up too.
    serving = crashed.parent / "serving-crashed" / "spp.duckdb"
    assert query(serving, "SELECT count(*) FROM raw.experiences") == [(len(rows),)]
    assert query(serving, "SELECT sum(experiences) FROM marts.sentiment_by_month") == [(len(rows),)]


def test_interrupted_backfill_resumes_after_last_committed_window(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    kill(start_paused(["sync", "--base-url", replica.url, "--db", str(db), "--window-rows", "100"], "download:4"))
    committed = table_dump(db)["raw.experiences"]
    assert 250 <= len(committed) <= 350  # three windows of about 100
    out = spp("sync", "--base-url", replica.url, "--db", str(db), "--window-rows", "100", "--lookback-days", "0", "--json", check=True)
    s = json.loads(out.stdout)
    assert s["fetched"] < len(replica.rows())  # it did not start over
    assert s["new"] == len(replica.rows()) - len(committed)
    assert_matches_replica(db, replica.rows())


def test_overlapping_sync_exits_at_once_and_changes_nothing(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    before = table_dump(db)
    first = start_paused(["sync", "--base-url", replica.url, "--db", str(db), "--full"], "download:1")
    try:
        second = spp("sync", "--base-url", replica.url, "--db", str(db), timeout=30)
        assert second.returncode == 75
        assert "already running" in second.stderr and str(first.pid) in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert table_dump(db) == before
    finally:
        kill(first)
    # The dead process's lock does not block the next run.
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    assert table_dump(db) == before


def test_quiet_prints_only_the_summary(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    out = spp("sync", "--base-url", replica.url, "--db", str(tmp_path / "q.duckdb"), "--quiet", check=True)
    assert out.stderr == ""
    assert out.stdout.count("\n") == 1 and out.stdout.startswith("sync initial ok: fetched 600, new 600")
