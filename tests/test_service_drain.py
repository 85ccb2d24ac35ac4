"""SIGTERM to a real `hypercorn --worker-class trio --workers 2 callbridge.app:app`:
the drain, as docs/drain.md tells it.

Real sockets and processes, so the real clock: bounded by `fail_after`, and nothing
checked depends on how long anything took. Calls come from synthetic Twilio callers
(each says its own quiet hiss, so its model session is found by content), the agent
talks through the local model. What must hold once the main process got SIGTERM:
the service answers (`/ready` 503, the webhook's busy TwiML, a stream closed with
1013 before any model session), never hangs; SIGTERM to a draining worker (what
hypercorn's main process sends once another worker exited) does not kill it; every
live call hears the drain line in full, all of what the model produced for it, and
then the service closes the stream with a close frame; the process exits 0; every
step is in the log.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import os
import random
import re
import signal
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from test_service import FRAME, hiss
from trio_websocket import ConnectionClosed, open_websocket_url
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from callbridge._sockets import TrioWebSocket
from callbridge.testing import (
    HypercornProcess,
    LocalRealtimeServer,
    Reply,
    ServerSession,
    Turn,
    TwilioCaller,
    Utterance,
    hypercorn_process,
    serve_realtime_websocket,
    server_process,
)

LINE = "We are restarting now. Please call back in a minute. Goodbye."
BUSY = "All our lines are busy. Please call again later."
DOCS = Path(__file__).parent.parent / "docs" / "drain.md"


def brain() -> Any:
    """1 s of greeting, then 1.5 s for what the agent is told to say; noise seeded by
    the reply's number, so no two replies share audio."""
    replies = iter(range(1_000_000))

    def reply(turn: Turn) -> Reply:
        ms = 1500 if turn.instructions and turn.instructions.startswith("Say exactly") else 1000
        return Reply(audio=random.Random(next(replies)).randbytes(ms * 8),
                     transcript=turn.instructions or "")

    return reply


class Caller(TwilioCaller):
    """Says its own hiss and stays on the line (until the service ends the call)."""

    def __init__(self, index: int) -> None:
        super().__init__(utterances=[Utterance.recorded(hiss(index, ms=120_000), at=0.0)],
                         hangup_at=120.0, stream_sid=f"MZ{index:032x}",
                         call_sid=f"CA{index:032x}")
        #: how the stream ended, as the caller saw it: when, and the close frame's code
        self.closed_at: float | None = None
        self.close_code: int | None = None


async def dial(caller: Caller, url: str) -> None:
    """`dial_twilio_stream`, keeping when and how the server closed the stream."""
    async with open_websocket_url(url, connect_timeout=5, disconnect_timeout=2) as ws:
        await caller.run(TrioWebSocket(ws))
        caller.closed_at = trio.current_time()
        with trio.move_on_after(10):  # read what is still in flight, as Twilio would
            while True:
                try:
                    await ws.get_message()
                except ConnectionClosed:
                    break
    assert ws.closed is not None
    caller.close_code = ws.closed.code


@contextlib.contextmanager
def log_on_failure(server: Any) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(server.log())  # (pytest shows it with the failure)
        raise


def session_of(model: LocalRealtimeServer, caller: TwilioCaller) -> ServerSession:
    first = bytes(caller.sent_audio[:FRAME])
    [session] = [s for s in model.sessions if s.input_audio[:FRAME] == first]
    return session


def log_config(tmp_path: Path) -> Path:
    """docs/drain.md's logging configuration for plain hypercorn, as it is written."""
    [toml] = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    path = tmp_path / "callbridge-logging.toml"
    path.write_text(toml)
    return path


async def until(predicate: Any) -> None:
    """Poll `predicate` (the log of another process: nothing to wait on)."""
    while True:
        if predicate():
            return
        await trio.sleep(0.05)


async def outcome(request: Any) -> Any:
    """What a request during the drain got; "refused" when nobody accepts any more
    (the last worker is gone: the port is closed, or the connection reset)."""
    try:
        return await request()
    except (OSError, trio.BrokenResourceError):
        return "refused"


