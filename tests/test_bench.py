"""The load bench still runs: `bench/load.py --quick` end to end, checked for correctness.

A few calls for a few seconds through a real `hypercorn --worker-class trio` process,
the bench model and a load generator, so the bench cannot rot. Timings are the bench's
business, never asserted here; what is asserted is that every frame arrived, in
order, and no audio of an interrupted response reached the caller after `clear`.
The same once more with the trio reference bridge (`--server reference-trio`), which
the bench measures for comparison, and `--compare` (two servers back to back) once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "load.py"


@pytest.mark.slow
@pytest.mark.parametrize("server", ["callbridge", "reference-trio"])
def test_quick_load_run_is_intact(tmp_path: Path, server: str) -> None:
    extra, name = ([], "quick") if server == "callbridge" else (["--server", server],
                                                                 f"quick-{server}")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--no-wait-quiet", "--out", str(tmp_path),
         *extra],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert {"machine", "config", "steps", "capacity", "command"} <= result.keys()
    assert (tmp_path / f"{name}.md").exists()
    step = result["steps"][0]
    for key in ("c2m", "m2c", "barge_in", "frames", "server_cpu_pct", "cpu_pct_per_call",
                "rss_per_call_kib", "lateness", "verdict"):
        assert key in step
    frames = step["frames"]
    assert step["calls_run"] == 4 and step["calls_failed"] == 0, step["call_errors"]
    assert frames["c2m_sent"] > 0 and frames["m2c_sent"] > 0
    assert frames["c2m_lost"] == 0 and frames["m2c_lost"] == 0
    assert frames["c2m_reordered"] == 0 and frames["m2c_reordered"] == 0
    assert frames["stale_after_clear"] == 0 and frames["foreign"] == 0
    assert step["barge_in"]["truncate_errors"] == 0
    assert step["barge_in"]["clears_unexplained"] == 0
    assert step["c2m"]["n"] > 0 and step["m2c"]["n"] > 0


@pytest.mark.slow
def test_quick_compare_writes_the_ratio_table(tmp_path: Path) -> None:
    """`--quick --compare A,B`: both servers run on the same step, one JSON and Markdown
    hold both runs and the ratio table; figures are checked for presence, never value."""
    servers = ["callbridge-asgi", "reference-trio"]
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--no-wait-quiet", "--out", str(tmp_path),
         "--compare", ",".join(servers)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # no reference-asyncio in the list: the ratios are against the first server
    assert "## Ratios against `callbridge-asgi`" in proc.stdout, proc.stdout
    result = json.loads((tmp_path / "compare-quick.json").read_text())
    assert {"machine", "config", "command", "runs", "compare"} <= result.keys()
    assert list(result["config"]["servers"]) == servers
    runs = result["runs"]
    assert [(r["server"], r["round"], r["calls"]) for r in runs] == [
        (s, 1, 4) for s in servers]
    for run in runs:
        assert "error" not in run, run.get("error_detail")
        assert run["calls_run"] == 4 and run["calls_failed"] == 0, run["call_errors"]
        frames = run["frames"]
        assert frames["c2m_sent"] > 0 and frames["m2c_sent"] > 0
        assert frames["c2m_lost"] == 0 and frames["m2c_lost"] == 0
        assert frames["stale_after_clear"] == 0 and frames["foreign"] == 0
        for key in ("worker_pids", "worker_cpu_pct", "worker_cpu_share", "worker_calls"):
            assert len(run[key]) == len(run["worker_pids"]) >= 1, key
    cmp = result["compare"]
    assert cmp["baseline"] == "callbridge-asgi" and cmp["rounds"] == 1
    assert [(r["server"], r["calls"]) for r in cmp["table"]] == [(s, 4) for s in servers]
    for row in cmp["table"]:
        for key in ("cpu_pct_per_call", "cpu_ratio", "c2m_p99", "m2c_p99", "barge_in_p99",
                    "rss_per_call_kib", "lost", "stale", "passed"):
            assert key in row, key
        assert row["runs"] == 1 and row["lost"] == 0 and row["stale"] == 0
        if row["server"] == "callbridge-asgi" and row["cpu_pct_per_call"]:
            assert row["cpu_ratio"] == 1.0
    assert "largest_passing" not in cmp  # one step: nothing to rank
    md = (tmp_path / "compare-quick.md").read_text()
    assert "## Ratios against `callbridge-asgi`" in md and "## Every run" in md
    for server in servers:
        assert f"| 4 | {server} |" in md


def test_the_in_process_bench_runs_and_every_frame_comes_back() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH.with_name("inprocess.py")), "--frames", "300",
         "--repeat", "1", "--keep", "nothing", "all", "--backend", "openai", "vapi"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"300 frames each way, {backend}, keeping {keep}"
        for backend in ("openai", "vapi") for keep in ("nothing", "all")]
    assert all("caller_hangup" in line for line in lines), lines
