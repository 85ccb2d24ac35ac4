"""Faults of the Twilio side, whole calls: media before `start`, a stream that never
says anything, both sides closing at once, a TCP reset mid-sentence, and a peer
that drips bytes (slowloris) into the upgrade or into a frame. The rows of
docs/faults.md.

Virtual time (`autojump_clock`) wherever no real socket is involved. The service
tests run callbridge's app under hypercorn's trio worker in this process, on
loopback, bounded by `fail_after`, and assert what happened, never how fast.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_service import _hypercorn, http
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from callbridge import (
    Agent,
    CallLimits,
    CallRefused,
    EndReason,
    codec,
    memory_socket_pair,
    run_call,
)
from callbridge import events as ev
from callbridge import twilio as tw
from callbridge.app import MAX_TWILIO_MESSAGE, create_app
from callbridge.backend import EventConnection, RealtimeConnection
from callbridge.config import Settings
from callbridge.local import LocalRealtimeServer
from callbridge.testing import (
    SimulatedCall,
    TwilioCaller,
    dial_twilio_stream,
    serve_realtime_websocket,
    server_process,
)

FRAME = 160
SID = "MZ00000000000000000000000000000001"
OTHER = "MZ" + "f" * 32
GREETER = Agent(greeting="Greet the caller.", idle_timeout=None)


async def simulate(model: Any, caller: TwilioCaller, *, wrap: Any = None,
                   agent: Agent = GREETER, **options: Any) -> SimulatedCall:
    """One whole call over in-memory sockets; `wrap` wraps the bridge's end."""
    events: list[ev.CallEvent] = []
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(bridge_end if wrap is None else wrap(bridge_end), agent=agent,
                                backend=model, on_event=events.append, **options)
    return SimulatedCall(result=result, caller=caller, model=model, events=events)


def media(audio: bytes, sid: str = SID) -> str:
    return codec.encode(tw.Media(stream_sid=sid, payload=base64.b64encode(audio).decode(),
                                 track="inbound", chunk=1, timestamp=0))


# --- media before `start` ----------------------------------------------------------------

EARLY = bytes(range(160)) * 5  # five frames, each a ramp: nothing the caller says


class EarlyMedia:
    """Twilio's side with media frames of `sid` slipped in before its `start`."""

    def __init__(self, inner: Any, sid: str = SID) -> None:
        self.inner, self.pending = inner, deque[str | bytes]()
        self.early = [media(EARLY[i:i + FRAME], sid) for i in range(0, len(EARLY), FRAME)]

    async def send(self, text: str) -> None:
        await self.inner.send(text)

    async def receive(self) -> str | bytes | None:
        if self.pending:
            return self.pending.popleft()
        text = await self.inner.receive()
        if self.early and isinstance(text, str) and json.loads(text)["event"] == "start":
            self.pending.extend([*self.early[1:], text])
            text, self.early = self.early[0], []
        return text  # type: ignore[no-any-return]

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)


async def test_media_before_start_is_taken_as_the_callers_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Twilio sends `start` before any media; frames that come earlier anyway are
    buffered like any caller audio (bounded, drop-oldest) and reach the model ahead
    of the rest, in order. Nothing goes to Twilio before `start`."""
    model = LocalRealtimeServer(default_reply_ms=500)
    caller = TwilioCaller(hangup_at=2.0)
    run = await simulate(model, caller, wrap=EarlyMedia)
    assert run.result.reason is EndReason.CALLER_HANGUP
    assert bytes(run.session.input_audio) == EARLY + bytes(caller.sent_audio)
    assert run.result.stats.frames_in == 5 + 100 and run.result.stats.protocol_errors == 0
    run.check_protocols()  # the caller flags anything it got before `start`


async def test_media_before_a_refused_start_never_reaches_a_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With `authorize` (the service's stream token), no model session opens before
    `start` is let in: early media waits, and when `start` is refused it is dropped
    with the call (closed 1008)."""

    def refuse(start: tw.Start) -> None:
        raise CallRefused("no stream token")

    model = LocalRealtimeServer()
    caller = TwilioCaller(hangup_at=5.0)
    run = await simulate(model, caller, wrap=EarlyMedia, authorize=refuse)
    assert (run.result.reason, run.result.detail) == (EndReason.REFUSED, "no stream token")
    assert model.sessions == [] and model.received == []
    assert caller.closed_by_server and caller.received == []


