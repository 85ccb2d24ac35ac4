"""Load bench: how many concurrent calls one server core carries, and at what latency.

    python bench/load.py                     # the ramp: 25, 50, 100, ... calls until it fails
    python bench/load.py --calls 100         # one step
    python bench/load.py --workers 2 --steps 50,100,150    # scale-out
    python bench/load.py --soak 5 --calls 100              # steady load with call churn
    python bench/load.py --quick             # a few calls for a few seconds (the smoke test)
    python bench/load.py --server reference-trio --calls 25   # a reference bridge instead
    python bench/load.py --compare callbridge,reference-asyncio --steps 25,50  # back to back

For each step it starts, each in its own process: callbridge, as its own run command
`python -m callbridge serve` (pinned to core 0), the bench model
(`_model.py`, a lean OpenAI Realtime GA peer) and load generators (`_gen.py`, one per
`--calls-per-gen` synthetic Twilio calls), all pinned to core 1. Each call streams
20 ms frames in real time both ways, echoes marks as Twilio does, and is interrupted
at random times. Frames carry stamps, so every frame is checked and timed end to end.

Reported per step: bridge-added one-way latency caller->model and model->caller
(p50/p99/max), barge-in reaction (`speech_started` leaving the model -> `clear`
arriving at the caller), frames lost/reordered/stale, server CPU (process time over
wall time; calls per core = 100 / CPU % per call), RSS per call, and the generator's
own lateness, which tells when the load side saturates before the server does.
Writes JSON, Markdown and a PNG under `--out` (default bench/results/). Exits non-zero
when frames were lost, reordered or stale or calls failed (in the first step of a ramp,
in the single step, or with --compare in any server's first step, or a server did not
run); latency targets are reported, never the exit status.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import _report as R
import trio

from callbridge.testing import HypercornProcess, hypercorn_process
from callbridge.testing import server_process as command_process

HERE = Path(__file__).resolve().parent
perf = time.perf_counter
TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_STEPS = [10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000]
REFERENCE = HERE / "reference"
#: --server / --compare: what runs as the server under test (see bench/README.md, "Servers")
SERVERS = {
    "callbridge": "python -m callbridge serve --host 127.0.0.1 --port PORT --workers W",
    "callbridge-asgi": "hypercorn --worker-class trio callbridge.app:app",
    "reference-trio": "hypercorn --worker-class trio bench/reference/trio_bridge.py:app",
    "reference-asyncio": "uvicorn --ws websockets --app-dir bench/reference asyncio_bridge:app",
}
#: the servers that run callbridge's code (the ones `--server-src` applies to)
CALLBRIDGE_KINDS = ("callbridge", "callbridge-asgi")
#: --compare: the server the CPU ratios are taken against, when it is in the list
COMPARE_BASELINE = "reference-asyncio"
#: --compare without --steps or --calls
DEFAULT_COMPARE_STEPS = [25, 50]


# --- /proc -------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()


def tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parent.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parent.get(pid, []))
    return out


def workers(root: int) -> list[int]:
    """The worker processes: the main process's descendants that are not
    multiprocessing's resource tracker (hypercorn's or uvicorn's spawned workers, or
    those of `callbridge serve`); the main process itself when it has none (a server
    that serves in one process)."""
    found = []
    for pid in tree(root)[1:]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            found.append(pid)
    return sorted(found) or [root]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            total += int(st[11]) + int(st[12])
    return total / TCK


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def open_fds(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def _socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def connections_per_process(pids: list[int], port: int, state: str = "01") -> dict[int, int]:
    """How many TCP sockets on local `port` (the server's) in `state` each process holds
    open (/proc/net/tcp{,6}): "01" established (the calls, and a health check in
    flight), "0A" listening."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            # local address "HEX_IP:HEX_PORT", state 01 = ESTABLISHED, inode in column 9
            if len(f) > 9 and f[3] == state and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(f[9]))
    return {pid: len(_socket_inodes(pid) & inodes) for pid in pids}


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / TCK, total / TCK


#: how long `wait_quiet` waits for a quiet machine before measuring anyway
QUIET_PATIENCE = 300.0


