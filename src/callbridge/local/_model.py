"""A local OpenAI Realtime (GA) server: the model's side of the protocol, in memory.

Tests and demos need a peer that behaves like the real service where the bridge is
fragile: audio arrives faster than real time, server VAD fires on the *input*
clock, `interrupt_response` cancels a response mid-stream, truncation past the
audio actually produced is rejected with the exact message the API uses, and
function calls follow the API's rules (declared tools only, outputs must name a
call in the conversation).

Theory of operation (one `_Connection` per socket):

* The serve loop reads client frames one at a time and handles each to the end,
  so everything a client event causes (errors, VAD events, a response's first
  events, cancellation tails) is sent before the next client event is read.
* Input clock: `ms = input bytes / 8`. VAD looks at aligned 20 ms windows as the
  appends that complete them arrive; it never sleeps, so speech events depend
  only on the audio, never on timing.
* One response at a time; its output is the spoken message and/or function
  calls, built as events by `_responses`. Its head (`response.created` and the
  first item's opening events) is sent by the serve loop; a background task in
  the connection's nursery streams each item's deltas (audio and its
  transcript, or arguments), sleeping `chunk_ms / speedup` before each, closes
  it, opens the next, and ends with `response.done`. Cancelling marks the
  response cancelled (synchronously), cancels that task's scope and sends the
  cancelled tail: the open item's `.done` events, as `incomplete`, then
  `response.done`. Every write happens under one lock and is shielded, and the
  streaming task re-checks the status under the lock, so nothing can follow
  `response.done`.
* The default conversation (`_conversation`) holds the items and what the client
  added since the last response; the brain sees that in its `Turn`.
* Client events are checked on the raw JSON, not through `codec`: its cattrs
  structuring coerces ("12" -> 12, "false" -> True) and drops unknown session
  fields, and a strict peer must see exactly what was sent.
* Time comes only from `trio.sleep`, ids from per-connection counters: under
  `MockClock` a run is reproducible.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from .. import codec
from .. import realtime as rt
from .._sockets import MessageSocket, SocketClosed, memory_socket_pair
from ..backend import EventConnection, RealtimeConnection
from ..twilio import BYTES_PER_MS
from ._audio import SpeechDetector, pattern_audio
from ._brains import Brain, Reply
from ._conversation import Conversation
from ._records import Output, ResponseRecord, ServerSession
from ._responses import Piece, ResponseEvents, pieces, tool_call_error
from ._session import (
    _SERVER_VAD,
    _check_metadata,
    _check_tool_choice,
    _check_tools,
    _default_session,
    _field,
    _json_type,
    _merge,
    _PeerError,
)

__all__ = ["LocalRealtimeServer"]

_MIN_COMMIT_BYTES = 100 * BYTES_PER_MS


def _json_object(text: str) -> dict[str, Any]:
    """A client event's JSON object; the API's errors for anything else."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise _PeerError("invalid_json", f"The event is not valid JSON: {exc}.") from None
    if not isinstance(raw, dict):
        raise _PeerError("invalid_json",
                         f"A client event must be a JSON object, not {_json_type(raw)}.")
    return raw