async def test_media_of_another_stream_before_start_is_not_forwarded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = LocalRealtimeServer(default_reply_ms=500)
    caller = TwilioCaller(hangup_at=2.0)
    run = await simulate(model, caller, wrap=partial(EarlyMedia, sid=OTHER))
    assert run.result.reason is EndReason.CALLER_HANGUP
    assert run.result.stats.protocol_errors == 5
    assert bytes(run.session.input_audio) == bytes(caller.sent_audio)


# --- a stream that says nothing ------------------------------------------------------------


async def test_a_stream_that_never_sends_anything_ends_at_media_idle_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Upgraded, then silent (not even `connected`): with the default limits the media
    watchdog (10 s) fires before the `start` timeout (15 s). Without `authorize` the
    model session opened at once and is closed with the call."""
    model = LocalRealtimeServer()
    twilio_end, bridge_end = memory_socket_pair()
    began = trio.current_time()
    result = await run_call(bridge_end, agent=GREETER, backend=model)
    assert (result.reason, result.detail) == (EndReason.MEDIA_TIMEOUT,
                                              "nothing from Twilio for 10 s")
    assert trio.current_time() - began == pytest.approx(10.0)  # our close ends it at once
    assert twilio_end.close_code == 1000  # closed by us: Twilio runs what follows
    assert [s.closed for s in model.sessions] == [True]


# --- both sides close at once ----------------------------------------------------------


class ClosesAt:
    """The local model, whose every connection's socket the server closes (1011) at
    the call time `at`."""

    def __init__(self, inner: LocalRealtimeServer, at: float) -> None:
        self.inner, self.at, self.sessions = inner, at, inner.sessions
        self.connections = 0

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        self.connections += 1
        client, server_end = memory_socket_pair()

        async def close() -> None:
            await trio.sleep_until(self.at)
            await server_end.aclose(1011, "internal error")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(self.inner.serve, server_end, model=model))
            nursery.start_soon(close)
            try:
                yield EventConnection(client)
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("model_offset", [-0.01, 0.0, 0.01],
                         ids=["model-first", "same-instant", "twilio-first"])
@pytest.mark.parametrize("send_stop", [True, False], ids=["stop-then-close", "close-only"])
async def test_both_sides_closing_at_once_ends_the_call_cleanly(
    autojump_clock: trio.testing.MockClock, model_offset: float, send_stop: bool,
) -> None:
    """The caller hangs up (`stop` and close, or just close) as the model's socket
    closes: the call ends as Twilio's end says, at once (no wait for a model that
    will not come back), with every model session closed."""
    began = trio.current_time()
    local = LocalRealtimeServer(default_reply_ms=5000, speedup=1.0)  # mid-sentence
    model = ClosesAt(local, began + 2.0 + model_offset)
    caller = TwilioCaller(hangup_at=2.0, send_stop=send_stop)
    run = await simulate(model, caller)
    expected = EndReason.CALLER_HANGUP if send_stop else EndReason.TWILIO_CLOSED
    assert run.result.reason is expected
    [end] = [e for e in run.events if isinstance(e, ev.End)]
    assert end.at - began < 2.1
    assert model.connections <= 2 and all(s.closed for s in local.sessions)
    assert not caller.closed_by_server and caller.violations == []


# --- over the real service: a reset, and slowloris -------------------------------------------


def ended(caplog: pytest.LogCaptureFixture, call_sid: str) -> list[str]:
    """The service's "call ... ended: <reason> ..." lines for one call."""
    return [r.getMessage() for r in caplog.records
            if r.name == "callbridge.app" and r.getMessage().startswith(f"call {call_sid} ended:")]


def start_message(call_sid: str) -> str:
    return codec.encode(tw.Start(stream_sid=SID, account_sid="AC" + "0" * 32,
                                 call_sid=call_sid, sequence_number=1))