async def wait_quiet(limit_pct: float = 15.0) -> float:
    """Wait until processes other than ours use less than `limit_pct` of one core, so
    nothing else on the machine skews the figures; returns how long we waited."""
    t = perf()
    warned = False
    with trio.move_on_after(QUIET_PATIENCE):
        while True:
            b0, w0 = machine_busy()[0], perf()
            await trio.sleep(1.0)
            busy = 100 * (machine_busy()[0] - b0) / (perf() - w0)
            if busy < limit_pct:
                return perf() - t
            if not warned:
                print(f"  waiting for a quiet machine (other processes use {busy:.0f} % CPU)",
                      flush=True)
                warned = True
    print(f"  machine not quiet after {QUIET_PATIENCE:.0f} s; measuring anyway", flush=True)
    return perf() - t


def pin(pids: list[int], cpus: set[int] | None) -> None:
    """Pin every thread of these processes."""
    if cpus is None:
        return
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


async def active_calls(host: str) -> int | None:
    """The server's own count, from its health endpoint."""
    try:
        with trio.fail_after(5):
            h, p = host.rsplit(":", 1)
            stream = await trio.open_tcp_stream(h, int(p))
            async with stream:
                await stream.send_all(f"GET / HTTP/1.1\r\nHost: {host}\r\n"
                                      "Connection: close\r\n\r\n".encode())
                data = b""
                while True:  # hypercorn keeps the connection open: read Content-Length bytes
                    head, sep, body = data.partition(b"\r\n\r\n")
                    if sep:
                        length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")]
                        if length and len(body) >= length[0]:
                            break
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
        return int(json.loads(body)["active_calls"])
    except (OSError, ValueError, KeyError, IndexError, trio.TooSlowError):
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_problems(log: str) -> dict[str, Any]:
    lines = log.splitlines()
    bad = [ln for ln in lines if any(w in ln for w in (
        "Traceback", "Error", "error", "WARNING", "Warning", "Exception", "exception"))]
    out: dict[str, Any] = {"lines": len(lines), "problem_lines": len(bad),
                           "first_problems": bad[:12]}
    if bad:  # the first traceback in full, and the log's end
        first = next(i for i, ln in enumerate(lines) if ln in bad)
        out["first_problem_context"] = lines[max(0, first - 3):first + 60]
        out["tail"] = lines[-40:]
    return out


# --- the server under test ---------------------------------------------------------------

@asynccontextmanager
async def server_process(server: str, env: dict[str, str],
                         args: list[str]) -> AsyncIterator[HypercornProcess]:
    """Start `server` (a key of SERVERS) on a free loopback port; yields once it accepts
    connections. `args` are `--workers W`, which all the commands take."""
    if server == "callbridge":  # the product's own run command
        command = [sys.executable, "-m", "callbridge", "serve", "--host", "127.0.0.1",
                   "--port", "{port}", *args]
        async with command_process(command, env) as proc:
            yield proc
        return
    if server == "callbridge-asgi":  # the compatible ASGI path, under hypercorn
        app = "callbridge.app:app"
    elif server == "reference-trio":
        app = f"{REFERENCE / 'trio_bridge.py'}:app"
    elif server == "reference-asyncio":
        async with uvicorn_process("asyncio_bridge:app", env, args=args) as proc:
            yield proc
        return
    else:
        raise ValueError(f"unknown server {server!r}")
    async with hypercorn_process(app, env, args=args) as proc:
        yield proc


async def wait_ready(server: HypercornProcess, n_workers: int, patience: float = 20.0) -> None:
    """Wait until the server answers its health check (the port accepts connections as
    soon as the main process bound it, before a spawned worker has loaded the app), and,
    with several workers, until each of them holds a listening socket on the port (one
    it inherited, or its own with SO_REUSEPORT); so the calls can reach every worker and
    the idle RSS and the worker pids are taken from a server that is ready."""
    port = int(server.host.rsplit(":", 1)[1])

    def all_listening() -> bool:
        wk = workers(server.pid)
        return len(wk) >= n_workers and all(connections_per_process(wk, port, "0A").values())

    with trio.move_on_after(patience):
        while True:
            if await active_calls(server.host) is not None:
                break
            await trio.sleep(0.1)
        while True:
            if n_workers <= 1 or all_listening():
                break
            await trio.sleep(0.1)


@asynccontextmanager
async def uvicorn_process(app: str, env: dict[str, str], *, args: list[str],
                          startup_timeout: float = 20.0) -> AsyncIterator[HypercornProcess]:
    """`uvicorn --ws websockets APP` from bench/reference/, the way `hypercorn_process`
    runs hypercorn: its own process, output to a log, stopped on exit."""
    command = [sys.executable, "-m", "uvicorn", "--ws", "websockets", "--host", "127.0.0.1",
               "--port", "{port}", "--app-dir", str(REFERENCE), *args, app]
    async with command_process(command, env, startup_timeout=startup_timeout) as server:
        yield server