class _Connection:
    """The protocol state machine for one client socket (see the module docstring)."""

    def __init__(self, server: LocalRealtimeServer, socket: MessageSocket, model: str) -> None:
        self.server, self.socket = server, socket
        index = len(server.sessions) + 1
        self.state = ServerSession(index=index, id=f"sess_s{index}", model=model,
                                   session=_default_session(f"sess_s{index}", model))
        server.sessions.append(self.state)
        server._sessions_changed()
        self._counters: dict[str, int] = {}
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._conversation = Conversation(self.state)
        self._events = ResponseEvents(self._id, self.state)
        self._active: ResponseRecord | None = None
        # VAD, where uncommitted input starts (bytes), and the turn being heard
        self._detector = SpeechDetector()
        self._buffer_start = 0
        self._turn_item = ""
        self._turn_start_ms = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.truncate": self._on_truncate,
            "conversation.item.delete": self._on_item_delete,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    def _id(self, prefix: str) -> str:
        n = self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return f"{prefix}_s{self.state.index}_{n}"

    def _ev(self, kind: str, **fields: Any) -> rt.UnknownServerEvent:
        return self._events.ev(kind, **fields)

    def _error(self, err: _PeerError, event_id: str | None) -> rt.ServerEvent:
        return rt.ErrorEvent(event_id=self._id("event"), error=rt.ErrorInfo(
            type="invalid_request_error", code=err.code, message=err.message, param=err.param,
            event_id=event_id))

    def _item_events(self, item: dict[str, Any], previous: str | None) -> list[rt.ServerEvent]:
        return [self._ev("conversation.item.added", previous_item_id=previous, item=item),
                self._ev("conversation.item.done", previous_item_id=previous, item=item)]

    # --- writing and the serve loop --------------------------------------------------

    async def _write(self, event: rt.ServerEvent) -> None:
        """Send one event; the caller holds the lock. Shielded: a frame is never cut."""
        text = codec.encode(event)
        with trio.CancelScope(shield=True):
            await self.socket.send(text)
        self.state.sent.append(text)
        self.state.timeline.append((trio.current_time(), "out", text))

    async def _send(self, *events: rt.ServerEvent) -> None:
        async with self._lock:
            for event in events:
                await self._write(event)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._send(rt.SessionCreated(session=self.state.session,
                                                       event_id=self._id("event")))
                    while (frame := await self.socket.receive()) is not None:
                        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                        self.server.received.append(text)
                        self.state.received.append(text)
                        self.state.timeline.append((trio.current_time(), "in", text))
                        await self._handle(text)
                except SocketClosed:
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.state.closed = True
            self.server._sessions_changed()
            with trio.CancelScope(shield=True):
                await self.socket.aclose()

    async def _handle(self, text: str) -> None:
        event_id: str | None = None
        try:
            raw = _json_object(text)
            event_id = raw["event_id"] if isinstance(raw.get("event_id"), str) else None
            handler = self._handler(_field(raw, "type", str))
            await handler(raw)
        except _PeerError as err:
            await self._send(self._error(err, event_id))

    def _handler(self, kind: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        handler = self._handlers.get(kind)
        if handler is None:
            supported = ", ".join(f"'{name}'" for name in self._handlers)
            raise _PeerError("invalid_value", f"Invalid value: '{kind}'. Supported values "
                             f"are: {supported}.", "type")
        return handler

    # --- session, input audio and VAD ------------------------------------------------

    def _vad_config(self) -> dict[str, Any] | None:
        audio_in = self.state.session.get("audio", {}).get("input", {})
        vad = audio_in.get("turn_detection") if isinstance(audio_in, dict) else None
        return vad if isinstance(vad, dict) else None

    async def _on_session_update(self, raw: dict[str, Any]) -> None:
        update = _field(raw, "session", dict)
        kind = _field(update, "type", str, prefix="session.")
        if kind != "realtime":
            raise _PeerError("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                             "'realtime' and 'transcription'.", "session.type")
        session = copy.deepcopy(self.state.session)
        # id, object and model are fixed for the session's life
        fixed = ("id", "object", "model")
        _merge(session, {k: v for k, v in update.items() if k not in fixed}, "session")
        self.state.session = session
        self.state.session_updates += 1
        if self._vad_config() is None:
            self._detector.reset()
        await self._send(rt.SessionUpdated(session=session, event_id=self._id("event")))

    async def _on_append(self, raw: dict[str, Any]) -> None:
        try:
            data = base64.b64decode(_field(raw, "audio", str), validate=True)
        except (binascii.Error, ValueError):
            raise _PeerError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio "
                             "bytes in the session's input format.", "audio") from None
        if self.state.session_updates == 0:
            self.state.appends_before_session_update = True
        self.state.input_audio += data
        vad = self._vad_config()
        if vad is None:
            self._detector.skip(len(self.state.input_audio))
            return

        def number(key: str) -> float:
            value = vad.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            return float(_SERVER_VAD[key])

        threshold_db = self.server.vad_threshold_db
        if threshold_db is None:
            threshold_db = -60.0 + 50.0 * number("threshold")
        events = self._detector.feed(self.state.input_audio, threshold_db=threshold_db,
                                     min_speech_ms=self.server.min_speech_ms,
                                     silence_ms=int(number("silence_duration_ms")))
        for kind, ms in events:
            if kind == "speech_started":
                padding = int(number("prefix_padding_ms"))
                await self._speech_started(vad, max(self._buffer_start // BYTES_PER_MS,
                                                    ms - padding))
            else:
                await self._speech_stopped(vad, ms)

    async def _speech_started(self, vad: Mapping[str, Any], start_ms: int) -> None:
        self._turn_item, self._turn_start_ms = self._id("item"), start_ms
        self.state.vad_log.append(
            ("input_audio_buffer.speech_started", start_ms, self.state.input_ms))
        await self._send(rt.SpeechStarted(audio_start_ms=start_ms, item_id=self._turn_item,
                                          event_id=self._id("event")))
        # the API interrupts only responses writing to the default conversation (SDK
        # docstring); running one response at a time, this server cuts an out-of-band
        # one too, so that the caller's turn still gets its answer
        if vad.get("interrupt_response", True) and self._active is not None:
            await self._cancel(self._active, "turn_detected")

    async def _speech_stopped(self, vad: Mapping[str, Any], end_ms: int) -> None:
        self.state.vad_log.append(
            ("input_audio_buffer.speech_stopped", end_ms, self.state.input_ms))
        await self._send(rt.SpeechStopped(audio_end_ms=end_ms, item_id=self._turn_item,
                                          event_id=self._id("event")))
        start = self._turn_start_ms * BYTES_PER_MS
        self._buffer_start = end_ms * BYTES_PER_MS
        audio = bytes(self.state.input_audio[start : self._buffer_start])
        await self._commit(self._turn_item, audio)
        # with interrupt_response off a response may still be running: then no new one
        if vad.get("create_response", True) and self._active is None:
            reply = self._reply({}, vad=True)
            if reply is not None:
                try:
                    await self._start_response(reply, {})
                except _PeerError as err:  # no client event caused it: no event_id
                    await self._send(self._error(err, None))

    async def _commit(self, item_id: str, audio: bytes) -> None:
        previous = self._conversation.commit(item_id, audio)
        item = {"id": item_id, "type": "message", "object": "realtime.item", "status": "completed",
                "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        await self._send(rt.InputAudioBufferCommitted(item_id=item_id, previous_item_id=previous,
                                                      event_id=self._id("event")),
                         *self._item_events(item, previous))

    async def _on_commit(self, raw: dict[str, Any]) -> None:
        data = bytes(self.state.input_audio[self._buffer_start :])
        if len(data) < _MIN_COMMIT_BYTES:
            raise _PeerError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms "
                f"of audio, but buffer only has {len(data) / BYTES_PER_MS:.2f}ms of audio.")
        item_id = self._turn_item if self._detector.speaking else self._id("item")
        self._detector.reset()
        self._buffer_start = len(self.state.input_audio)
        await self._commit(item_id, data)

    async def _on_clear(self, raw: dict[str, Any]) -> None:
        self._buffer_start = len(self.state.input_audio)
        self._detector.reset()
        await self._send(self._ev("input_audio_buffer.cleared"))

    # --- conversation items ----------------------------------------------------------

    async def _on_item_create(self, raw: dict[str, Any]) -> None:
        item, previous = self._conversation.create(raw, self._id)
        await self._send(*self._item_events(item, previous))

    async def _on_item_delete(self, raw: dict[str, Any]) -> None:
        item_id = self._conversation.delete(raw)
        await self._send(self._ev("conversation.item.deleted", item_id=item_id))

    async def _on_truncate(self, raw: dict[str, Any]) -> None:
        item_id, audio_end_ms = self._conversation.truncate(raw)
        await self._send(rt.ConversationItemTruncated(
            item_id=item_id, content_index=0, audio_end_ms=audio_end_ms,
            event_id=self._id("event")))

    # --- responses -------------------------------------------------------------------

    async def _on_response_create(self, raw: dict[str, Any]) -> None:
        options = _field(raw, "response", dict, required=False) or {}
        _field(options, "instructions", str, required=False, prefix="response.")
        _check_metadata(options.get("metadata"))
        if "tools" in options:
            _check_tools(options["tools"], "response.tools")
        if "tool_choice" in options:
            _check_tool_choice(options["tool_choice"], "response.tool_choice")
        # UNCONFIRMED: any active response blocks, out-of-band or not. The SDK says only
        # one response may write to the default conversation at a time "but otherwise
        # multiple Responses can be created in parallel"; this server runs one at a time.
        if self._active is not None:
            raise _PeerError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._active.id}. "
                "Wait until the response is finished before creating a new one.")
        reply = self._reply(options, vad=False)
        assert reply is not None
        await self._start_response(reply, options)

    async def _on_response_cancel(self, raw: dict[str, Any]) -> None:
        response_id = _field(raw, "response_id", str, required=False)
        active = self._active
        if active is None or response_id not in (None, active.id):
            raise _PeerError("response_cancel_not_active",
                             "Cancellation failed: no active response found")
        await self._cancel(active, "client_cancelled")

    def _reply(self, options: Mapping[str, Any], *, vad: bool) -> Reply | None:
        """The brain's reply to the turn the conversation hands it; `pattern_audio` when
        there is no brain, or when it stays silent on a `response.create`."""
        brain = self.server.brain
        turn = self._conversation.turn(vad=vad, options=options)
        reply = brain(turn) if brain is not None else None
        if reply is None and (not vad or brain is None):
            nbytes = self.server.default_reply_ms * BYTES_PER_MS
            reply = Reply(audio=pattern_audio(len(self.state.responses), nbytes))
        return reply

    async def _start_response(self, reply: Reply, options: Mapping[str, Any]) -> None:
        """Send the head and stream the rest from a task. A reply calling a tool the
        session does not allow starts nothing: the violation is recorded and raised."""
        error = tool_call_error(reply.tool_calls, self.state.session, options)
        if error is not None:
            self.state.violations.append(error.message)
            raise error
        calls = tuple(call if call.call_id else attrs.evolve(call, call_id=self._id("call"))
                      for call in reply.tool_calls)
        record = ResponseRecord(id=self._id("resp"), item_id=None, audio=reply.audio,
                                transcript=reply.transcript, options=dict(options),
                                tool_calls=calls)
        if reply.speaks:
            record.item_id = self._id("item")
            record.outputs.append(Output(index=0, item_id=record.item_id))
            self.state.produced[record.item_id] = bytearray()
        for call in calls:
            record.outputs.append(Output(index=len(record.outputs), item_id=self._id("item"),
                                         call=call))
        self.state.responses.append(record)
        self._active = record
        await self._send(self._events.created(record), *self._open(record, record.outputs[0]))
        assert self._nursery is not None
        self._nursery.start_soon(self._stream, record)

    def _open(self, record: ResponseRecord, output: Output) -> list[rt.ServerEvent]:
        """`output`'s opening events; it joins the conversation unless out of band."""
        previous = self._conversation.last
        if output.call is not None:
            assert output.call.call_id is not None
            self.state.tool_calls.append(output.call)
        if not record.out_of_band:
            role = "assistant" if output.call is None else "function_call"
            self._conversation.add(output.item_id, role,
                                   call_id=None if output.call is None else output.call.call_id)
        return self._events.opening(record, output, previous)

    async def _stream(self, record: ResponseRecord) -> None:
        """Each output's deltas `chunk_ms / speedup` apart in virtual time, then its
        `.done` events and the next output's opening; `response.done` last."""
        size = self.server.chunk_ms * BYTES_PER_MS
        interval = self.server.chunk_ms / 1000 / self.server.speedup
        try:
            with record.scope:
                for output in record.outputs:
                    if not output.opened and not await self._emit(
                            record, partial(self._open, record, output)):
                        return
                    for piece in pieces(record, output, size):
                        await trio.sleep(interval)
                        if not await self._emit(record, partial(self._delta, record, output,
                                                                piece)):
                            return
                    if not await self._emit(record, partial(self._events.closing, record,
                                                            output)):
                        return
                await self._emit(record, partial(self._complete, record))
        except SocketClosed:
            return

    async def _emit(self, record: ResponseRecord,
                    build: Callable[[], list[rt.ServerEvent]]) -> bool:
        """Write `build()`'s events unless `record` ended meanwhile; False then. The
        check and the writes share the lock, so nothing follows a cancel's tail."""
        async with self._lock:
            if record.status != "in_progress":
                return False
            for event in build():
                await self._write(event)
            return True

    def _delta(self, record: ResponseRecord, output: Output,
               piece: Piece) -> list[rt.ServerEvent]:
        if output.call is None:
            self.state.produced[output.item_id] += piece[1]
        return self._events.delta(record, output, piece)

    def _complete(self, record: ResponseRecord) -> list[rt.ServerEvent]:
        record.status, self._active = "completed", None
        return [self._events.done(record)]

    async def _cancel(self, record: ResponseRecord, reason: str) -> None:
        record.status, record.reason, self._active = "cancelled", reason, None
        record.scope.cancel()
        tail = [event for output in record.outputs if output.opened and not output.closed
                for event in self._events.closing(record, output)]
        await self._send(*tail, self._events.done(record))