@asynccontextmanager
async def service(model: LocalRealtimeServer, limits: CallLimits | None = None,
                  front_door: bool = False) -> AsyncIterator[tuple[Any, str]]:
    """callbridge's app (unguarded) under hypercorn in this process, on loopback, its
    model the local one on a real socket: yields the app and its `host:port`."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_realtime_websocket, model))
        app = create_app(Settings(openai_api_key="sk-test-not-a-key",
                                  openai_base_url=f"http://127.0.0.1:{port}/v1",
                                  greeting="Say hello."), limits=limits,
                         front_door=front_door)
        host = await _hypercorn(app, nursery)
        yield app, host
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_websocket(host: str) -> AsyncIterator[tuple[trio.SocketStream, WSConnection]]:
    """A bare WebSocket client (wsproto) upgraded at `/media-stream`, for the test to
    write what it likes, a byte at a time if it likes."""
    name, port = host.rsplit(":", 1)
    stream = await trio.open_tcp_stream(name, int(port))
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=host, target="/media-stream")))
        accepted = False
        while not accepted:
            data = await stream.receive_some()
            assert data, "the server closed during the handshake"
            ws.receive_data(bytes(data))
            accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
        yield stream, ws


async def closing(stream: trio.SocketStream, ws: WSConnection) -> list[CloseConnection]:
    """Read until the server's close frame (which it returns) or the connection's end."""
    try:
        while data := await stream.receive_some():
            ws.receive_data(bytes(data))
            if close := [e for e in ws.events() if isinstance(e, CloseConnection)]:
                return close
    except trio.BrokenResourceError:
        pass
    return []


async def until(check: Any) -> None:
    """Poll `check()` (a log line, a session's close: nothing to wait on)."""
    while not check():  # noqa: ASYNC110 - polled: no event to wait on for these
        await trio.sleep(0.05)


async def test_a_tcp_reset_mid_sentence_ends_the_call_and_the_worker_serves_on(
    caplog: pytest.LogCaptureFixture, front_door: bool,
) -> None:
    """Twilio's connection is reset (RST) while the agent talks: the call ends as
    `twilio_closed`, its model session is closed, and the worker serves the next
    call as before."""
    caplog.set_level(logging.INFO, logger="callbridge.app")
    call_sid = "CA" + "5e7" * 10 + "00"
    model = LocalRealtimeServer(default_reply_ms=60_000)  # talks for a minute
    with trio.fail_after(60):
        async with service(model, front_door=front_door) as (app, host):
            async with raw_websocket(host) as (stream, ws):
                for text in [codec.encode(tw.Connected()), start_message(call_sid),
                             *[media(b"\xff" * FRAME)] * 10]:
                    await stream.send_all(ws.send(TextMessage(data=text)))
                heard = 0
                while heard < 5:  # mid-sentence: the greeting's audio is arriving
                    ws.receive_data(bytes(await stream.receive_some()))
                    heard += sum(isinstance(e, TextMessage) and '"media"' in e.data
                                 for e in ws.events())
                # SO_LINGER 0: close() sends RST, not FIN
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack("ii", 1, 0))
                stream.socket.close()
            await until(lambda: model.sessions[0].closed and ended(caplog, call_sid))
            [line] = ended(caplog, call_sid)
            assert line.startswith(f"call {call_sid} ended: twilio_closed "), line
            assert app.active_calls == 0
            # the next call on the same worker
            caller = TwilioCaller(hangup_at=30.0, hangup_after_audio=0.2,
                                  call_sid="CA" + "1" * 32)
            await dial_twilio_stream(caller, f"ws://{host}/media-stream")
            assert caller.heard_audio() and caller.violations == []
            status, body = await http(host, "GET", "/")
            assert status == 200 and json.loads(body)["active_calls"] == 0
    assert "call failed" not in caplog.text


@pytest.mark.slow
async def test_callbridge_serve_refuses_a_1_mib_frame_as_it_streams_in(tmp_path: Path) -> None:
    """Under `callbridge serve`, the front door caps WebSocket messages at
    `MAX_TWILIO_MESSAGE` (64 KiB) as soon as a frame's header declares its size: a
    1 MiB frame of which only the first 128 KiB are ever sent is refused with 1009
    (nothing waits for, or buffers, the whole of it). Plain `hypercorn
    callbridge.app:app` would wait for the rest (hypercorn's own cap is 16 MiB) and
    the app would refuse it whole (tests/test_service_security.py)."""
    command = [sys.executable, "-m", "callbridge", "serve", "--host", "127.0.0.1",
               "--port", "{port}"]
    close: list[CloseConnection] = []
    with trio.fail_after(60):
        # offline (no key: the echo agent), in a directory without a .env
        async with server_process(command, {"OPENAI_API_KEY": ""}, cwd=tmp_path) as server:
            async with raw_websocket(server.host) as (stream, ws):
                for text in [codec.encode(tw.Connected()), start_message("CA" + "b1" * 16)]:
                    await stream.send_all(ws.send(TextMessage(data=text)))
                frame = ws.send(TextMessage(data="x" * MAX_TWILIO_MESSAGE * 16))
                try:  # the head of the frame, and no more
                    await stream.send_all(frame[:2 * MAX_TWILIO_MESSAGE])
                except trio.BrokenResourceError:
                    pass  # refused while it was still being sent
                close += await closing(stream, ws)
    assert [c.code for c in close] == [1009]


