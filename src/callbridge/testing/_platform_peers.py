"""The far end of the streams `LocalTwilio` opens: who answers a placed call, what
Twilio's answering machine detection makes of them, and how a stream is connected.

* `OutboundCall` is what the `answer` function sees; it may choose the AMD verdict.
  `AnsweringMachine` (`answering_machine()`) is a voicemail box: a greeting, a beep,
  then it records. `amd_verdict` is Twilio's AMD as a rule of thumb over the
  callee's audio, with Twilio's documented default thresholds.
* Connectors, `connect_stream(url, caller, headers)`: `dial_stream` opens a real
  WebSocket (the default), `asgi_stream(app)` talks ASGI WebSocket messages to an
  app in memory (the callbridge service, its checks included), `memory_stream(serve)`
  runs `serve(socket)` on an in-memory socket (e.g. `run_call`). The in-memory ones
  run on `MockClock`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import attrs
import trio

from .. import _mulaw
from .._sockets import MessageSocket, SocketClosed, memory_socket_pair
from ._net import dial_twilio_stream
from ._platform_rest import NewCall
from ._twilio import TwilioCaller, Utterance

__all__ = ["STREAM_GRACE_S", "AnsweringMachine", "OutboundCall", "StreamConnector",
           "amd_verdict", "answering_machine", "asgi_stream", "dial_stream", "memory_stream"]

#: `connect_stream(url, caller, headers)`: play `caller` on the stream at `url`
StreamConnector: TypeAlias = Callable[[str, TwilioCaller, Mapping[str, str]], Awaitable[None]]
AsgiApp: TypeAlias = Callable[[Any, Any, Any], Awaitable[None]]

#: how long a stream may take to end once it was told to, before it is cut
STREAM_GRACE_S = 10.0


@attrs.define(kw_only=True, eq=False)
class OutboundCall:
    """What the callee side of a placed call sees, when it answers (`answer`)."""

    sid: str
    from_: str
    to: str
    #: "Enable", "DetectMessageEnd" or None (no AMD asked)
    machine_detection: str | None
    #: set it to choose the AMD verdict ("human", "machine_end_beep", "fax", ...);
    #: default: what the callee sounds like
    answered_by: str | None = None
    #: seconds from the stream's start to the verdict; default: the callee's
    amd_after: float | None = None


class AnsweringMachine(TwilioCaller):
    """A voicemail box: says a greeting (loud synthetic speech), beeps, then records
    `message_s` of whatever it hears and hangs up. `message()` is what it recorded."""

    def __init__(self, *, greeting_s: float = 4.0, beep_hz: float = 1000.0,
                 beep_s: float = 0.5, message_s: float = 10.0, **kwargs: Any) -> None:
        samples = round(beep_s * 8000)
        beep = bytes(_mulaw.encode_sample(round(8000 * math.sin(2 * math.pi * beep_hz * n / 8000)))
                     for n in range(samples))
        super().__init__(utterances=[Utterance(at=0.0, duration=greeting_s),
                                     Utterance.recorded(beep, at=greeting_s)],
                         hangup_at=greeting_s + beep_s + message_s, **kwargs)
        self.greeting_s = greeting_s
        self.beep_hz = beep_hz
        self.beep_s = beep_s

    @property
    def beep_end(self) -> float:
        """Seconds from the stream's start to the end of the beep."""
        return self.greeting_s + self.beep_s

    def message(self, now: float | None = None) -> bytes:
        """The audio it heard after its beep: the message left on it."""
        t = trio.current_time() if now is None else now
        after = self.t0 + self.beep_end
        out = bytearray()
        for heard in self.heard:
            played = heard.played(t)
            skip = max(0.0, after - heard.start)
            out += played[round(skip * 8000):]
        return bytes(out)


def answering_machine(*, greeting_s: float = 4.0, beep_hz: float = 1000.0, beep_s: float = 0.5,
                      message_s: float = 10.0) -> AnsweringMachine:
    """An answering machine to `answer` a placed call with (see `AnsweringMachine`)."""
    return AnsweringMachine(greeting_s=greeting_s, beep_hz=beep_hz, beep_s=beep_s,
                            message_s=message_s)


@attrs.frozen
class Verdict:
    """Twilio's AMD verdict (`AnsweredBy`), `after` seconds from the stream's start."""

    answered_by: str
    after: float