class LocalRealtimeServer:
    """An OpenAI Realtime GA peer that runs in memory: a `RealtimeBackend` for `run_call`.

    `chunk_ms` is the audio in each `response.output_audio.delta`, `speedup` how
    much faster than real time deltas are streamed. VAD calls a 20 ms window speech
    when its level is above `vad_threshold_db`; left at None, the session's
    `turn_detection.threshold` t picks it as `-60 + 50 * t` dBFS (0.5 -> -35 dBFS,
    1.0 -> -10 dBFS). Speech must last `min_speech_ms` before `speech_started`.
    A VAD turn asks the brain for a reply (None: stay silent); `response.create`
    asks it with the last committed turn not yet answered, or b"" (a greeting),
    and the request's instructions, metadata and the client's new text messages
    and function outputs (`Turn`); an out-of-band response uses none of them up.
    Without a brain, or when it stays silent on `response.create`, the reply is
    `default_reply_ms` of `pattern_audio(response_index, ...)`. The reply's
    transcript streams in deltas just ahead of the audio it covers.
    A reply may call function tools (`Reply.tool_calls`): only those declared in
    `tools`, as `tool_choice` allows, or the server sends an `error`, starts no
    response and records a violation on the `ServerSession`.
    Not modelled: transcription, text output, MCP tools, `idle_timeout_ms`, semantic
    VAD's eagerness (it behaves like server VAD), concurrent out-of-band responses.
    """

    def __init__(
        self,
        brain: Brain | None = None,
        *,
        chunk_ms: int = 100,
        speedup: float = 10.0,
        vad_threshold_db: float | None = None,
        min_speech_ms: int = 60,
        default_reply_ms: int = 1000,
    ) -> None:
        if chunk_ms <= 0 or speedup <= 0:
            raise ValueError("chunk_ms and speedup must be positive")
        self.brain = brain
        self.chunk_ms = chunk_ms
        self.speedup = speedup
        self.vad_threshold_db = vad_threshold_db
        self.min_speech_ms = min_speech_ms
        self.default_reply_ms = default_reply_ms
        #: every frame received, on all connections, as text
        self.received: list[str] = []
        #: one per connection, in connection order
        self.sessions: list[ServerSession] = []
        self._sessions_event = trio.Event()

    def _sessions_changed(self) -> None:
        self._sessions_event.set()
        self._sessions_event = trio.Event()

    async def wait_for_sessions(self, done: Callable[[list[ServerSession]], bool]) -> None:
        """Return once `done(self.sessions)` is true: checked at once, then each time a
        session connects or closes, so it must depend on nothing else."""
        while not done(self.sessions):
            await self._sessions_event.wait()

    async def serve(self, socket: MessageSocket, *, model: str = "gpt-realtime") -> None:
        """Serve one connection until the client closes; bad input gets `error` events."""
        await _Connection(self, socket, model).run()

    def connect(self, model: str) -> AbstractAsyncContextManager[RealtimeConnection]:
        """An in-memory connection to a fresh session (`RealtimeBackend`)."""
        return self._connect(model)

    @asynccontextmanager
    async def _connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        client, server_end = memory_socket_pair()
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(self.serve, server_end, model=model))
            try:
                yield EventConnection(client)
            except Exception as exc:
                # re-raised below, outside the nursery, so callers see it unwrapped
                failure = exc
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
        if failure is not None:
            raise failure