# --- one run -----------------------------------------------------------------------------

class Options(argparse.Namespace):
    calls: int | None
    steps: str | None
    duration: float
    rampup: float | None
    warmup: float
    workers: int
    soak: float | None
    churn: float
    sample_every: float
    quick: bool
    out: Path
    name: str | None
    calls_per_gen: int
    seed: int
    no_pin: bool
    server_src: Path | None
    server: str
    compare_spec: str | None
    compare: list[str] | None
    rounds: int
    stop_on_fail: bool
    wait_quiet: bool
    pinning: bool
    report_only: Path | None


async def run_load(o: Options, n: int, tmp: Path, *, soak_seconds: float | None = None,
                   label: str = "", server_kind: str | None = None) -> dict[str, Any]:
    """One run of n calls against `server_kind` (default `--server`): start everything,
    measure, stop everything, analyze."""
    kind = server_kind or o.server
    pinning = o.pinning
    server_cpus = {0} if pinning else None
    load_cpus = {1} if pinning else None
    if load_cpus is not None:
        os.sched_setaffinity(0, load_cpus)
    waited = await wait_quiet() if o.wait_quiet else 0.0
    step_dir = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=tmp))
    model_port = free_port()
    rampup = o.rampup if o.rampup is not None else max(1.0, n / 100)
    dur = soak_seconds if soak_seconds is not None else o.duration
    model_cmd = [sys.executable, str(HERE / "_model.py"), "--port", str(model_port),
                 "--seed", str(o.seed), "--out", str(step_dir / "model.json")]
    env = {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
           # callbridge keeps a record of every call by default: in the step's directory
           # (CALLBRIDGE_DB=off in the bench's environment turns that off)
           "CALLBRIDGE_DB": os.environ.get("CALLBRIDGE_DB", str(step_dir / "calls.db"))}
    if o.server_src is not None and kind in CALLBRIDGE_KINDS:
        env["PYTHONPATH"] = str(o.server_src) + os.pathsep + os.environ.get("PYTHONPATH", "")
    progress = print
    result: dict[str, Any] = {"calls": n, "server": kind}
    gens: list[trio.Process] = []
    # the child writes its own copy of the file's descriptor; ours closes once it started
    async with await trio.open_file(step_dir / "model.err", "wb") as model_err:
        model = await trio.lowlevel.open_process(model_cmd, stdin=subprocess.PIPE,
                                                 stdout=subprocess.DEVNULL, stderr=model_err)
    with trio.fail_after(10):
        while True:
            try:
                await (await trio.open_tcp_stream("127.0.0.1", model_port)).aclose()
                break
            except OSError:
                await trio.sleep(0.05)
    if server_cpus is not None:
        os.sched_setaffinity(0, server_cpus)  # hypercorn inherits this
    args = ["--workers", str(o.workers)]
    try:
        async with server_process(kind, env, args) as server:
            if load_cpus is not None:
                os.sched_setaffinity(0, load_cpus)
            await wait_ready(server, o.workers)
            await trio.sleep(0.5)
            pin(tree(server.pid), server_cpus)
            wk = workers(server.pid)
            all_server = tree(server.pid)
            rss_idle = rss_kib(wk)
            fds_idle = open_fds(wk)
            # all times are absolute perf_counter() values: one clock for every process
            t_start = perf() + 1.0
            t0 = t_start + rampup + o.warmup
            t1 = t0 + dur
            end = t1 + 0.2
            assert model.stdin is not None
            await model.stdin.send_all(f"window {t0!r} {t1!r}\n".encode())
            per = o.calls_per_gen
            for g in range(math.ceil(n / per)):
                a, b = g * per, min(n, (g + 1) * per)
                cmd = [sys.executable, str(HERE / "_gen.py"), "--server", server.host,
                       "--slots", f"{a}:{b}", "--total-slots", str(n), "--start", repr(t_start),
                       "--rampup", repr(rampup), "--end", repr(end),
                       "--window", repr(t0), repr(t1), "--seed", str(o.seed + g),
                       "--out", str(step_dir / f"gen{g}.json")]
                if soak_seconds is not None:
                    cmd += ["--churn", repr(o.churn)]
                async with await trio.open_file(step_dir / f"gen{g}.err", "wb") as gen_err:
                    gens.append(await trio.lowlevel.open_process(cmd, stderr=gen_err))
            load_pids = [model.pid] + [p.pid for p in gens]
            pin(load_pids, load_cpus)
            progress(f"{label}N={n}: {len(gens)} generator(s), ramp-up {rampup:.1f} s, "
                     f"then {dur:.0f} s measured; server pid {server.pid}, workers "
                     f"{' '.join(map(str, wk))}", flush=True)
            await trio.sleep(max(0.0, t0 - perf()))
            # steady state: measure
            c0, l0, w0 = cpu_seconds(tree(server.pid)), cpu_seconds(load_pids), perf()
            g0 = cpu_seconds(load_pids[1:])
            wk0 = {pid: cpu_seconds([pid]) for pid in workers(server.pid)}
            m0 = machine_busy()[0]
            samples = []
            last_c, last_w = c0, w0
            every = o.sample_every if soak_seconds is not None else 5.0
            while perf() < t1 - 0.05:
                await trio.sleep(min(every, max(0.0, t1 - perf())))
                now = perf()
                c = cpu_seconds(tree(server.pid))
                wk = workers(server.pid)
                row = {"t": round(now - t0, 1), "rss_kib": rss_kib(wk), "fds": open_fds(wk),
                       "cpu_pct": round(100 * (c - last_c) / (now - last_w), 2)}
                if soak_seconds is not None:
                    row["active_calls"] = await active_calls(server.host)
                    samples.append(row)
                last_c, last_w = c, now
                progress(f"  {row['t']:6.0f} s  server CPU {row['cpu_pct']:5.1f} %  "
                         f"RSS {row['rss_kib'] / 1024:6.1f} MiB  fds {row['fds']}"
                         + (f"  active calls {row['active_calls']}" if "active_calls" in row
                            else ""), flush=True)
            c1, l1, w1 = cpu_seconds(tree(server.pid)), cpu_seconds(load_pids), perf()
            g1 = cpu_seconds(load_pids[1:])
            wk1 = {pid: cpu_seconds([pid]) for pid in wk0}
            m1 = machine_busy()[0]
            wk = workers(server.pid)
            # which process holds each call's socket at N (with several workers: how the
            # kernel spread the calls); every process of the tree, in case one hands
            # connections to another
            conns = connections_per_process(tree(server.pid),
                                            int(server.host.rsplit(":", 1)[1]))
            rss_at_n = rss_kib(wk)
            fds_at_n = open_fds(wk)
            active_at_n = await active_calls(server.host)
            all_server = sorted(set(all_server) | set(tree(server.pid)))
            # hang up and drain
            with trio.move_on_after(end - perf() + 30):
                for p in gens:
                    await p.wait()
            await trio.sleep(1.0)
            active_after = await active_calls(server.host)
            fds_after = open_fds(workers(server.pid))
            rss_after = rss_kib(workers(server.pid))
            log = server.log()
    finally:
        for p in gens:
            if p.returncode is None:
                p.kill()
        if model.stdin is not None:
            await model.stdin.aclose()
        with trio.move_on_after(10):
            await model.wait()
        if model.returncode is None:
            model.kill()
    gen_out = []
    for g in range(len(gens)):
        path = step_dir / f"gen{g}.json"
        if not path.exists():
            raise RuntimeError(f"generator {g} wrote nothing: "
                               f"{(step_dir / f'gen{g}.err').read_text()[-2000:]}")
        gen_out.append(json.loads(path.read_text()))
    model_out = json.loads((step_dir / "model.json").read_text())
    result.update(R.analyze(gen_out, model_out, (t0, t1)))
    wall = w1 - w0
    server_cpu = 100 * (c1 - c0) / wall
    worker_cpu = [round(100 * (wk1[p] - wk0[p]) / wall, 2) for p in wk0]
    worker_total = sum(worker_cpu)
    result.update({
        "workers": o.workers,
        "window_s": round(wall, 2),
        "rampup_s": rampup,
        "server_cpu_pct": round(server_cpu, 2),
        "cpu_pct_per_call": round(server_cpu / n, 4),
        "calls_per_core": round(100 / (server_cpu / n), 1) if server_cpu > 0 else None,
        "load_cpu_pct": round(100 * (l1 - l0) / wall, 2),
        "generator_cpu_pct": round(100 * (g1 - g0) / wall, 2),
        # how evenly the kernel spread the calls over the workers (--workers 2): each
        # worker's CPU % (pids in `worker_pids`, same order), its share of the workers'
        # CPU, and the calls (established connections to the server's port) it held at N
        "worker_pids": list(wk0),
        "worker_cpu_pct": worker_cpu,
        "worker_cpu_share": [round(c / worker_total, 3) if worker_total > 0 else None
                             for c in worker_cpu],
        "worker_calls": [conns.get(p) for p in wk0],
        "server_connections_by_pid": {str(p): c for p, c in conns.items() if c},
        "model_cpu_pct": round(100 * ((l1 - l0) - (g1 - g0)) / wall, 2),
        # everything else on the machine (this orchestrator, the kernel's softirqs, and
        # any process that is not ours): large values mean the figures are disturbed
        "other_cpu_pct": round(100 * ((m1 - m0) - (c1 - c0) - (l1 - l0)) / wall, 2),
        "waited_for_quiet_s": round(waited, 1),
        "rss_idle_kib": rss_idle,
        "rss_kib": rss_at_n,
        "rss_per_call_kib": round((rss_at_n - rss_idle) / n, 1),
        "rss_after_kib": rss_after,
        "fds_idle": fds_idle,
        "fds": fds_at_n,
        "fds_after": fds_after,
        "active_calls_at_n": active_at_n,
        "active_calls_after": active_after,
        "server_pids": {"main": server.pid, "workers": wk, "tree": all_server},
        "server_log": log_problems(log),
    })
    if samples:
        result["samples"] = samples
    result["verdict"] = R.verdict(result)
    return result


