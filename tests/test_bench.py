"""The benchmark script keeps working (a small N; figures are printed, not asserted)."""

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_runs_every_case(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pipelines.bench", "--sizes", "1500", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())["results"]
    by_case = {r["case"]: r for r in results}
    assert set(by_case) == {"limit", "ours", "baseline", "noop", "new1pct"}
    assert all(r["wall_s"] > 0 and r["peak_rss_mb"] > 0 for r in results)
    assert by_case["new1pct"]["new"] == 15
    assert 0 < by_case["noop"]["fetched"] < 1500  # only the lookback window is re-read
    assert "ours" in proc.stdout and "baseline" in proc.stdout