def amd_verdict(call: OutboundCall, callee: TwilioCaller, new: NewCall) -> Verdict:
    """What Twilio's AMD would say about `callee`, and when (seconds after answer),
    with the call's thresholds: speech longer than `MachineDetectionSpeechThreshold`
    is a machine (with `DetectMessageEnd`: once it ends, after a beep or
    `...SpeechEndThreshold` of silence), shorter is a human once that much silence
    followed, nothing within `...SilenceTimeout` is "unknown". An `AnsweringMachine`
    is `machine_end_beep` once its beep ends, or `machine_start` once it has spoken
    for the threshold. What the `answer` function set on `call` wins."""
    speech = new.amd_speech_threshold / 1000
    end = new.amd_speech_end_threshold / 1000
    silence = new.amd_silence_timeout / 1000
    end_of_message = new.machine_detection == "DetectMessageEnd"
    if isinstance(callee, AnsweringMachine):
        verdict = (Verdict("machine_end_beep", callee.beep_end) if end_of_message
                   else Verdict("machine_start", min(speech, callee.greeting_s)))
    else:
        first = min(callee.utterances, key=lambda u: u.at, default=None)
        if first is None or first.at >= silence:
            verdict = Verdict("unknown", silence)
        elif first.duration >= speech:
            verdict = (Verdict("machine_end_silence", first.at + first.duration + end)
                       if end_of_message else Verdict("machine_start", first.at + speech))
        else:
            verdict = Verdict("human", first.at + first.duration + end)
    if verdict.after > new.amd_timeout:
        verdict = Verdict("unknown", new.amd_timeout)
    return Verdict(call.answered_by or verdict.answered_by,
                   verdict.after if call.amd_after is None else call.amd_after)


async def dial_stream(url: str, caller: TwilioCaller, headers: Mapping[str, str]) -> None:
    """The default `connect_stream`: a real WebSocket (trio-websocket), the headers
    on the upgrade. A `wss://` URL on a loopback host is dialled as `ws://`."""
    parts = urlsplit(url)
    if parts.scheme == "wss" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        url = "ws://" + url.removeprefix("wss://")
    await dial_twilio_stream(caller, url, **{k.replace("-", "_"): v for k, v in headers.items()})


def memory_stream(serve: Callable[[MessageSocket], Awaitable[object]]) -> StreamConnector:
    """A `connect_stream` that plays each stream against `serve(socket)` on an
    in-memory socket, e.g. `lambda socket: run_call(socket, agent=..., backend=...)`."""
    async def connect(url: str, caller: TwilioCaller, headers: Mapping[str, str]) -> None:
        twilio_end, server_end = memory_socket_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, server_end)
            await caller.run(twilio_end)

    return connect


def asgi_stream(app: AsgiApp) -> StreamConnector:
    """A `connect_stream` that opens each stream on an ASGI app's WebSocket endpoint
    in memory (e.g. the callbridge service: its signature and token checks run)."""
    async def connect(url: str, caller: TwilioCaller, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        scope = {
            "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "scheme": parts.scheme, "server": (parts.hostname, parts.port or 443),
            "client": ("127.0.0.1", 0), "root_path": "", "subprotocols": [],
            "path": parts.path or "/", "raw_path": (parts.path or "/").encode(),
            "query_string": parts.query.encode(), "extensions": {},
            "headers": [(b"host", parts.netloc.encode()),
                        *((k.lower().encode(), v.encode()) for k, v in headers.items())],
        }
        to_app, app_inbox = trio.open_memory_channel[Any](math.inf)
        app_outbox, from_app = trio.open_memory_channel[Any](math.inf)
        to_app.send_nowait({"type": "websocket.connect"})
        app_done = trio.Event()

        async def run_app() -> None:
            try:
                async with app_outbox:
                    await app(scope, app_inbox.receive, app_outbox.send)
            finally:
                app_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_app)
            try:
                first = await from_app.receive()
            except trio.EndOfChannel:
                first = {"type": "websocket.close"}
            if first["type"] != "websocket.accept":
                nursery.cancel_scope.cancel()
                raise ConnectionRefusedError(f"the WebSocket upgrade was refused: {first}")
            await caller.run(_AsgiClientSocket(to_app, from_app))
            with trio.move_on_after(STREAM_GRACE_S):
                await app_done.wait()
            nursery.cancel_scope.cancel()

    return connect


class _AsgiClientSocket:
    """The client's end of an in-memory ASGI WebSocket (a `MessageSocket`)."""

    def __init__(self, to_app: trio.MemorySendChannel[Any],
                 from_app: trio.MemoryReceiveChannel[Any]) -> None:
        self._to_app, self._from_app = to_app, from_app
        self.closed = False

    async def send(self, text: str) -> None:
        if self.closed:
            raise SocketClosed("websocket is closed")
        try:
            await self._to_app.send({"type": "websocket.receive", "text": text})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise SocketClosed("websocket is closed") from None

    async def receive(self) -> str | bytes | None:
        while not self.closed:
            try:
                message = await self._from_app.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self.closed = True
                break
            if message["type"] == "websocket.send":
                text = message.get("text")
                return text if text is not None else bytes(message.get("bytes") or b"")
            if message["type"] == "websocket.close":
                # as an ASGI server does: the app learns the connection is gone
                await self.aclose(int(message.get("code", 1000)))
        return None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            try:
                self._to_app.send_nowait({"type": "websocket.disconnect", "code": code})
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.lowlevel.checkpoint()
