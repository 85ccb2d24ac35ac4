"""A local OpenAI Realtime (GA) server: the model's side of the protocol, in memory.

Tests and demos need a peer that behaves like the real service where the bridge is
fragile: audio arrives faster than real time, server VAD fires on the *input*
clock, `interrupt_response` cancels a response mid-stream, and truncation past the
audio actually produced is rejected with the exact message the API uses.

Theory of operation (one `_Connection` per socket):

* The serve loop reads client frames one at a time and handles each to the end,
  so everything a client event causes (errors, VAD events, a response's first
  events, cancellation tails) is sent before the next client event is read.
* Input clock: `ms = input bytes / 8`. VAD looks at aligned 20 ms windows as the
  appends that complete them arrive; it never sleeps, so speech events depend
  only on the audio, never on timing.
* One response at a time. Its head (`response.created` ... `content_part.added`)
  is sent by the serve loop; a background task in the connection's nursery
  streams `response.output_audio.delta`s, sleeping `chunk_ms / speedup` before
  each, then sends the completed tail. Cancelling marks the response cancelled
  (synchronously), cancels that task's scope and sends the cancelled tail.
  Every write happens under one lock and is shielded, and the streaming task
  re-checks the status under the lock, so no delta can follow `response.done`.
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
from . import _mulaw
from ._mulaw import Brain, Reply, echo_brain, pattern_audio, scripted_brain, tone_brain
from ._session import (
    _SERVER_VAD,
    _default_session,
    _field,
    _json_type,
    _merge,
    _PeerError,
)

__all__ = [
    "Brain",
    "LocalRealtimeServer",
    "Reply",
    "ResponseRecord",
    "ServerSession",
    "echo_brain",
    "pattern_audio",
    "scripted_brain",
    "tone_brain",
]

_MIN_COMMIT_BYTES = 100 * BYTES_PER_MS


@attrs.define(eq=False)
class ResponseRecord:
    """One response as the server ran it: what it meant to say and how it ended."""

    id: str
    item_id: str
    audio: bytes = attrs.field(repr=False)
    transcript: str
    options: Mapping[str, Any]
    status: str = "in_progress"
    #: `turn_detected` or `client_cancelled` once cancelled
    reason: str | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, repr=False)

    @property
    def out_of_band(self) -> bool:
        return self.options.get("conversation") == "none"


@attrs.define(eq=False)
class ServerSession:
    """Everything one connection did, for tests to inspect."""

    index: int
    id: str
    model: str
    session: dict[str, Any] = attrs.field(repr=False)
    input_audio: bytearray = attrs.field(factory=bytearray, repr=False)
    appends_before_session_update: bool = False
    session_updates: int = 0
    #: assistant item id -> the audio bytes sent for it in deltas
    produced: dict[str, bytearray] = attrs.field(factory=dict, repr=False)
    #: accepted `conversation.item.truncate`s: (item_id, audio_end_ms)
    truncations: list[tuple[str, int]] = attrs.field(factory=list)
    #: the audio of each committed user turn
    turns: list[bytes] = attrs.field(factory=list, repr=False)
    responses: list[ResponseRecord] = attrs.field(factory=list)
    #: (event type, its audio_start_ms / audio_end_ms, input clock in ms when it was sent)
    vad_log: list[tuple[str, int, int]] = attrs.field(factory=list)
    received: list[str] = attrs.field(factory=list, repr=False)
    sent: list[str] = attrs.field(factory=list, repr=False)
    closed: bool = False

    @property
    def input_ms(self) -> int:
        return len(self.input_audio) // BYTES_PER_MS


class _Connection:
    """The protocol state machine for one client socket (see the module docstring)."""

    def __init__(self, server: LocalRealtimeServer, socket: MessageSocket, model: str) -> None:
        self.server, self.socket = server, socket
        index = len(server.sessions) + 1
        self.state = ServerSession(index=index, id=f"sess_s{index}", model=model,
                                   session=_default_session(f"sess_s{index}", model))
        server.sessions.append(self.state)
        self._counters: dict[str, int] = {}
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        #: the conversation in order: item id -> role
        self._items: dict[str, str] = {}
        self._truncated_ms: dict[str, int] = {}
        self._active: ResponseRecord | None = None
        self._pending_turn: bytes | None = None
        # VAD, where uncommitted input starts (bytes), and the turn being heard
        self._detector = _mulaw.SpeechDetector()
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

    def _ev(self, type: str, **fields: Any) -> rt.UnknownServerEvent:
        """A server event realtime.py does not model; codec sends `raw` as it is."""
        raw = {"type": type, "event_id": self._id("event"), **fields}
        return rt.UnknownServerEvent(type=type, raw=raw)

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
                        await self._handle(text)
                except SocketClosed:
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.state.closed = True
            with trio.CancelScope(shield=True):
                await self.socket.aclose()

    async def _handle(self, text: str) -> None:
        event_id: str | None = None
        try:
            try:
                raw = json.loads(text)
            except ValueError as exc:
                raise _PeerError("invalid_json", f"The event is not valid JSON: {exc}.") from None
            if not isinstance(raw, dict):
                raise _PeerError("invalid_json",
                                 f"A client event must be a JSON object, not {_json_type(raw)}.")
            event_id = raw["event_id"] if isinstance(raw.get("event_id"), str) else None
            kind = _field(raw, "type", str)
            handler = self._handlers.get(kind)
            if handler is None:
                supported = ", ".join(f"'{name}'" for name in self._handlers)
                raise _PeerError("invalid_value", f"Invalid value: '{kind}'. Supported values "
                                 f"are: {supported}.", "type")
            await handler(raw)
        except _PeerError as err:
            await self._send(rt.ErrorEvent(
                event_id=self._id("event"),
                error=rt.ErrorInfo(type="invalid_request_error", code=err.code,
                                   message=err.message, param=err.param, event_id=event_id)))

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
            self._pending_turn = None
            reply = self._reply(audio, fallback=False)
            if reply is not None:
                await self._start_response(reply, {})

    async def _commit(self, item_id: str, audio: bytes) -> None:
        previous = next(reversed(self._items), None)
        self._items[item_id] = "user"
        self.state.turns.append(audio)
        self._pending_turn = audio
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
        item = dict(_field(raw, "item", dict))
        kind = _field(item, "type", str, prefix="item.")
        if kind not in ("message", "function_call", "function_call_output"):
            raise _PeerError("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                             "'message', 'function_call', and 'function_call_output'.",
                             "item.type")
        content = item.get("content")
        if isinstance(content, list) and any(
                isinstance(part, dict) and part.get("type") == "output_audio" for part in content):
            raise _PeerError("invalid_value", "Assistant audio messages cannot be created.",
                             "item.content")
        previous = _field(raw, "previous_item_id", str, required=False)
        if previous not in (None, "root") and previous not in self._items:
            raise _PeerError("invalid_value", f"Previous item with id '{previous}' not found.",
                             "previous_item_id")
        item_id = _field(item, "id", str, required=False, prefix="item.") or self._id("item")
        previous = None if previous == "root" else previous or next(reversed(self._items), None)
        self._items[item_id] = str(item.get("role", kind))
        item |= {"id": item_id, "object": "realtime.item", "status": "completed"}
        await self._send(*self._item_events(item, previous))

    async def _on_item_delete(self, raw: dict[str, Any]) -> None:
        item_id = _field(raw, "item_id", str)
        if self._items.pop(item_id, None) is None:
            raise _PeerError("item_delete_invalid_item_id",
                             f"Item with item_id not found: {item_id}", "item_id")
        await self._send(self._ev("conversation.item.deleted", item_id=item_id))

    async def _on_truncate(self, raw: dict[str, Any]) -> None:
        item_id = _field(raw, "item_id", str)
        audio_end_ms = _field(raw, "audio_end_ms", int)
        content_index = _field(raw, "content_index", int)
        if item_id not in self._items:
            raise _PeerError("item_truncate_invalid_item_id",
                             f"Item with item_id not found: {item_id}", "item_id")
        produced = self.state.produced.get(item_id)
        if self._items[item_id] != "assistant" or not produced:
            raise _PeerError("unsupported_content_type",
                             "Only model output audio messages can be truncated")
        if content_index != 0 or audio_end_ms < 0:
            name = "content_index" if content_index != 0 else "audio_end_ms"
            raise _PeerError("invalid_value", f"Invalid value for '{name}': {raw[name]}.", name)
        produced_ms = len(produced) // BYTES_PER_MS
        # a truncated item's audio is as long as the cut
        produced_ms = min(produced_ms, self._truncated_ms.get(item_id, produced_ms))
        if audio_end_ms > produced_ms:
            raise _PeerError("invalid_value", f"Audio content of {produced_ms}ms is already "
                             f"shorter than {audio_end_ms}ms")
        self._truncated_ms[item_id] = audio_end_ms
        self.state.truncations.append((item_id, audio_end_ms))
        await self._send(rt.ConversationItemTruncated(
            item_id=item_id, content_index=0, audio_end_ms=audio_end_ms,
            event_id=self._id("event")))

    # --- responses -------------------------------------------------------------------

    async def _on_response_create(self, raw: dict[str, Any]) -> None:
        options = _field(raw, "response", dict, required=False) or {}
        _field(options, "instructions", str, required=False, prefix="response.")
        if self._active is not None:
            raise _PeerError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._active.id}. "
                "Wait until the response is finished before creating a new one.")
        turn, self._pending_turn = self._pending_turn, None
        reply = self._reply(turn or b"", fallback=True)
        assert reply is not None
        await self._start_response(reply, options)

    async def _on_response_cancel(self, raw: dict[str, Any]) -> None:
        response_id = _field(raw, "response_id", str, required=False)
        active = self._active
        if active is None or response_id not in (None, active.id):
            raise _PeerError("response_cancel_not_active",
                             "Cancellation failed: no active response found")
        await self._cancel(active, "client_cancelled")

    def _reply(self, turn: bytes, *, fallback: bool) -> Reply | None:
        """The brain's reply to `turn`; `pattern_audio` when there is no brain, or when
        it stays silent but the client asked for a response (`fallback`)."""
        brain = self.server.brain
        reply = brain(turn) if brain is not None else None
        if reply is None and (fallback or brain is None):
            nbytes = self.server.default_reply_ms * BYTES_PER_MS
            reply = Reply(audio=pattern_audio(len(self.state.responses), nbytes))
        return reply

    async def _start_response(self, reply: Reply, options: Mapping[str, Any]) -> None:
        record = ResponseRecord(id=self._id("resp"), item_id=self._id("item"), audio=reply.audio,
                                transcript=reply.transcript, options=dict(options))
        self.state.responses.append(record)
        self.state.produced[record.item_id] = bytearray()
        previous = next(reversed(self._items), None)
        self._active = record
        item = self._item(record, "in_progress", None)
        head: list[rt.ServerEvent] = [
            rt.ResponseCreated(response=self._response(record, []), event_id=self._id("event")),
            self._ev("response.output_item.added", response_id=record.id, output_index=0,
                     item=item)]
        if not record.out_of_band:
            self._items[record.item_id] = "assistant"
            head.append(self._ev("conversation.item.added", previous_item_id=previous, item=item))
        head.append(self._ev("response.content_part.added", response_id=record.id,
                             item_id=record.item_id, output_index=0, content_index=0,
                             part={"type": "audio", "transcript": ""}))
        await self._send(*head)
        assert self._nursery is not None
        self._nursery.start_soon(self._stream, record)

    async def _stream(self, record: ResponseRecord) -> None:
        """Deltas of `chunk_ms`, `chunk_ms / speedup` apart in virtual time, then the tail."""
        size = self.server.chunk_ms * BYTES_PER_MS
        interval = self.server.chunk_ms / 1000 / self.server.speedup
        produced = self.state.produced[record.item_id]
        try:
            with record.scope:
                for start in range(0, len(record.audio), size):
                    await trio.sleep(interval)
                    chunk = record.audio[start : start + size]
                    async with self._lock:
                        if record.status != "in_progress":
                            return
                        await self._write(rt.OutputAudioDelta(
                            response_id=record.id, item_id=record.item_id,
                            delta=base64.b64encode(chunk).decode("ascii"),
                            event_id=self._id("event")))
                        produced += chunk
                async with self._lock:
                    if record.status != "in_progress":
                        return
                    record.status, self._active = "completed", None
                    for event in self._tail(record):
                        await self._write(event)
        except SocketClosed:
            return

    async def _cancel(self, record: ResponseRecord, reason: str) -> None:
        record.status, record.reason, self._active = "cancelled", reason, None
        record.scope.cancel()
        await self._send(*self._tail(record))

    def _tail(self, record: ResponseRecord) -> list[rt.ServerEvent]:
        produced = len(self.state.produced[record.item_id])
        transcript = record.transcript
        if record.status != "completed":  # the words spoken so far, roughly
            transcript = transcript[: len(transcript) * produced // max(1, len(record.audio))]
        status = "completed" if record.status == "completed" else "incomplete"
        item = self._item(record, status, transcript)
        rid, iid = record.id, record.item_id
        tail: list[rt.ServerEvent] = [
            rt.OutputAudioDone(response_id=rid, item_id=iid, event_id=self._id("event")),
            rt.OutputAudioTranscriptDone(response_id=rid, item_id=iid, transcript=transcript,
                                         event_id=self._id("event")),
            self._ev("response.content_part.done", response_id=rid, item_id=iid, output_index=0,
                     content_index=0, part={"type": "audio", "transcript": transcript}),
            self._ev("response.output_item.done", response_id=record.id, output_index=0,
                     item=item)]
        if not record.out_of_band:
            tail.append(self._ev("conversation.item.done", item=item))
        tail.append(rt.ResponseDone(response=self._response(record, [item]),
                                    event_id=self._id("event")))
        return tail

    def _item(self, record: ResponseRecord, status: str, transcript: str | None) -> dict[str, Any]:
        return {"id": record.item_id, "type": "message", "object": "realtime.item",
                "status": status, "role": "assistant",
                "content": [{"type": "output_audio", "transcript": transcript}]}

    def _response(self, record: ResponseRecord, output: list[dict[str, Any]]) -> dict[str, Any]:
        cancelled = record.status == "cancelled"
        voice = self.state.session.get("audio", {}).get("output", {}).get("voice", "marin")
        return {
            "object": "realtime.response", "id": record.id, "status": record.status,
            "status_details": {"type": "cancelled", "reason": record.reason} if cancelled else None,
            "output": output,
            "conversation_id": None if record.out_of_band else f"conv_s{self.state.index}",
            "output_modalities": ["audio"], "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": voice}},
            "metadata": record.options.get("metadata"), "usage": None,
        }


class LocalRealtimeServer:
    """An OpenAI Realtime GA peer that runs in memory: a `RealtimeBackend` for `run_call`.

    `chunk_ms` is the audio in each `response.output_audio.delta`, `speedup` how
    much faster than real time deltas are streamed. VAD calls a 20 ms window speech
    when its level is above `vad_threshold_db`; left at None, the session's
    `turn_detection.threshold` t picks it as `-60 + 50 * t` dBFS (0.5 -> -35 dBFS,
    1.0 -> -10 dBFS). Speech must last `min_speech_ms` before `speech_started`.
    A VAD turn asks the brain for a reply (None: stay silent); `response.create`
    asks it with the last committed turn not yet answered, or b"" (a greeting).
    Without a brain, or when it stays silent on `response.create`, the reply is
    `default_reply_ms` of `pattern_audio(response_index, ...)`.
    Not modelled: transcription, text output, tools, `idle_timeout_ms`, semantic
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
            except Exception as exc:  # noqa: BLE001
                # re-raised below, outside the nursery, so callers see it unwrapped
                failure = exc
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
        if failure is not None:
            raise failure
