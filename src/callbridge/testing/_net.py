"""The local peers over real sockets (loopback): a realtime endpoint and a Twilio dialer."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import IO, Protocol

import attrs
import trio

from .._sockets import MessageSocket, TrioWebSocket
from ..local import LocalPcmPlatform
from ._twilio import TwilioCaller

__all__ = ["Handshake", "HypercornProcess", "dial_twilio_stream", "hypercorn_process",
           "serve_pcm_websocket", "serve_realtime_websocket"]


class _Serves(Protocol):
    async def serve(self, socket: MessageSocket) -> None: ...


@attrs.frozen
class Handshake:
    """What a realtime client sent in its WebSocket upgrade (for checks on the client)."""

    path: str
    headers: dict[str, str]


async def serve_realtime_websocket(
    server: _Serves,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_handshake: Callable[[Handshake], None] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `server` (e.g. a `LocalRealtimeServer`) as a realtime WebSocket endpoint
    at `ws://host:port/v1/realtime?model=...`; reports the bound port via `nursery.start`.
    Point `OpenAIRealtime(base_url=f"http://host:{port}/v1")` at it."""
    from trio_websocket import WebSocketRequest, serve_websocket

    async def handler(request: WebSocketRequest) -> None:
        path = request.path.partition("?")[0]
        if path != "/v1/realtime":
            await request.reject(404)
            return
        if on_handshake is not None:
            on_handshake(Handshake(
                path=request.path,
                headers={k.decode().lower(): v.decode() for k, v in request.headers},
            ))
        ws = await request.accept()
        await server.serve(TrioWebSocket(ws))

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(partial(
            serve_websocket, handler, host, port, None, max_message_size=16 * 1024 * 1024))
        task_status.started(listener.port)


async def serve_pcm_websocket(
    platform: LocalPcmPlatform,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a PCM voice platform (`callbridge.local.LocalPcmPlatform`) on a loopback
    WebSocket, one call per connection, at any path (VAPI's call URLs are
    `/<call id>/transport`); reports the bound port via `nursery.start`."""
    from trio_websocket import WebSocketRequest, serve_websocket

    async def handler(request: WebSocketRequest) -> None:
        await platform.serve(TrioWebSocket(await request.accept()))

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(partial(serve_websocket, handler, host, port, None))
        task_status.started(listener.port)


async def dial_twilio_stream(caller: TwilioCaller, url: str, **headers: str) -> None:
    """Connect `caller` to a media-stream WebSocket URL as Twilio does, and play the call."""
    from trio_websocket import open_websocket_url

    extra = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    from trio_websocket import ConnectionClosed

    async with open_websocket_url(url, extra_headers=extra, connect_timeout=5,
                                  disconnect_timeout=2) as ws:
        await caller.run(TrioWebSocket(ws))
        # Read whatever the server still had in flight: trio-websocket's reader task
        # blocks for good on a full message queue, and its context would never exit.
        with trio.move_on_after(10):
            while True:
                try:
                    await ws.get_message()
                except ConnectionClosed:
                    break


@attrs.frozen
class HypercornProcess:
    """A running `hypercorn --worker-class trio` process (see `hypercorn_process`)."""

    host: str
    _log: IO[bytes]
    #: the hypercorn process; its workers (one by default, `--workers N`) are its children
    pid: int = 0
    _process: trio.Process | None = None

    def log(self) -> str:
        """Everything the server printed so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def send_signal(self, signum: int) -> None:
        """Signal the hypercorn process (e.g. `signal.SIGTERM`: shut down)."""
        os.kill(self.pid, signum)

    async def wait(self) -> int:
        """Wait for the hypercorn process to exit; its exit status."""
        assert self._process is not None
        return await self._process.wait()


@asynccontextmanager
async def hypercorn_process(
    app: str, env: Mapping[str, str] | None = None, *, cwd: str | Path | None = None,
    startup_timeout: float = 20.0, args: Sequence[str] = (),
) -> AsyncIterator[HypercornProcess]:
    """Run `hypercorn --worker-class trio APP` in its own process on a free loopback
    port, as users run it, with `env` added to this process's environment and `args`
    added to its command line (e.g. `("--workers", "2")`); yields once it accepts
    connections, and stops it on exit."""
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio",
               "-b", "127.0.0.1:{port}", *args, app]
    async with server_process(command, env, cwd=cwd, startup_timeout=startup_timeout) as server:
        yield server


@asynccontextmanager
async def server_process(
    command: Sequence[str], env: Mapping[str, str] | None = None, *,
    cwd: str | Path | None = None, startup_timeout: float = 20.0,
) -> AsyncIterator[HypercornProcess]:
    """Run a server `command` in its own process on a free loopback port (`{port}` in
    its arguments is replaced by the port), output to a log; yields once it accepts
    connections, and stops it on exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryFile() as log:
        # The server's processes share this file's offset with us: appending, their
        # lines always go to the end, whatever `log()` (seek, read) does meanwhile;
        # otherwise a line written during a read lands mid-file, over older ones.
        fcntl.fcntl(log.fileno(), fcntl.F_SETFL, fcntl.fcntl(log.fileno(), fcntl.F_GETFL)
                    | os.O_APPEND)
        process = await trio.lowlevel.open_process(
            [arg.replace("{port}", str(port)) for arg in command],
            cwd=cwd, env=os.environ | dict(env or {}), stdout=log, stderr=subprocess.STDOUT)
        server = HypercornProcess(f"127.0.0.1:{port}", log, pid=process.pid, process=process)
        try:
            with trio.fail_after(startup_timeout):
                while True:
                    try:
                        await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        if process.returncode is not None:
                            raise RuntimeError(f"{command[2]} exited:\n{server.log()}") from None
                        await trio.sleep(0.05)
            yield server
        finally:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            process.kill()