async def upgrade(host: str) -> tuple[int, int | None] | str:
    """A media-stream upgrade, read raw: (101, the close frame's code) when the
    service accepted and closed the stream, (status, None) when it refused the
    upgrade, "refused" when the connection was closed unanswered."""
    name, port = host.rsplit(":", 1)
    key = base64.b64encode(random.randbytes(16)).decode()
    request = (f"GET /media-stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n")
    async with await trio.open_tcp_stream(name, int(port)) as stream:
        await stream.send_all(request.encode())
        data = bytearray()
        while True:
            header, _, frame = bytes(data).partition(b"\r\n\r\n")
            status = int(header.split()[1]) if _ else None
            if status is not None and status != 101:
                return status, None
            if status == 101 and len(frame) >= 2 and len(frame) >= 2 + (frame[1] & 0x7F):
                assert frame[0] == 0x88, frame  # a close frame, and nothing before it
                return 101, int.from_bytes(frame[2:4]) if frame[1] & 0x7F >= 2 else None
            if not (chunk := await stream.receive_some()):
                return "refused"
            data += chunk


async def http(host: str, method: str, path: str, body: bytes = b"",
               headers: dict[str, str] | None = None) -> tuple[int, bytes] | str:
    """One HTTP/1.1 request: (status, body), or "refused" when the connection was
    closed unanswered (accepted by the kernel as the last worker was exiting)."""
    name, port = host.rsplit(":", 1)
    head = {"Host": host, "Connection": "close", "Content-Length": str(len(body))} | (headers or {})
    request = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    async with await trio.open_tcp_stream(name, int(port)) as stream:
        await stream.send_all(request.encode() + b"\r\n" + body)
        data = bytearray()
        while b"\r\n\r\n" not in data:
            if not (chunk := await stream.receive_some()):
                return "refused"
            data += chunk
        header, _, payload = bytes(data).partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in header.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(payload) < length:
            if not (chunk := await stream.receive_some()):
                return "refused"
            payload += chunk
    return int(header.split()[1]), payload


async def sigterm_during(callers: list[Caller], server: HypercornProcess
                         ) -> tuple[set[str], tuple[Any, Any, Any]]:
    """Put the callers on the line, SIGTERM the service, and while it drains try a
    readiness check, a webhook and a stream; returns the workers' process ids and
    what the three got, once every caller's call is over."""
    host = server.host
    workers: set[str] = set()
    running = re.compile(r"\[(\d+)\] \[INFO\] Running on")

    def serving() -> bool:  # both workers (they log with their process ids)
        workers.update(running.findall(server.log()))
        return len(workers) == 2

    await until(serving)
    async with trio.open_nursery() as calls:
        for caller in callers:
            calls.start_soon(dial, caller, f"ws://{host}/media-stream")
        await until(lambda: all(c.heard for c in callers))  # the calls are live
        # the main process and its workers, as systemd stops a service (and as the
        # main process signals the workers left once one of them exited)
        server.send_signal(signal.SIGTERM)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
        await until(lambda: server.log().count("callbridge.app: draining (") >= 2)
        ready = await outcome(partial(http, host, "GET", "/ready"))
        webhook = await outcome(partial(
            http, host, "POST", "/incoming-call", b"CallSid=CA9&From=%2B15550100",
            {"Content-Type": "application/x-www-form-urlencoded"}))
        stream = await outcome(partial(upgrade, host))
    return workers, (ready, webhook, stream)