async def test_a_slowloris_upgrade_is_cut_by_hypercorns_keep_alive_timeout(
        front_door: bool) -> None:
    """A client dripping its upgrade request, a byte a second: no request is ever
    complete, so the app never sees it, and hypercorn's `keep_alive_timeout` (5 s
    by default, from the connection's opening; the front door's `HEAD_TIMEOUT_S`,
    10 s) closes the connection long before the request could end. No model session
    is opened."""
    model = LocalRealtimeServer()
    request = (b"GET /media-stream HTTP/1.1\r\nHost: bridge\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    dripped = 0
    answer = b""
    with trio.fail_after(60):  # the request would take 140 s to drip
        async with service(model, front_door=front_door) as (app, host):
            name, port = host.rsplit(":", 1)
            stream = await trio.open_tcp_stream(name, int(port))
            async with stream, trio.open_nursery() as nursery:

                async def drip() -> None:
                    nonlocal dripped
                    for byte in request:
                        try:
                            await stream.send_all(bytes([byte]))
                        except trio.BrokenResourceError:
                            return
                        dripped += 1
                        await trio.sleep(1.0)

                nursery.start_soon(drip)
                try:
                    while chunk := await stream.receive_some():
                        answer += chunk
                except trio.BrokenResourceError:
                    pass  # reset: as closed
                nursery.cancel_scope.cancel()
            assert app.active_calls == 0
    assert 0 < dripped < len(request)  # cut off mid-request
    assert answer == b""  # closed without an answer
    assert model.sessions == []


@pytest.mark.parametrize("dripped_message", ["start", "media"])
async def test_a_message_dripped_a_byte_a_second_ends_the_call_at_media_idle_s(
    caplog: pytest.LogCaptureFixture, dripped_message: str, front_door: bool,
) -> None:
    """Once upgraded, hypercorn has no timeout on a WebSocket (`read_timeout` is None):
    a frame dripped a byte a second is bounded by the call's own watchdog. No whole
    message arrives, so after `media_idle_s` the call ends as `media_timeout` and the
    service closes the socket (1000), whether the frame is `start` or media after it."""
    caplog.set_level(logging.INFO, logger="callbridge.app")
    call_sid = "CA" + "d1" * 16
    model = LocalRealtimeServer(default_reply_ms=500)
    limits = CallLimits(media_idle_s=2.0, close_wait=1.0)
    dripped = 0
    with trio.fail_after(60):
        async with service(model, limits, front_door) as (_, host):
            async with raw_websocket(host) as (stream, ws):
                before = [codec.encode(tw.Connected())]
                if dripped_message == "media":
                    before += [start_message(call_sid), media(b"\xff" * FRAME)]
                for text in before:
                    await stream.send_all(ws.send(TextMessage(data=text)))
                slow = ws.send(TextMessage(data=start_message(call_sid)
                                           if dripped_message == "start"
                                           else media(b"\xff" * FRAME)))
                close: list[CloseConnection] = []
                async with trio.open_nursery() as nursery:

                    async def drip() -> None:
                        nonlocal dripped
                        for byte in slow:
                            try:
                                await stream.send_all(bytes([byte]))
                            except (trio.BrokenResourceError, trio.ClosedResourceError):
                                return
                            dripped += 1
                            await trio.sleep(1.0)

                    nursery.start_soon(drip)
                    close += await closing(stream, ws)
                    nursery.cancel_scope.cancel()
            sid = call_sid if dripped_message == "media" else "None"  # no `start`: no SID
            await until(lambda: ended(caplog, sid))
            [line] = ended(caplog, sid)
            assert line.startswith(f"call {sid} ended: media_timeout "), line
            await until(lambda: all(s.closed for s in model.sessions))
    assert [c.code for c in close] == [1000]
    assert 0 < dripped < len(slow)
    assert "call failed" not in caplog.text