# --- modes -------------------------------------------------------------------------------

def parse(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/load.py", description=__doc__.split("\n\n")[0],
        epilog="The default is the ramp with one worker. See bench/README.md for what each "
               "figure means.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, help="one step with this many concurrent calls "
                   "(with --soak: the steady load; default 100)")
    p.add_argument("--steps", help="ramp over these call counts, comma-separated "
                   f"(default {','.join(map(str, DEFAULT_STEPS))})")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds measured per step, after ramp-up (default 20)")
    p.add_argument("--rampup", type=float, help="seconds over which calls dial in "
                   "(default N/100, at least 1)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds between the last dial and the measured window (default 2)")
    p.add_argument("--workers", type=int, default=1,
                   help="the server's --workers (callbridge serve, hypercorn, uvicorn; default 1)")
    p.add_argument("--soak", type=float, metavar="MINUTES",
                   help="steady load for this long, sampling server RSS and fds")
    p.add_argument("--churn", type=float, default=30.0,
                   help="soak: mean call length in s; calls hang up and new ones dial (default 30)")
    p.add_argument("--sample-every", type=float, default=10.0,
                   help="soak: seconds between samples (default 10)")
    p.add_argument("--quick", action="store_true",
                   help="4 calls, 3 s: a smoke run that checks the bench works")
    p.add_argument("--out", type=Path, default=HERE / "results",
                   help="where to write NAME.json/.md/.png (default bench/results)")
    p.add_argument("--name", help="file name stem (default from the mode: ramp-w1, "
                   "calls100-w1, soak-w1, quick)")
    p.add_argument("--calls-per-gen", type=int, default=100,
                   help="calls per load generator process (default 100)")
    p.add_argument("--seed", type=int, default=1, help="seed for barge-in times (default 1)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server to core 0 and the load to core 1 "
                        "(--workers 2 never pins)")
    p.add_argument("--server", choices=list(SERVERS),
                   help="what runs as the server: " + "; ".join(
                       f"{k}: {v}" for k, v in SERVERS.items()) + " (default callbridge)")
    p.add_argument("--compare", metavar="SERVERS", dest="compare_spec",
                   help="comma-separated servers (" + ", ".join(SERVERS) + ") run back to "
                        "back on each step, in this order, every step for every server "
                        "(--keep-going); one JSON/Markdown with a ratio table: CPU %%/call "
                        f"against {COMPARE_BASELINE} when listed, else the first server "
                        f"(default steps {','.join(map(str, DEFAULT_COMPARE_STEPS))}; "
                        "default name compare-wW)")
    p.add_argument("--rounds", type=int, default=1,
                   help="--compare: run the whole sequence this many times, so each step "
                        "gives this many back-to-back pairs (default 1)")
    p.add_argument("--server-src", type=Path,
                   help="run callbridge (both kinds) from this source tree (put first on "
                        "PYTHONPATH), e.g. an export of another commit for a before/after "
                        "comparison")
    p.add_argument("--no-wait-quiet", dest="wait_quiet", action="store_false",
                   help="do not wait (up to 5 min) for other processes to go quiet before a step")
    p.add_argument("--report-only", type=Path, metavar="JSON",
                   help="rewrite the Markdown and PNG of an earlier run from its JSON")
    p.add_argument("--keep-going", dest="stop_on_fail", action="store_false",
                   help="ramp: run every step even after one fails")
    o = p.parse_args(argv, namespace=Options())
    o.compare = None
    if o.compare_spec is not None:
        o.compare = [x.strip() for x in o.compare_spec.split(",") if x.strip()]
        unknown = [x for x in o.compare if x not in SERVERS]
        if unknown or not o.compare:
            p.error(f"--compare: unknown server(s) {', '.join(unknown) or '(none given)'}; "
                    f"choose from {', '.join(SERVERS)}")
        if len(set(o.compare)) != len(o.compare):
            p.error("--compare: a server is listed twice")
        if o.server is not None:
            p.error("--compare lists the servers: not with --server")
        if o.soak is not None:
            p.error("--compare runs steps: not with --soak")
        if o.server_src is not None and not set(o.compare) & set(CALLBRIDGE_KINDS):
            p.error("--server-src runs callbridge from another tree: --compare lists no "
                    "callbridge server")
    elif o.rounds != 1:
        p.error("--rounds goes with --compare")
    if o.rounds < 1:
        p.error("--rounds must be at least 1")
    if o.server is None:
        o.server = "callbridge"
    if (o.server_src is not None and o.compare is None
            and o.server not in CALLBRIDGE_KINDS):
        p.error("--server-src runs callbridge from another tree: not with --server " + o.server)
    o.pinning = (not o.no_pin and o.workers == 1 and len(os.sched_getaffinity(0)) >= 2
                 and {0, 1} <= os.sched_getaffinity(0))
    return o