# trio-websocket's client leaves its socket to the garbage collector when the server
# closes first, which is what the service does to every caller here
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.slow
@pytest.mark.parametrize("served_by", ["hypercorn", "callbridge serve"])
async def test_sigterm_drains_two_workers_and_every_caller_hears_the_goodbye(
    tmp_path: Path, served_by: str,
) -> None:
    model = LocalRealtimeServer(brain(), speedup=10)
    callers = [Caller(i) for i in range(4)]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_realtime_websocket, model))
            env = {"OPENAI_API_KEY": "sk-test-not-a-key",
                   "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
                   "CALLBRIDGE_GREETING": "Say hello.", "CALLBRIDGE_DRAIN_S": "3",
                   "CALLBRIDGE_DRAIN_LINE": LINE, "CALLBRIDGE_BUSY_LINE": BUSY}
            if served_by == "hypercorn":  # the media stream through ASGI
                args = ("--workers", "2", "--graceful-timeout", "10",
                        "--log-config", f"toml:{log_config(tmp_path)}")
                service = hypercorn_process("callbridge.app:app", env, args=args)
            else:  # the front door
                service = server_process([sys.executable, "-m", "callbridge", "serve", "--host",
                                          "127.0.0.1", "--port", "{port}", "--workers", "2"], env)
            async with service as server:
                with log_on_failure(server):
                    workers, (ready, webhook, stream) = await sigterm_during(callers, server)
                    status = await server.wait()
                    log = server.log()
            nursery.cancel_scope.cancel()
    gc.collect()  # collect trio-websocket's stray sockets while the filter applies
    busy = VoiceResponse()
    busy.say(BUSY)
    busy.hangup()
    # answered, or (had the drain been over already) refused: never hung, never let in
    assert ready == "refused" or (ready[0], json.loads(ready[1])) == (
        503, {"ready": False, "draining": True}), ready
    assert webhook in ((200, str(busy).encode()), "refused"), webhook
    assert stream in ((101, 1013), "refused"), stream  # accepted, closed: no session
    assert len(model.sessions) == len(callers)  # none for the late stream
    problems = {}
    for caller in callers:
        session = session_of(model, caller)
        _, goodbye = session.responses
        said = bytes(session.produced[str(goodbye.item_id)])
        assert caller.closed_at is not None
        heard = caller.heard_audio(caller.closed_at)
        if goodbye.transcript != f"Say exactly this: {LINE}":
            problems[caller.stream_sid] = f"said {goodbye.transcript!r}"
        elif not heard.endswith(said):  # all of it, before the stream closed
            problems[caller.stream_sid] = "the goodbye was cut"
        elif (caller.close_code, caller.closed_by_server, caller.violations) != (1000, True, []):
            problems[caller.stream_sid] = (caller.close_code, caller.closed_by_server,
                                           caller.violations)
    assert problems == {}, log[-4000:]
    assert status == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    for pid in workers:
        mine = [line.split("callbridge.app: ", 1)[1] for line in log.splitlines()
                if f"[{pid}] " in line and "callbridge.app: " in line]
        steps = [s for s in mine if s.startswith(("draining (", "drain"))]
        assert steps[0].startswith(("draining (SIGTERM)", "draining (the main process")
                                   ), mine
        assert steps[-2].startswith("drained in ") and steps[-1] == (
            "drained: hypercorn's own shutdown begins"), mine
        if "live calls: 0;" not in steps[0]:
            assert steps[1].startswith("drain: 3 s passed"), mine


def listening_sockets(port: int, pids: set[int]) -> dict[int, set[str]]:
    """Per process, the inodes of the listening TCP sockets on `port` it holds."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            listening.add(fields[9])
    held: dict[int, set[str]] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in listening:
                held.setdefault(pid, set()).add(target[8:-1])
    return held


@pytest.mark.slow
async def test_callbridge_serve_shows_every_workers_lines_and_drains_on_sigterm() -> None:
    """`callbridge serve --workers 2`: each worker logs from its startup on (it is a new
    process: `serve` has it set up logging before it loads the app), and SIGTERM
    drains both, then the process exits 0."""
    command = [sys.executable, "-m", "callbridge", "serve", "--host", "127.0.0.1",
               "--port", "{port}", "--workers", "2"]
    with trio.fail_after(60):
        async with server_process(command, {"OPENAI_API_KEY": "sk-test-not-a-key"}) as server:
            ready = re.compile(r"\[(\d+)\] \[INFO\] callbridge\.app: callbridge ready")
            await until(lambda: len(set(ready.findall(server.log()))) == 2)
            answer = await http(server.host, "GET", "/ready")
            assert isinstance(answer, tuple) and answer[0] == 200
            assert json.loads(answer[1]) == {"ready": True}
            # each worker listens on a socket of its own (SO_REUSEPORT): the kernel
            # spreads connections over them, where one shared socket does not
            pids = {int(pid) for pid in ready.findall(server.log())}
            held = listening_sockets(int(server.host.rsplit(":", 1)[1]), pids)
            assert len(held) == 2 and all(len(inodes) == 1 for inodes in held.values()), held
            assert len(set.union(*held.values())) == 2, held
            server.send_signal(signal.SIGTERM)
            status = await server.wait()
            log = server.log()
    assert status == 0, log
    for pid in set(ready.findall(log)):
        mine = [line.split("callbridge.app: ", 1)[1] for line in log.splitlines()
                if f"[{pid}] [INFO] callbridge.app: " in line]
        # (the main process's event, or its SIGTERM once the other worker exited)
        assert re.fullmatch(r"draining \((SIGTERM|the main process is shutting down "
                            r"\(SIGTERM or SIGINT\))\): live calls: 0; new calls are turned "
                            r"away, GET /ready answers 503; the live calls may go on for 20 s",
                            mine[-3]), log
        assert mine[-2] == "drained in 0.0 s: no call is live", log
        assert mine[-1] == "drained: hypercorn's own shutdown begins", log
