"""One phone call: Twilio Media Streams <-> a realtime model, in one nursery.

Tasks (all in the call's nursery, none outlives it):

    Twilio reader ──caller audio──▶ model writer ──▶ model socket
    model reader  ──model audio───▶ playout      ──▶ Twilio socket

* Twilio reader: decodes frames; caller audio goes to a drop-oldest buffer (it must
  never block, so marks and `stop` are handled even while the model side stalls);
  mark echoes update the playback state.
* Model writer: opens the model connection as soon as the call starts, in parallel
  with waiting for Twilio's `start`; sends `session.update` first, then the caller
  audio buffered so far, in order, then live audio. Frames that queued up while it
  was busy go out as one `append` (up to `coalesce_ms`); an idle call adds no delay.
* Model reader: handles server events. Audio deltas go to the playout channel
  (bounded; when full the model reader waits: the model is read no faster than
  Twilio takes audio). `speech_started` triggers barge-in.
* Playout: the only task that sends audio to Twilio, one `media` per chunk, followed
  by a `mark` once `mark_ms` of audio went without one, and when the model's audio
  pauses;
  chunks of one item that queued up while it was sending are merged (up to
  `coalesce_ms`) into one `media`. It runs under a cancel scope: barge-in
  cancels it (dropping whatever it had not sent yet), sends `clear`, and starts a
  fresh one with a fresh channel.

Teardown: Twilio's `stop` ends the model side at once, then we wait (bounded) for
Twilio to close its socket rather than closing it ourselves: closing while the
client's close is in flight is what crashes hypercorn's trio worker. When the model
side ends first, we close the Twilio socket so Twilio runs the next TwiML verb.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from . import codec
from . import realtime as rt
from . import twilio as tw
from ._errors import RemoteProtocolError
from ._playback import Playback
from ._sockets import MessageSocket, SocketClosed, as_message_socket
from .agent import Agent
from .backend import ModelConnectError, OpenAIRealtime, RealtimeBackend, RealtimeConnection

__all__ = ["CallEvent", "CallLimits", "CallRefused", "CallResult", "CallStats", "run_call"]

log = logging.getLogger("callbridge.call")

#: a playout chunk: (item id, start byte, end byte, base64 audio)
_Chunk = tuple[str, int, int, str]
#: not audio: tells playout that the model's audio paused (mark what went unmarked)
_MARK_TAIL: _Chunk = ("", 0, 0, "")


@attrs.frozen(kw_only=True)
class CallLimits:
    """Buffer sizes and timeouts of one call (the defaults suit phone calls)."""

    #: caller audio frames kept while the model is connecting or stalled (20 ms each);
    #: when full the oldest frame is dropped and counted
    caller_buffer_frames: int = 500
    #: model audio chunks waiting for the Twilio socket; when full the model reader waits
    playout_buffer_chunks: int = 256
    #: Twilio must send `start` within this many seconds of the socket opening
    start_timeout: float = 15.0
    #: a single send to Twilio taking longer than this means the socket is dead
    send_timeout: float = 10.0
    #: after `stop`, how long to wait for Twilio to close its socket before we do
    close_wait: float = 5.0
    #: audio that queued up behind a busy socket is sent as one message of about this
    #: many ms at most, either way (fewer messages when behind; 0 turns it off)
    coalesce_ms: int = 100
    #: a Twilio `mark` follows the chunk that completes this many ms of audio since
    #: the last one, and the end of each response. Echoed marks are how we know what the caller heard: finer
    #: marks keep the barge-in truncation truer when Twilio's playback lags behind
    #: what we sent; coarser ones save two messages per mark. 0: after every chunk
    mark_ms: int = 100


class CallRefused(Exception):
    """Raised by an `authorize` callback: this stream may not open a model session."""


@attrs.define
class CallStats:
    """Per-call counters; the seam for metrics and call records."""

    frames_in: int = 0
    frames_to_model: int = 0
    frames_dropped: int = 0
    chunks_out: int = 0
    bytes_out: int = 0
    marks_played: int = 0
    marks_discarded: int = 0
    barge_ins: int = 0
    truncations: int = 0
    stale_deltas: int = 0
    model_errors: int = 0
    protocol_errors: int = 0


@attrs.frozen(kw_only=True)
class CallEvent:
    """Something worth telling an observer (logs, timelines, metrics)."""

    kind: str
    at: float
    data: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class CallResult:
    """How a call ended: `reason` is one of `caller_hangup` (Twilio `stop`),
    `twilio_closed` (socket closed without `stop`), `model_closed`, `model_error`,
    `no_start`, `twilio_stalled`, `refused` (`authorize` raised `CallRefused`)."""

    reason: str
    detail: str = ""
    stream_sid: str | None = None
    call_sid: str | None = None
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict)
    stats: CallStats = attrs.field(factory=CallStats)


class _CallerAudio:
    """Caller audio on its way to the model. Policy when full: drop the oldest frame
    and count it, so the Twilio reader never waits on the model."""

    def __init__(self, capacity: int, stats: CallStats) -> None:
        self._send, self.receive_channel = trio.open_memory_channel[str](capacity)
        self._stats = stats

    def push(self, payload: str) -> None:
        try:
            self._send.send_nowait(payload)
        except trio.WouldBlock:
            self.receive_channel.receive_nowait()
            self._stats.frames_dropped += 1
            self._send.send_nowait(payload)


class _Call:
    def __init__(
        self,
        socket: MessageSocket,
        agent: Agent,
        backend: RealtimeBackend,
        limits: CallLimits,
        on_event: Callable[[CallEvent], None] | None,
        authorize: Callable[[tw.Start], None] | None,
    ) -> None:
        self.twilio = socket
        self.authorize = authorize
        self.agent = agent
        self.backend = backend
        self.limits = limits
        self.on_event = on_event
        self.stats = CallStats()
        self.playback = Playback(auto_cancel=agent.auto_cancel,
                                 mark_bytes=limits.mark_ms * tw.BYTES_PER_MS)
        self.caller_audio = _CallerAudio(limits.caller_buffer_frames, self.stats)
        self.start: tw.Start | None = None
        self.started = trio.Event()
        self.ended = trio.Event()
        self.reason = ""
        self.detail = ""
        self.twilio_closed = trio.Event()
        self.send_lock = trio.Lock()
        self.pumps: trio.Nursery | None = None
        self.playout_scope: trio.CancelScope | None = None
        self.playout_send: trio.MemorySendChannel[_Chunk] | None = None

    # --- bookkeeping -----------------------------------------------------------------

    def emit(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(CallEvent(kind=kind, at=trio.current_time(), data=data))

    def end(self, reason: str, detail: str = "") -> None:
        if not self.ended.is_set():
            self.reason, self.detail = reason, detail
            self.ended.set()

    @property
    def stream_sid(self) -> str:
        assert self.start is not None
        return self.start.stream_sid

    async def send_twilio(self, *messages: tw.Media | tw.Mark | tw.Clear) -> None:
        """Send messages to Twilio, back to back; a send that hangs past `send_timeout`
        ends the call. Shielded so a cancelled sender never leaves half a frame on the
        socket."""
        texts = [codec.encode(message) for message in messages]
        deadline = trio.current_time() + self.limits.send_timeout
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            # the lock is almost never contended (playout and barge-in's `clear`): take
            # it without the checkpoint `async with` costs, per chunk
            try:
                self.send_lock.acquire_nowait()
            except trio.WouldBlock:
                await self.send_lock.acquire()
            try:
                for text in texts:
                    await self.twilio.send(text)
            finally:
                self.send_lock.release()
        if scope.cancelled_caught:
            self.end("twilio_stalled", f"a send took over {self.limits.send_timeout} s")
            raise SocketClosed("send timed out")

    # --- the call --------------------------------------------------------------------

    async def run(self) -> CallResult:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.read_twilio)
            async with trio.open_nursery() as pumps:
                self.pumps = pumps
                pumps.start_soon(self.run_model)
                pumps.start_soon(self.expect_start)
                await self.restart_playout()
                await self.ended.wait()
                pumps.cancel_scope.cancel()
            # The model connection is closed now. After `stop` Twilio closes its end:
            # wait for that rather than race it. Otherwise, closing is our job (it is
            # how Twilio learns to run the next TwiML verb).
            if self.reason not in ("caller_hangup", "twilio_closed"):
                await self.close_twilio(1008 if self.reason == "refused" else 1000)
            with trio.move_on_after(self.limits.close_wait):
                await self.twilio_closed.wait()
            if not self.twilio_closed.is_set():
                await self.close_twilio()
            nursery.cancel_scope.cancel()
        self.emit("end", reason=self.reason, detail=self.detail)
        start = self.start
        return CallResult(
            reason=self.reason,
            detail=self.detail,
            stream_sid=start.stream_sid if start else None,
            call_sid=start.call_sid if start else None,
            custom_parameters=dict(start.custom_parameters) if start else {},
            stats=self.stats,
        )

    async def expect_start(self) -> None:
        with trio.move_on_after(self.limits.start_timeout):
            await self.started.wait()
            return
        self.end("no_start", f"no `start` within {self.limits.start_timeout} s")

    async def close_twilio(self, code: int = 1000) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 2):
            try:
                await self.twilio.aclose(code)
            except Exception:  # already gone: there is nobody left to tell
                log.debug("closing the Twilio socket failed", exc_info=True)

    async def read_twilio(self) -> None:
        try:
            while True:
                text = await self.twilio.receive()
                if text is None:
                    self.end("twilio_closed")
                    return
                if isinstance(text, bytes):
                    self.protocol_error("binary frame from Twilio")
                    continue
                try:
                    message = codec.decode_twilio_audio(text)
                except RemoteProtocolError as exc:
                    self.protocol_error(str(exc))
                    continue
                if type(message) is str:  # caller audio: the per-frame path
                    self.stats.frames_in += 1
                    self.caller_audio.push(message)
                else:
                    self.handle_twilio(message)  # type: ignore[arg-type]
        finally:
            self.twilio_closed.set()

    def protocol_error(self, detail: str) -> None:
        self.stats.protocol_errors += 1
        log.warning("bad message from Twilio: %s", detail)
        self.emit("protocol_error", detail=detail)

    def handle_twilio(self, message: tw.TwilioMessage) -> None:
        if isinstance(message, tw.Media):
            self.stats.frames_in += 1
            self.caller_audio.push(message.payload)
        elif isinstance(message, tw.Mark):
            echo = self.playback.mark_echoed(message.name, trio.current_time())
            if echo.outcome == "played":
                self.stats.marks_played += 1
            elif echo.outcome == "discarded":
                self.stats.marks_discarded += 1
        elif isinstance(message, tw.Start):
            if self.start is None:
                self.start = message
                if self.authorize is not None:
                    try:
                        self.authorize(message)
                    except CallRefused as exc:
                        log.warning("refused stream %s: %s", message.stream_sid, exc)
                        self.end("refused", str(exc))
                        return
                self.started.set()
                self.emit("start", stream_sid=message.stream_sid, call_sid=message.call_sid,
                          custom_parameters=dict(message.custom_parameters))
        elif isinstance(message, tw.Stop):
            self.end("caller_hangup")
        elif isinstance(message, tw.Dtmf):
            self.emit("dtmf", digit=message.digit)
        elif isinstance(message, tw.UnknownTwilioMessage):
            log.info("ignoring unknown Twilio event %r", message.event)
        # Connected carries nothing we need; Clear never comes from Twilio.

    # --- model side --------------------------------------------------------------------

    async def run_model(self) -> None:
        if self.authorize is not None:
            await self.started.wait()  # nothing is paid for before `start` is authorized
        try:
            async with self.backend.connect(self.agent.model) as model:
                await model.send(self.agent.session_update())
                first = self.agent.first_response()
                if first is not None:
                    await model.send(first)
                self.emit("model_connected")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.write_model, model)
                    await self.read_model(model)
                    nursery.cancel_scope.cancel()
        except* ModelConnectError as group:
            self.end("model_error", str(group.exceptions[0]))
        except* SocketClosed:
            self.end("model_closed", "model socket closed while sending")

    async def write_model(self, model: RealtimeConnection) -> None:
        receive = self.caller_audio.receive_channel
        limit = self.limits.coalesce_ms * tw.BYTES_PER_MS
        async for payload in receive:
            payloads = [payload]
            size = tw.payload_size(payload)
            while size < limit:  # behind: take what queued up meanwhile (idle: nothing)
                try:
                    payloads.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                size += tw.payload_size(payloads[-1])
            if len(payloads) > 1:
                payload = _join_base64(payloads)
            await model.send(rt.InputAudioBufferAppend(audio=payload))
            self.stats.frames_to_model += len(payloads)

    async def read_model(self, model: RealtimeConnection) -> None:
        while True:
            try:
                event = await model.receive()
            except RemoteProtocolError as exc:
                self.stats.protocol_errors += 1
                log.warning("bad message from the model: %s", exc)
                continue
            if event is None:
                self.end("model_closed", "the model closed the connection")
                return
            await self.handle_model(model, event)

    async def handle_model(self, model: RealtimeConnection, event: rt.ServerEvent) -> None:
        if isinstance(event, rt.OutputAudioDelta):
            size = tw.payload_size(event.delta)
            end = self.playback.audio_delta(event.response_id, event.item_id, size)
            if end is None:
                self.stats.stale_deltas += 1
                return
            await self.play((event.item_id, end - size, end, event.delta))
        elif isinstance(event, rt.SpeechStarted):
            self.emit("speech_started", audio_start_ms=event.audio_start_ms)
            await self.barge_in(model)
        elif isinstance(event, rt.ResponseCreated):
            self.playback.response_created(event.response_id)
            self.emit("response_created", response_id=event.response_id)
        elif isinstance(event, rt.OutputAudioDone):
            await self.play(_MARK_TAIL)
        elif isinstance(event, rt.ResponseDone):
            self.playback.response_done(event.response_id)
            await self.play(_MARK_TAIL)
            self.emit("response_done", response_id=event.response_id, status=event.status)
        elif isinstance(event, rt.SpeechStopped):
            self.emit("speech_stopped", audio_end_ms=event.audio_end_ms)
        elif isinstance(event, rt.ErrorEvent):
            self.stats.model_errors += 1
            log.warning("model error %s: %s", event.error.code, event.error.message)
            self.emit("model_error", code=event.error.code, message=event.error.message)
        elif isinstance(event, rt.OutputAudioTranscriptDone):
            self.emit("agent_transcript", item_id=event.item_id, text=event.transcript)
        elif isinstance(event, rt.InputTranscriptionCompleted):
            self.emit("caller_transcript", item_id=event.item_id, text=event.transcript)

    async def barge_in(self, model: RealtimeConnection) -> None:
        # the lock is held only while playout hands audio to Twilio (`clear` is ours)
        decision = self.playback.interrupt(trio.current_time(), sending=self.send_lock.locked())
        await self.restart_playout()
        if decision.clear:
            try:
                await self.send_twilio(tw.Clear(stream_sid=self.stream_sid))
            except SocketClosed:
                self.end("twilio_closed", "Twilio socket closed while sending")
                return
            self.emit("clear")
        if decision.truncate is not None or decision.clear:
            self.stats.barge_ins += 1
        if decision.truncate is not None:
            await model.send(decision.truncate)
            self.stats.truncations += 1
            self.emit("truncate", item_id=decision.truncate.item_id,
                      audio_end_ms=decision.truncate.audio_end_ms)
        if decision.cancel is not None:
            await model.send(decision.cancel)
            self.emit("cancel", response_id=decision.cancel.response_id)

    # --- playout -----------------------------------------------------------------------

    async def play(self, chunk: _Chunk) -> None:
        """Queue a chunk for playout; waits while the playout buffer is full."""
        assert self.playout_send is not None
        try:
            await self.playout_send.send(chunk)
        except trio.BrokenResourceError:
            pass  # playout ended: the Twilio side is gone and the call is ending

    async def restart_playout(self) -> None:
        """Cancel the current playout (its unsent audio goes with it) and start anew."""
        if self.playout_scope is not None:
            self.playout_scope.cancel()
        if self.playout_send is not None:
            await self.playout_send.aclose()
        send, receive = trio.open_memory_channel[_Chunk](
            self.limits.playout_buffer_chunks
        )
        self.playout_send = send
        assert self.pumps is not None
        self.playout_scope = await self.pumps.start(self.playout, receive)

    async def playout(
        self,
        receive: trio.MemoryReceiveChannel[_Chunk],
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope, receive:
            task_status.started(scope)
            await self.started.wait()
            limit = self.limits.coalesce_ms * tw.BYTES_PER_MS
            held: _Chunk | None = None
            while True:
                if held is not None:
                    item_id, start, end, payload = held
                    held = None
                else:
                    try:
                        item_id, start, end, payload = await receive.receive()
                    except trio.EndOfChannel:
                        return
                if not payload:  # _MARK_TAIL
                    await self.mark_tail(scope)
                    continue
                # behind Twilio: merge this item's chunks that queued up meanwhile
                payloads = [payload]
                while end - start < limit:
                    try:
                        held = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    if held[0] != item_id or held[1] != end or held[2] - start > limit:
                        break
                    payloads.append(held[3])
                    end, held = held[2], None
                if len(payloads) > 1:
                    payload = _join_base64(payloads)
                if scope.cancel_called:
                    # a barge-in ran between our wake-up and now: this audio is stale,
                    # and the send below is shielded, so it must not start
                    return
                sid = self.stream_sid
                mark = self.playback.mark_after(item_id, start, end)
                media = tw.Media(stream_sid=sid, payload=payload)
                try:
                    if mark is None:
                        await self.send_twilio(media)
                    else:
                        await self.send_twilio(media, tw.Mark(stream_sid=sid, name=mark))
                except SocketClosed:
                    self.end("twilio_closed", "Twilio socket closed while sending")
                    return
                if scope.cancel_called:
                    return  # a barge-in came during the send: its `clear` follows this audio
                self.playback.sent(item_id, start, end, mark, trio.current_time())
                self.stats.chunks_out += 1
                self.stats.bytes_out += end - start

    async def mark_tail(self, scope: trio.CancelScope) -> None:
        """The model's audio paused: mark what went out without a mark."""
        mark = self.playback.tail_mark()
        if mark is None or scope.cancel_called:
            return
        try:
            await self.send_twilio(tw.Mark(stream_sid=self.stream_sid, name=mark))
        except SocketClosed:
            self.end("twilio_closed", "Twilio socket closed while sending")
            return
        if not scope.cancel_called:
            self.playback.tail_marked(mark)