def capacity(steps: list[dict[str, Any]]) -> dict[str, Any]:
    passing = [s for s in steps if s["verdict"]["pass"]]
    # CPU per call from the largest passing step (most calls: fixed costs amortised)
    best = max(passing, key=lambda s: s["calls"]) if passing else None
    cap: dict[str, Any] = {}
    if best is not None:
        cap["largest_N_passing"] = best["calls"]
        cap["server_cpu_pct_per_call"] = best["cpu_pct_per_call"]
        cap["calls_per_core_from_cpu"] = best["calls_per_core"]
        cap["rss_per_call_kib"] = best["rss_per_call_kib"]
        cap["barge_in_p99_ms"] = best["barge_in"]["p99"]
    failed = [s for s in steps if not s["verdict"]["pass"]]
    if failed:
        s = failed[0]
        cap["stopped_at"] = f"N={s['calls']}: " + "; ".join(s["verdict"]["reasons"])
    sat = [s["calls"] for s in steps if s["verdict"]["generator_saturated"]]
    cap["generator_saturated_at"] = sat[0] if sat else "not reached"
    last = steps[-1] if steps else None
    if last is not None and last.get("load_cpu_pct"):
        per_call = last["load_cpu_pct"] / last["calls"]
        cap["load_side_cpu_pct_per_call"] = round(per_call, 3)
        if not sat:
            # the load side's own core saturates around here (90 % of it)
            cap["generator_saturates_near_N"] = round(R.SATURATED_LOAD_CPU / per_call)
    return cap


