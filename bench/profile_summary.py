"""Where the server's time goes: group a py-spy raw profile by layer.

    py-spy record --pid WORKER_PID --duration 30 --rate 250 --format raw -o server.raw
    python bench/profile_summary.py server.raw [--top 30]

(`bench/load.py` prints the worker pid; run a step with a long `--duration` and attach
py-spy to it.) Prints, as Markdown, the share of samples per group two ways: *self*
(the innermost Python frame is in that group: time spent in its own code and the C
code it calls) and *inclusive* (the group appears anywhere on the stack), then the
top functions by self time. The groups:

| group | frames from |
|---|---|
| JSON / cattrs codec | `json`, `cattrs`, `attrs`-generated methods, `callbridge/codec.py`, `realtime.py`, `twilio.py` |
| base64 | `base64`, `binascii` |
| trio scheduling | trio's run loop, epoll, tasks, checkpoints, memory channels |
| locks / cancel scopes | `trio/_sync.py`, `CancelScope` and cancel status machinery |
| socket I/O (syscalls) | `trio/_socket.py`, `trio/_highlevel_socket.py`, `callbridge/_wire.py`: send/recv, with the kernel's loopback TCP work |
| WebSocket framing (callbridge) | `callbridge/_websocket.py`, `_wsframes.py`: the front door's and the model client's frames |
| epoll wait | trio's epoll I/O manager |
| hypercorn / wsproto / h11 | `hypercorn`, `wsproto`, `h11` |
| ASGI + app layer | `quart`, `quart_trio`, `callbridge/app.py`, `callbridge/_sockets.py` |
| trio-websocket (model socket) | `trio_websocket` |
| bridge logic | `callbridge/_call.py`, `_modelloop.py`, `_bridge.py`, `_playout.py`, `_playback.py`, `_inbound.py`, `_payload.py`, `_conversation.py`, `backend.py` |
| logging | `logging` |
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# py-spy names frames `function (package/module.py:line)`, paths relative to sys.path
GROUPS: list[tuple[str, re.Pattern[str]]] = [
    ("logging", re.compile(r"\(logging/")),
    ("base64", re.compile(r"\(base64\.py|binascii")),
    ("JSON / cattrs codec", re.compile(
        r"\((json|cattrs|attr|attrs)/|<attrs generated|\(callbridge/(codec|realtime|twilio)\.py")),
    ("locks / cancel scopes", re.compile(
        r"\(trio/_sync\.py|\(trio/_timeouts\.py|CancelScope|CancelStatus|cancel_shielded")),
    ("socket I/O (syscalls)", re.compile(
        r"\(trio/_socket\.py|\(trio/_highlevel_socket\.py|\(callbridge/_wire\.py")),
    ("WebSocket framing (callbridge)", re.compile(r"\(callbridge/_(websocket|wsframes)\.py")),
    ("epoll wait", re.compile(r"\(trio/_core/_(generated_)?io_epoll\.py")),
    ("trio-websocket (model socket)", re.compile(r"\(trio_websocket/")),
    ("hypercorn / wsproto / h11", re.compile(r"\((hypercorn|wsproto|h11)/")),
    ("ASGI + app layer", re.compile(r"\((quart|quart_trio)/|\(callbridge/(app|_sockets)\.py")),
    ("bridge logic", re.compile(
        r"\(callbridge/(_call|_modelloop|_bridge|_playout|_playback|_inbound|_payload"
        r"|_conversation|backend|_guard)\.py")),
    ("trio scheduling", re.compile(r"\((trio|outcome|sniffio)/")),
]


def group_of(frame: str) -> str:
    for name, pattern in GROUPS:
        if pattern.search(frame):
            return name
    return "other"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        # py-spy puts process/thread entries first; keep Python frames, outermost first
        frames = [f for f in frames if "(" in f]
        stacks.append((frames, int(count)))
    return stacks


def _idle(frames: list[str]) -> bool:
    """Waiting in epoll_wait: py-spy samples it as running, but the core is idle."""
    return bool(frames) and frames[-1].startswith("EpollIOManager.get_events")


def summarize(stacks: list[tuple[list[str], int]], top: int) -> str:
    everything = sum(c for _, c in stacks) or 1
    idle_samples = sum(c for f, c in stacks if _idle(f))
    stacks = [(f, c) for f, c in stacks if not _idle(f)]
    total = sum(c for _, c in stacks) or 1
    self_g: Counter[str] = Counter()
    incl_g: Counter[str] = Counter()
    self_f: Counter[str] = Counter()
    idle = 0
    for frames, count in stacks:
        if not frames:
            continue
        leaf = frames[-1]
        if "_io_epoll.py" in leaf:
            idle += count
        self_g[group_of(leaf)] += count
        self_f[leaf] += count
        for g in {group_of(f) for f in frames}:
            incl_g[g] += count
    out = [f"{everything} samples, {100 * idle_samples / everything:.1f} % of them idle in "
           f"epoll_wait; the shares below are of the {total} busy samples "
           f"({100 * idle / total:.1f} % in the rest of trio's epoll layer).", "",
           "| group | self % | inclusive % |", "|---|---|---|"]
    for g, c in self_g.most_common():
        out.append(f"| {g} | {100 * c / total:.1f} | {100 * incl_g[g] / total:.1f} |")
    # by task: the coroutine trio's run loop is stepping (the frame after `unrolled_run`)
    tasks: Counter[str] = Counter()
    for frames, count in stacks:
        names = [f.split(" (")[0] for f in frames]
        if names and names[-1].startswith(("EpollIOManager", "Runner.", "Deadlines.")):
            task = "(trio run loop itself: scheduling, epoll)"
        elif "unrolled_run" in names:
            i = len(names) - 1 - names[::-1].index("unrolled_run")
            task = names[i + 1] if i + 1 < len(names) else "(trio run loop itself: scheduling, epoll)"
        else:
            task = "(outside the run loop)"
        tasks[task] += count
    out += ["", "By task (the coroutine being run, or the run loop itself):", "",
            "| % | task |", "|---|---|"]
    for t, c in tasks.most_common(15):
        out.append(f"| {100 * c / total:.1f} | `{t}` |")
    out += ["", f"Top {top} functions by self time:", "", "| self % | function |", "|---|---|"]
    for f, c in self_f.most_common(top):
        short = re.sub(r"\(/.*?site-packages/", "(", f)
        short = re.sub(r"\(/.*?/src/", "(", short)
        out.append(f"| {100 * c / total:.1f} | `{short}` |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw", type=Path, help="py-spy --format raw output")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    print(summarize(load(args.raw), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