def _join_base64(payloads: list[str]) -> str:
    """One base64 string for the concatenated audio (base64 does not concatenate)."""
    return binascii.b2a_base64(b"".join(map(binascii.a2b_base64, payloads)),
                               newline=False).decode("ascii")


async def run_call(
    twilio_socket: Any,
    *,
    agent: Agent | None = None,
    backend: RealtimeBackend | None = None,
    limits: CallLimits | None = None,
    on_event: Callable[[CallEvent], None] | None = None,
    authorize: Callable[[tw.Start], None] | None = None,
) -> CallResult:
    """Bridge one accepted Twilio Media Streams WebSocket to a realtime model.

    `twilio_socket` is any WebSocket that sends and receives text: a trio-websocket
    connection, or anything with `send(str)`, `receive() -> str | None` and
    `aclose()` (see `callbridge.MessageSocket`). `backend` defaults to OpenAI's
    Realtime API configured from the environment. Returns when the call is over,
    with nothing left running; `on_event` sees what happens as it happens.

    `authorize`, if given, is called with Twilio's `start` before the model is
    connected (without it the connection opens in parallel with waiting for
    `start`); raising `CallRefused` ends the call as `refused`, closing the Twilio
    socket with 1008 and never opening a model session.
    """
    call = _Call(
        as_message_socket(twilio_socket),
        agent or Agent(),
        backend or OpenAIRealtime.from_env(),
        limits or CallLimits(),
        on_event,
        authorize,
    )
    return await call.run()