def machine_info(o: Options, servers: list[str]) -> dict[str, Any]:
    machine = R.machine(o.server_src)
    if "reference-asyncio" in servers:
        for dist in ("fastapi", "starlette", "uvicorn", "websockets"):
            try:
                machine["versions"][dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                machine["versions"][dist] = None
    return machine


def base_config(o: Options) -> dict[str, Any]:
    return {"workers": o.workers, "duration": o.duration, "seed": o.seed,
            "calls_per_gen": o.calls_per_gen, "warmup": o.warmup,
            "pinning": "server on core 0, load generators and model on core 1"
            if o.pinning else "none (all processes share all cores)"}


def describe(kind: str, machine: dict[str, Any]) -> str:
    rev = f" {machine['callbridge_rev']}" if kind in CALLBRIDGE_KINDS else ""
    return f"{kind}{rev} ({SERVERS[kind]})"


async def run_step(o: Options, n: int, tmp: Path, label: str,
                   kind: str | None = None) -> dict[str, Any]:
    """One step, run again (at most twice) when other processes disturbed it."""
    for attempt in range(3):
        step = await run_load(o, n, tmp, label=label, server_kind=kind)
        R.print_step(step)
        if not step["verdict"]["disturbed"] or not o.wait_quiet or attempt == 2:
            break
        print("  other processes disturbed the step: running it again", flush=True)
    return step


async def main_async(o: Options) -> int:
    if o.compare is not None:
        return await compare_async(o)
    machine = machine_info(o, [o.server])
    command = "python bench/load.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    # result names and titles say which server ran, unless it was callbridge
    sfx = "" if o.server == "callbridge" else f"-{o.server}"
    config = {"server": SERVERS[o.server], **base_config(o)}
    result: dict[str, Any] = {"machine": machine, "config": config, "command": command}
    print(f"callbridge load bench on {machine['cpu']} ({machine['cores']} cores), "
          f"server {describe(o.server, machine)}, {config['pinning']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if o.soak is not None:
            n = o.calls or 100
            name = o.name or f"soak-w{o.workers}{sfx}"
            result["title"] = f"soak, {n} calls for {o.soak:g} min, {o.workers} worker(s)"
            config["churn_s"] = o.churn
            config["duration"] = o.soak * 60
            step = await run_load(o, n, tmp, soak_seconds=o.soak * 60, label="soak ")
            R.print_step(step)
            result["steps"] = [step]
            result["soak"] = soak_summary(step)
            print(f"  {result['soak']['summary']}")
            ok = step["verdict"]["correct"] and result["soak"]["leak_free"]
        else:
            if o.quick:
                counts, name = [o.calls or 4], o.name or f"quick{sfx}"
                o.duration = min(o.duration, 3.0)
                o.warmup = min(o.warmup, 1.0)
                config["duration"] = o.duration
                result["title"] = "quick smoke run"
            elif o.calls is not None:
                counts, name = [o.calls], o.name or f"calls{o.calls}-w{o.workers}{sfx}"
                result["title"] = f"{o.calls} calls, {o.workers} worker(s)"
            else:
                counts = ([int(x) for x in o.steps.split(",")] if o.steps else DEFAULT_STEPS)
                name = o.name or f"ramp-w{o.workers}{sfx}"
                result["title"] = f"ramp, {o.workers} worker(s)"
            steps: list[dict[str, Any]] = []
            result["steps"] = steps
            for n in counts:
                step = await run_step(o, n, tmp, f"[{len(steps) + 1}/{len(counts)}] ")
                steps.append(step)
                v = step["verdict"]
                if (len(counts) > 1 and o.stop_on_fail
                        and (not v["pass"] or v["generator_saturated"])):
                    why = "generator saturated" if v["pass"] else "step failed"
                    print(f"ramp stops at N={n}: {why}", flush=True)
                    break
            result["capacity"] = capacity(steps)
            # exit status: correctness, never timing (a ramp is meant to end in a failing step)
            ok = steps[0]["verdict"]["correct"]
    if sfx:
        result["title"] += f", server {o.server}"
    paths = R.write(result, o.out, name)
    for path in paths:
        print(f"wrote {path}")
    if "plot_note" in result:
        print(result["plot_note"])
    return 0 if ok else 1


async def compare_async(o: Options) -> int:
    """--compare: every listed server on each step, back to back, --rounds times."""
    servers = o.compare or []
    baseline = COMPARE_BASELINE if COMPARE_BASELINE in servers else servers[0]
    machine = machine_info(o, servers)
    command = "python bench/load.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if o.quick:
        counts, name = [o.calls or 4], o.name or "compare-quick"
        o.duration = min(o.duration, 3.0)
        o.warmup = min(o.warmup, 1.0)
    else:
        counts = ([o.calls] if o.calls is not None
                  else [int(x) for x in o.steps.split(",")] if o.steps
                  else DEFAULT_COMPARE_STEPS)
        name = o.name or f"compare-w{o.workers}"
    config = {"servers": {k: SERVERS[k] for k in servers}, "baseline": baseline,
              "steps": counts, "rounds": o.rounds, **base_config(o)}
    title = (f"compare {', '.join(servers)}; {'quick, ' if o.quick else ''}"
             f"{o.workers} worker(s)" + (f", {o.rounds} rounds" if o.rounds > 1 else ""))
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {"machine": machine, "config": config, "command": command,
                              "title": title, "runs": runs}
    print(f"callbridge load bench on {machine['cpu']} ({machine['cores']} cores), "
          f"{config['pinning']}; back to back on each of N = {', '.join(map(str, counts))}"
          + (f", {o.rounds} rounds" if o.rounds > 1 else "") + ":", flush=True)
    for kind in servers:
        print(f"  {describe(kind, machine)}", flush=True)
    total = o.rounds * len(counts) * len(servers)
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for k in range(1, o.rounds + 1):
            for n in counts:
                for kind in servers:
                    label = (f"[{len(runs) + 1}/{total}] {kind}"
                             + (f", round {k}" if o.rounds > 1 else "") + ": ")
                    try:
                        step = await run_step(o, n, tmp, label, kind)
                    except Exception as exc:  # one server that fails does not end the rest
                        why = f"{type(exc).__name__}: {exc}".strip()
                        print(f"{label}N={n}: FAILED TO RUN: {why[:2000]}", flush=True)
                        lines = [ln for ln in why.splitlines() if ln.strip()] or ["?"]
                        short = lines[0] + (f" ... {lines[-1].strip()}" if len(lines) > 1 else "")
                        step = {"calls": n, "server": kind, "error": short[:300],
                                "error_detail": why[:5000],
                                "verdict": {"pass": False, "correct": False,
                                            "reasons": ["did not run"],
                                            "generator_saturated": False, "disturbed": False}}
                    step["round"] = k
                    runs.append(step)
    result["compare"] = R.comparison(runs, servers, counts, o.rounds, baseline)
    print("\n" + "\n".join(R.compare_tables(result["compare"])), flush=True)
    paths = R.write(result, o.out, name)
    for path in paths:
        print(f"wrote {path}")
    if "plot_note" in result:
        print(result["plot_note"])
    # exit status: correctness, never timing: every server's first step, in every round
    return 0 if all(r["verdict"]["correct"] for r in runs if r["calls"] == counts[0]) else 1


def soak_summary(step: dict[str, Any]) -> dict[str, Any]:
    samples = step.get("samples", [])
    # after the first fifth (warm-up of allocator and caches): least-squares slope of RSS
    tail = samples[len(samples) // 5:]
    slope = 0.0
    if len(tail) >= 3:
        ts = [r["t"] for r in tail]
        ys = [r["rss_kib"] for r in tail]
        mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
        den = sum((t - mt) ** 2 for t in ts)
        if den:
            slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / den * 60
    fds = [r["fds"] for r in samples]
    leak_free = (step["active_calls_after"] == 0 and step["fds_after"] <= step["fds_idle"] + 2)
    summary = (f"RSS slope {slope:+.0f} KiB/min after warm-up; fds idle {step['fds_idle']}, "
               f"during {min(fds, default=0)}..{max(fds, default=0)}, after drain "
               f"{step['fds_after']}; active calls after drain {step['active_calls_after']}; "
               f"RSS idle {step['rss_idle_kib'] / 1024:.1f} MiB, "
               f"end {step['rss_kib'] / 1024:.1f} MiB, "
               f"after drain {step['rss_after_kib'] / 1024:.1f} MiB")
    calls = step["calls_run"]
    return {"samples": samples, "rss_slope_kib_per_min": round(slope, 1), "leak_free": leak_free,
            "calls_completed": calls, "summary": summary + f"; {calls} calls in total"}


def main(argv: list[str] | None = None) -> int:
    o = parse(argv)
    if o.report_only is not None:
        result = json.loads(o.report_only.read_text())
        if result.get("compare") is not None:
            cmp = result["compare"]
            result["compare"] = R.comparison(result["runs"], cmp["servers"], cmp["steps"],
                                             cmp["rounds"], cmp["baseline"])
        if result.get("capacity") is not None:
            result["capacity"] = capacity(result["steps"])
        for path in R.write(result, o.report_only.parent, o.report_only.stem):
            print(f"wrote {path}")
        return 0
    return trio.run(main_async, o)


if __name__ == "__main__":
    sys.exit(main())
