"""Bench results: merge what the peers saw, check it, and write JSON, Markdown and PNG.

Pure functions over the peers' summaries (see `_gen.py` and `_model.py`) plus the
writers; no processes, no sockets. The PNG needs matplotlib (the `bench` extra);
without it the plot is skipped and the report says so.
"""

from __future__ import annotations

import bisect
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def _upper_ms(b: int) -> float:
    """Upper edge of histogram bucket `b` (see `_wire.Hist`: 10 µs to 100 ms, then 10 ms)."""
    return (b + 1) * 0.01 if b < 10000 else (b - 9990 + 1) * 10.0


#: the issue's targets
TARGET_P99_MS = 20.0
TARGET_BARGE_P99_MS = 5.0
TARGET_CPU_PER_CALL = 0.33
TARGET_RSS_PER_CALL_KIB = 250.0
#: the generator is late by more than this at p99, or its core is this busy: saturated
SATURATED_LATENESS_MS = 5.0
SATURATED_LOAD_CPU = 90.0
#: processes that are not ours used more CPU than this during the window: figures disturbed
DISTURBED_OTHER_CPU = 10.0


# --- histograms ------------------------------------------------------------------------

def merge_hists(dumps: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for d in dumps:
        for k, v in d["buckets"].items():
            counts[int(k)] = counts.get(int(k), 0) + v
    return counts


def hist_stats(dumps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """n, p50, p99 (upper edge of their bucket) and exact max, in ms."""
    counts = merge_hists(dumps)
    n = sum(counts.values())
    mx = max((d["max"] for d in dumps), default=0.0) * 1000
    if not n:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    out: dict[str, Any] = {"n": n}
    keys = sorted(counts)
    for name, q in (("p50", 0.50), ("p99", 0.99)):
        target = q * n
        acc = 0
        for k in keys:
            acc += counts[k]
            if acc >= target:
                out[name] = round(min(_upper_ms(k), mx), 3)
                break
    out["max"] = round(mx, 3)
    return out


def values_stats(values: Sequence[float]) -> dict[str, Any]:
    """The same figures from a list of seconds."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    v = sorted(values)
    n = len(v)

    def q(p: float) -> float:
        return round(v[min(n - 1, max(0, int(p * n + 0.999999) - 1))] * 1000, 3)

    return {"n": n, "p50": q(0.5), "p99": q(0.99), "max": round(v[-1] * 1000, 3)}


# --- one step ----------------------------------------------------------------------------

def analyze(gens: Sequence[Mapping[str, Any]], model: Mapping[str, Any],
            window: tuple[float, float]) -> dict[str, Any]:
    """Check every frame both ways and collect the latencies of one run."""
    t0, t1 = window
    gcalls: dict[str, Mapping[str, Any]] = {}
    for g in gens:
        gcalls.update(g["calls"])
    mcalls = model["calls"]
    f = {"c2m_sent": 0, "c2m_received": 0, "c2m_lost": 0, "c2m_reordered": 0,
         "c2m_duplicated": 0, "m2c_sent": 0, "m2c_received": 0, "m2c_lost": 0,
         "m2c_reordered": 0, "stale_after_clear": 0, "foreign": 0,
         "discarded_by_barge_in": 0, "late_deltas_dropped": 0}
    reactions: list[float] = []
    barges_in_window = 0
    barges_without_clear = 0
    clears_unexplained = 0
    truncates = truncate_errors = truncate_beyond_sent = cancels = 0
    errors: dict[str, int] = {}
    for cid, g in gcalls.items():
        m = mcalls.get(cid, {"received": 0, "gaps": 0, "reorders": 0, "resps": [],
                             "barges": [], "truncates": 0, "truncate_bad": 0,
                             "truncate_beyond_sent": 0, "cancels": 0})
        if g["error"]:
            key = g["error"].split(":")[0]
            errors[key] = errors.get(key, 0) + 1
        f["c2m_sent"] += g["sent"]
        f["c2m_received"] += m["received"]
        f["c2m_lost"] += max(0, g["sent"] - m["received"], m["gaps"])
        f["c2m_duplicated"] += max(0, m["received"] - g["sent"])
        f["c2m_reordered"] += m["reorders"]
        f["m2c_reordered"] += g["gaps"]
        f["stale_after_clear"] += g["stale"]
        f["foreign"] += g["foreign"]
        rx = g["rx"]
        for r, sent, pre, interrupted in m["resps"]:
            got = rx.get(str(r), 0)
            f["m2c_sent"] += sent
            if interrupted:
                if got > pre:  # frames sent after speech_started reached the caller
                    f["stale_after_clear"] += got - pre
                    got = pre
                f["discarded_by_barge_in"] += pre - got
                f["late_deltas_dropped"] += sent - pre
            else:
                f["m2c_lost"] += max(0, sent - got)
            f["m2c_received"] += got
        truncates += m["truncates"]
        truncate_errors += m["truncate_bad"]
        truncate_beyond_sent += m["truncate_beyond_sent"]
        cancels += m["cancels"]
        barges = sorted(m["barges"])
        clears = g["clears"]
        matched = set()
        for tc in clears:
            i = bisect.bisect_right(barges, tc) - 1
            if i < 0 or tc - barges[i] > 10.0:  # a clear no barge-in explains
                clears_unexplained += 1
                continue
            matched.add(i)
            if t0 <= barges[i] <= t1:
                reactions.append(tc - barges[i])
        for i, tb in enumerate(barges):
            if t0 <= tb <= t1:
                barges_in_window += 1
                if i not in matched:
                    barges_without_clear += 1
    worst = sorted((g.get("max_m2c_ms", 0.0) for g in gcalls.values()), reverse=True)
    return {
        "calls_run": len(gcalls),
        # is a bad m->c tail spread over all calls or a few? (worst call first)
        "m2c_max_per_call_ms": worst[:10],
        "calls_with_m2c_over_20ms": sum(1 for w in worst if w > TARGET_P99_MS),
        "calls_failed": sum(errors.values()),
        "call_errors": errors,
        "c2m": hist_stats([model["lat_c2m"]]),
        "m2c": hist_stats([g["lat_m2c"] for g in gens]),
        "barge_in": {**values_stats(reactions), "in_window": barges_in_window,
                     "without_clear": barges_without_clear,
                     "clears_unexplained": clears_unexplained,
                     "truncates": truncates, "truncate_errors": truncate_errors,
                     "truncate_beyond_sent": truncate_beyond_sent, "cancels_sent": cancels},
        "frames": f,
        "lateness": hist_stats([g["lateness"] for g in gens]),
        "peer_errors": [e for g in gens for e in g["errors"]][:10] + list(model["errors"][:10]),
        "model_unknown_events": model["unknown"],
        "model_connections": model["connections"],
        "model_open_at_end": model["open"],
    }


def verdict(step: Mapping[str, Any]) -> dict[str, Any]:
    """Holds p99 <= 20 ms both ways with zero loss (and nothing else broken)?"""
    reasons = []
    fr = step["frames"]
    for way in ("c2m", "m2c"):
        p99 = step[way]["p99"]
        if p99 is None or p99 > TARGET_P99_MS:
            reasons.append(f"{way} p99 {p99} ms > {TARGET_P99_MS:g}")
    lost = fr["c2m_lost"] + fr["m2c_lost"]
    if lost:
        reasons.append(f"{lost} frames lost")
    if fr["c2m_reordered"] + fr["m2c_reordered"] + fr["c2m_duplicated"]:
        reasons.append("frames reordered or duplicated")
    if fr["stale_after_clear"] or fr["foreign"]:
        reasons.append(f"{fr['stale_after_clear']} stale, {fr['foreign']} foreign frames")
    if step["calls_failed"]:
        reasons.append(f"{step['calls_failed']} calls failed: {step['call_errors']}")
    if step["barge_in"]["truncate_errors"] or step["barge_in"]["clears_unexplained"]:
        reasons.append("bad truncations or unexplained clears")
    # correctness alone (no timing): what the smoke test and the exit status rely on
    correct = not any("p99" not in r for r in reasons)
    lateness = step["lateness"]["p99"] or 0.0
    saturated = lateness > SATURATED_LATENESS_MS or step.get("load_cpu_pct", 0) > SATURATED_LOAD_CPU
    targets = {
        "p99_latency": not any("p99" in r for r in reasons),
        "zero_loss": lost == 0,
        "barge_in_p99": (step["barge_in"]["p99"] or 0.0) <= TARGET_BARGE_P99_MS,
        "cpu_per_call": (step.get("cpu_pct_per_call") or 1e9) <= TARGET_CPU_PER_CALL,
        "rss_per_call": (step.get("rss_per_call_kib") or 1e9) <= TARGET_RSS_PER_CALL_KIB,
    }
    disturbed = step.get("other_cpu_pct", 0) > DISTURBED_OTHER_CPU
    return {"pass": not reasons, "correct": correct, "reasons": reasons,
            "generator_saturated": saturated,
            "disturbed": disturbed, "targets": targets}


# --- the machine -------------------------------------------------------------------------

def machine(src: Path | None) -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("trio", "hypercorn", "wsproto", "h11", "trio-websocket", "quart", "quart-trio",
                 "cattrs", "attrs", "callbridge"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    root = src.parent if src is not None else Path(__file__).resolve().parent.parent
    rev = _git(root, "rev-parse", "--short", "HEAD")
    dirty = _git(root, "status", "--porcelain", "--", "src") if rev else ""
    if src is not None and (root / "REVISION").exists():  # an export: `git archive` + REVISION
        rev, dirty = (root / "REVISION").read_text().strip(), ""
    return {
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "versions": versions,
        "callbridge_src": str(src or "installed"),
        "callbridge_rev": (rev + ("+dirty" if dirty else "")) if rev else "unknown",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --- writing -----------------------------------------------------------------------------

def _ms(s: Mapping[str, Any]) -> str:
    if not s.get("n"):
        return "–"
    return f"{s['p50']:.2f} / {s['p99']:.2f} / {s['max']:.1f}"


def _num(x: Any, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def _header(result: Mapping[str, Any]) -> list[str]:
    m = result["machine"]
    cfg = result["config"]
    lines = [f"# callbridge load bench: {result['title']}", "",
             f"`{result['command']}`", "",
             f"- machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
             f"Python {m['python']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
             f"- callbridge: {m['callbridge_rev']} ({m['callbridge_src']})"]
    servers = cfg.get("servers")
    if servers:
        lines += [f"- server `{k}`: `{v}`" for k, v in servers.items()]
    elif cfg.get("server"):
        lines.append(f"- server: `{cfg['server']}`")
    lines += [f"- pinning: {cfg['pinning']}; {cfg['workers']} worker(s); "
              f"{cfg['duration']:g} s measured per step after ramp-up; seed {cfg['seed']}"
              + (f"; calls last ~{cfg['churn_s']:g} s, then new ones dial"
                 if "churn_s" in cfg else ""),
              f"- date: {m['date']}", ""]
    return lines


#: leading columns of a table of runs: (header, value of a run)
Columns = Sequence[tuple[str, Any]]


def _steps_table(steps: Sequence[Mapping[str, Any]], lead: Columns = ()) -> list[str]:
    lines = [
        "| " + "".join(f"{h} | " for h, _ in lead)
        + "calls | server CPU % | CPU %/call | calls/core | c→m p50 / p99 / max ms "
        "| m→c p50 / p99 / max ms | barge-in p50 / p99 ms (n) | lost | reord. | stale "
        "| discarded by barge-in | RSS/call KiB | gen. late p99 ms | load CPU % | verdict |",
        "|" + "---|" * (15 + len(lead)),
    ]
    for s in steps:
        cells = "".join(f"{f(s)} | " for _, f in lead)
        if "error" in s:  # the run itself failed (compare mode goes on)
            lines.append(f"| {cells}{s['calls']} |" + " – |" * 13 + f" FAIL: {s['error']} |")
            continue
        fr = s["frames"]
        v = s["verdict"]
        b = s["barge_in"]
        verdict_text = "ok" if v["pass"] else "FAIL: " + "; ".join(v["reasons"])
        if v["generator_saturated"]:
            verdict_text += " (generator saturated)"
        if v.get("disturbed"):
            verdict_text += f" (disturbed: other processes used {s['other_cpu_pct']:.0f} % CPU)"
        lines.append(
            f"| {cells}{s['calls']} | {_num(s['server_cpu_pct'])} "
            f"| {_num(s['cpu_pct_per_call'], '{:.3f}')} "
            f"| {_num(s['calls_per_core'], '{:.0f}')} | {_ms(s['c2m'])} | {_ms(s['m2c'])} "
            f"| {_num(b['p50'], '{:.2f}')} / {_num(b['p99'], '{:.2f}')} ({b['n']}) "
            f"| {fr['c2m_lost'] + fr['m2c_lost']} "
            f"| {fr['c2m_reordered'] + fr['m2c_reordered']} | {fr['stale_after_clear']} "
            f"| {fr['discarded_by_barge_in']} | {_num(s['rss_per_call_kib'])} "
            f"| {_num(s['lateness']['p99'], '{:.2f}')} | {_num(s['load_cpu_pct'])} "
            f"| {verdict_text} |")
    lines.append("")
    return lines


def _workers_table(steps: Sequence[Mapping[str, Any]], lead: Columns = ()) -> list[str]:
    """Each worker's CPU, its share of the workers' CPU and the calls it held (when the
    run recorded them): whether the calls spread evenly over the workers."""
    multi = [s for s in steps if len(s.get("worker_cpu_pct") or []) > 1]
    if not multi:
        return []
    lines = ["How the calls spread over the workers (under hypercorn and uvicorn the kernel "
             "hands each new connection to whichever worker accepts first): each worker's "
             "CPU %, its share of the workers' CPU, and the calls (connections to the "
             "server's port) it held at N:",
             "",
             "| " + "".join(f"{h} | " for h, _ in lead)
             + "calls | worker pids | worker CPU % | CPU share | calls per worker "
             "| generator CPU % | model CPU % |",
             "|" + "---|" * (7 + len(lead))]
    for s in multi:
        cells = "".join(f"{f(s)} | " for _, f in lead)
        pids = s.get("worker_pids")
        share = s.get("worker_cpu_share")
        calls = s.get("worker_calls")
        lines.append(
            f"| {cells}{s['calls']} | {' / '.join(map(str, pids)) if pids else '–'} "
            f"| {' / '.join(f'{w:.0f}' for w in s['worker_cpu_pct'])} "
            f"| {' / '.join(_num(x, '{:.0%}') for x in share) if share else '–'} "
            f"| {' / '.join(_num(x, '{}') for x in calls) if calls else '–'} "
            f"| {_num(s.get('generator_cpu_pct'))} | {_num(s.get('model_cpu_pct'))} |")
    lines.append("")
    return lines


FIGURES_NOTE = (
    "Figures: latency is bridge-added one-way time from the sender's stamp to the "
    "receiver's read, both ways, over loopback (it includes the kernel and the peers' "
    "own scheduling: an upper bound). barge-in = `speech_started` sent by the model "
    "→ `clear` read by the caller. CPU is the server's process time over wall time "
    "(100 % = one core); calls/core = 100 / (CPU %/call). RSS/call = (workers' RSS "
    "at N − idle) / N. Lost counts frames that never arrived both ways; "
    "discarded by barge-in = model audio queued in the bridge when the caller "
    "interrupted (dropped on purpose); stale = audio of an interrupted response "
    "played after `clear` (a bug). See bench/README.md.")


def markdown(result: Mapping[str, Any]) -> str:
    if result.get("compare"):
        return compare_markdown(result)
    lines = _header(result)
    steps = result.get("steps") or []
    if steps:
        lines += _steps_table(steps)
    lines += _workers_table(steps)
    cap = result.get("capacity")
    if cap:
        lines += ["## Capacity", ""]
        for k, v in cap.items():
            lines.append(f"- {k.replace('_', ' ')}: {v}")
        lines.append("")
    soak = result.get("soak")
    if soak:
        lines += ["## Soak", "", f"- {soak['summary']}", "",
                  "| t s | active calls | RSS workers MiB | open fds | server CPU % |",
                  "|---|---|---|---|---|"]
        for row in soak["samples"]:
            lines.append(f"| {row['t']:.0f} | {row['active_calls']} | "
                         f"{row['rss_kib'] / 1024:.1f} | {row['fds']} | {_num(row['cpu_pct'])} |")
        lines.append("")
    lines += [FIGURES_NOTE, ""]
    lines += _plot_lines(result)
    return "\n".join(lines)


def _plot_lines(result: Mapping[str, Any]) -> list[str]:
    if result.get("plot"):
        return [f"![plot]({result['plot']})", ""]
    if result.get("plot_note"):
        return [f"_{result['plot_note']}_", ""]
    return []


# --- --compare: several servers back to back ----------------------------------------------

def _median(xs: Iterable[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return round(statistics.median(v), 4) if v else None


def _figures(s: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The compared figures of one run; None when it did not run or failed to."""
    if s is None or "error" in s:
        return None
    fr = s["frames"]
    return {"cpu_pct_per_call": s["cpu_pct_per_call"], "server_cpu_pct": s["server_cpu_pct"],
            "c2m_p99": s["c2m"]["p99"], "m2c_p99": s["m2c"]["p99"],
            "barge_in_p99": s["barge_in"]["p99"], "rss_per_call_kib": s["rss_per_call_kib"],
            "lost": fr["c2m_lost"] + fr["m2c_lost"], "stale": fr["stale_after_clear"],
            "pass": s["verdict"]["pass"]}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def comparison(runs: Sequence[Mapping[str, Any]], servers: Sequence[str],
               counts: Sequence[int], rounds: int, baseline: str) -> dict[str, Any]:
    """The ratio table of a `--compare` run: for every step and server, the figures
    (medians over the rounds) and CPU %/call over the baseline's; each ratio is taken
    within a round (a back-to-back pair on the same step), the table shows their
    median. With several steps, each server's largest step passing and its ratio."""
    by = {(r["round"], r["calls"], r["server"]): r for r in runs}
    rows = []
    for n in counts:
        for srv in servers:
            figs = [_figures(by.get((k, n, srv))) for k in range(1, rounds + 1)]
            base = [_figures(by.get((k, n, baseline))) for k in range(1, rounds + 1)]
            ok = [f for f in figs if f is not None]
            ratios = [_ratio(f["cpu_pct_per_call"], b["cpu_pct_per_call"])
                      if f is not None and b is not None else None
                      for f, b in zip(figs, base, strict=True)]

            def med(key: str, ok: list[dict[str, Any]] = ok) -> float | None:
                return _median(f[key] for f in ok)

            rows.append({
                "server": srv, "calls": n, "runs": len(ok),
                "runs_failed_to_run": len(figs) - len(ok),
                "cpu_pct_per_call": med("cpu_pct_per_call"),
                "cpu_ratio": _median(ratios),
                "cpu_pct_per_call_each_round": [f and f["cpu_pct_per_call"] for f in figs],
                "cpu_ratio_each_round": ratios,
                "server_cpu_pct": med("server_cpu_pct"),
                "c2m_p99": med("c2m_p99"), "m2c_p99": med("m2c_p99"),
                "barge_in_p99": med("barge_in_p99"),
                "rss_per_call_kib": med("rss_per_call_kib"),
                "lost": sum(f["lost"] for f in ok), "stale": sum(f["stale"] for f in ok),
                "passed": sum(1 for f in ok if f["pass"]),
            })
    out: dict[str, Any] = {"baseline": baseline, "servers": list(servers), "steps": list(counts),
                           "rounds": rounds, "table": rows}
    if len(counts) > 1:
        # every step ran for every server (--keep-going): the largest N that passed
        def largest(srv: str, k: int) -> int:
            return max((n for n in counts
                        if (f := _figures(by.get((k, n, srv)))) is not None and f["pass"]),
                       default=0)

        base_n = [largest(baseline, k) for k in range(1, rounds + 1)]
        out["largest_passing"] = {}
        for srv in servers:
            each = [largest(srv, k) for k in range(1, rounds + 1)]
            ratios = [_ratio(a, b) for a, b in zip(each, base_n, strict=True)]
            out["largest_passing"][srv] = {
                # 0: no step passed
                "largest_N_passing": _median(each), "each_round": each,
                "ratio": _median(ratios), "ratio_each_round": ratios}
    return out


def _x(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}x"


def _each(xs: Sequence[Any], fmt: str) -> str:
    return ", ".join(_num(x, fmt) for x in xs)


def compare_tables(cmp: Mapping[str, Any]) -> list[str]:
    """The ratio table and the largest step passing, as Markdown (also printed)."""
    base = cmp["baseline"]
    k = cmp["rounds"]
    med = f"median of {k} rounds; " if k > 1 else ""
    lines = [f"## Ratios against `{base}`", "",
             f"Same step, run back to back ({med}the ratio is CPU %/call over `{base}`'s "
             + ("in the same round, the median of the rounds' ratios" if k > 1
                else "in the same pass") + "):", "",
             "| calls | server | CPU %/call | ratio | server CPU % | p99 c→m / m→c ms "
             "| barge-in p99 ms | RSS/call KiB | lost / stale | passed |",
             "|" + "---|" * 10]
    for r in cmp["table"]:
        each = ""
        if k > 1:
            each = f" ({_each(r['cpu_pct_per_call_each_round'], '{:.3f}')})"
        ratio = _x(r["cpu_ratio"])
        if k > 1:
            ratio += f" ({_each(r['cpu_ratio_each_round'], '{:.3f}')})"
        failed = f", {r['runs_failed_to_run']} did not run" if r["runs_failed_to_run"] else ""
        lines.append(
            f"| {r['calls']} | {r['server']} | {_num(r['cpu_pct_per_call'], '{:.3f}')}{each} "
            f"| {ratio} | {_num(r['server_cpu_pct'])} "
            f"| {_num(r['c2m_p99'], '{:.2f}')} / {_num(r['m2c_p99'], '{:.2f}')} "
            f"| {_num(r['barge_in_p99'], '{:.2f}')} | {_num(r['rss_per_call_kib'])} "
            f"| {r['lost']} / {r['stale']} | {r['passed']}/{k}{failed} |")
    lines.append("")
    largest = cmp.get("largest_passing")
    if largest:
        lines += ["## Largest step passing", "",
                  f"Every step ran for every server (steps {', '.join(map(str, cmp['steps']))}); "
                  "0 = none passed" + (f"; median of {k} rounds, each round in brackets"
                                       if k > 1 else "") + ":", "",
                  f"| server | largest N passing | ratio to `{base}` |", "|---|---|---|"]
        for srv, v in largest.items():
            n = _num(v["largest_N_passing"], "{:g}")
            ratio = _x(v["ratio"])
            if k > 1:
                n += f" ({_each(v['each_round'], '{}')})"
                ratio += f" ({_each(v['ratio_each_round'], '{:.2f}')})"
            lines.append(f"| {srv} | {n} | {ratio} |")
        lines.append("")
    return lines


def compare_markdown(result: Mapping[str, Any]) -> str:
    runs = result.get("runs") or []
    cmp = result["compare"]
    numbered = {id(s): i for i, s in enumerate(runs, 1)}
    lead: list[tuple[str, Any]] = [("#", lambda s: numbered[id(s)]),
                                   ("server", lambda s: s["server"])]
    if cmp["rounds"] > 1:
        lead.insert(1, ("round", lambda s: s["round"]))
    lines = _header(result) + compare_tables(cmp)
    lines += ["## Every run, in the order run", "", *_steps_table(runs, lead)]
    lines += _workers_table(runs, lead)
    lines += [FIGURES_NOTE, "", *_plot_lines(result)]
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: Path) -> str | None:
    """Write the PNG; returns why not when it cannot."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no PNG: matplotlib is not installed (pip install -e '.[bench]')"
    steps = result.get("steps") or []
    soak = result.get("soak")
    cmp = result.get("compare")
    if cmp:
        fig, (ax, axc) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
        for srv in cmp["servers"]:
            rows = [r for r in cmp["table"] if r["server"] == srv]
            n = [r["calls"] for r in rows]

            def ys(key: str, rows: list[dict[str, Any]] = rows) -> list[float]:
                return [math.nan if r[key] is None else r[key] for r in rows]

            line = axc.plot(n, ys("cpu_pct_per_call"), "o-", label=srv)[0]
            ax.plot(n, ys("c2m_p99"), "o-", color=line.get_color(), label=f"{srv} c→m p99")
            ax.plot(n, ys("m2c_p99"), "s--", color=line.get_color(), label=f"{srv} m→c p99")
        ax.axhline(TARGET_P99_MS, color="grey", lw=0.8, ls=":")
        ax.set_ylabel("added latency p99 (ms)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_title(result["title"])
        axc.set_xlabel("concurrent calls")
        axc.set_ylabel("server CPU % per call")
        axc.set_ylim(bottom=0)
        axc.legend(fontsize=8)
    elif soak:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        t = [r["t"] for r in soak["samples"]]
        ax.plot(t, [r["rss_kib"] / 1024 for r in soak["samples"]], "o-", label="RSS (MiB)")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("server workers' RSS (MiB)")
        ax2 = ax.twinx()
        ax2.plot(t, [r["fds"] for r in soak["samples"]], "s--", color="tab:red",
                 label="open fds")
        ax2.set_ylabel("open file descriptors")
        ax.set_title(result["title"])
        fig.legend(loc="lower right")
    elif steps:
        fig, (ax, axc) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
        n = [s["calls"] for s in steps]
        for way, label in (("c2m", "caller→model"), ("m2c", "model→caller")):
            ax.plot(n, [s[way]["p50"] for s in steps], "o--", label=f"{label} p50")
            ax.plot(n, [s[way]["p99"] for s in steps], "o-", label=f"{label} p99")
        ax.plot(n, [s["barge_in"]["p99"] for s in steps], "^-", label="barge-in p99")
        ax.axhline(TARGET_P99_MS, color="grey", lw=0.8, ls=":")
        ax.set_ylabel("added latency (ms)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.set_title(result["title"])
        axc.plot(n, [s["server_cpu_pct"] for s in steps], "o-", label="server CPU %")
        axc.plot(n, [s["load_cpu_pct"] for s in steps], "s--", label="load generator + model CPU %")
        axc.set_xlabel("concurrent calls")
        axc.set_ylabel("CPU % (100 = one core)")
        axc2 = axc.twinx()
        axc2.plot(n, [s["cpu_pct_per_call"] for s in steps], "d:", color="tab:green",
                  label="server CPU % per call")
        axc2.set_ylabel("CPU % per call")
        axc.legend(loc="upper left", fontsize=8)
        axc2.legend(loc="lower right", fontsize=8)
    else:
        return "no PNG: nothing to plot"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(result: dict[str, Any], out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    note = plot(result, png)
    if note is None:
        result["plot"] = png.name
    else:
        result["plot_note"] = note
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    paths[1].write_text(markdown(result))
    return paths + ([png] if note is None else [])


def _workers_line(s: Mapping[str, Any]) -> str:
    """With several workers: each one's CPU, share of the workers' CPU, calls at N."""
    if len(s.get("worker_pids") or []) < 2:
        return ""
    each = zip(s["worker_pids"], s["worker_cpu_pct"], s["worker_cpu_share"],
               s["worker_calls"], strict=True)
    return ("    workers (pid: CPU %, share, calls at N): " + "; ".join(
        f"{pid}: {cpu:.1f} %, {_num(share, '{:.0%}')}, {_num(calls, '{}')}"
        for pid, cpu, share, calls in each) + "\n")


def print_step(s: Mapping[str, Any], file: Any = sys.stdout) -> None:
    fr = s["frames"]
    b = s["barge_in"]
    v = s["verdict"]
    disturbed = (f" (DISTURBED: other processes used {s['other_cpu_pct']:.0f} % CPU)"
                 if v.get("disturbed") else "")
    print(f"  N={s['calls']}: server CPU {_num(s['server_cpu_pct'])} % "
          f"({_num(s['cpu_pct_per_call'], '{:.3f}')} %/call -> "
          f"{_num(s['calls_per_core'], '{:.0f}')} calls/core), "
          f"RSS {_num(s['rss_per_call_kib'])} KiB/call, load CPU {_num(s['load_cpu_pct'])} %\n"
          f"    c->m ms {_ms(s['c2m'])}   m->c ms {_ms(s['m2c'])}   "
          f"barge-in p50/p99 {_num(b['p50'], '{:.2f}')}/{_num(b['p99'], '{:.2f}')} ms "
          f"(n={b['n']})\n"
          f"    frames c->m {fr['c2m_sent']} sent {fr['c2m_lost']} lost; "
          f"m->c {fr['m2c_sent']} sent {fr['m2c_lost']} lost, "
          f"{fr['discarded_by_barge_in']} discarded by barge-in, "
          f"{fr['stale_after_clear']} stale; gen. lateness p99 "
          f"{_num(s['lateness']['p99'], '{:.2f}')} ms\n"
          + _workers_line(s)
          + f"    -> {'ok' if v['pass'] else 'FAIL: ' + '; '.join(v['reasons'])}"
          f"{' (generator saturated)' if v['generator_saturated'] else ''}"
          f"{disturbed}",
          file=file, flush=True)
