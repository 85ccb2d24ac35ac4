"""One call's decisions, sans-I/O: Twilio frames and model events in, what to send out.

Theory of operation
-------------------
A `Bridge` is the whole state of one call, and the only place where anything about
the call is decided. It never reads a clock or touches a socket: the trio layer
(`callbridge._call`) feeds it what arrives, with the time, and carries out what it
asks for, in the style of h11's `Connection`:

    inputs                                 outputs (pulled by one writer per socket)
    receive_twilio(text, now)      ──▶    next_to_twilio() -> texts for Twilio
    receive_model(event, now)      ──▶    next_to_model()  -> the next client event
    sent_to_twilio(now)                   state, result: start, end and its reason
    model_connected(now), end(...), send_to_model(event), protocol_error(...)
    tick(now), once next_deadline passed  (the only timer: DTMF's inter-digit pause)

Two queues hold what is on its way out, each with its policy when full:

* **to the model**: control events (`session.update`, `conversation.item.truncate`,
  `response.cancel`, the application's own) go first, then caller audio. The audio
  is a drop-oldest buffer of `caller_buffer_frames` frames, counted in
  `frames_dropped`, so reading Twilio never waits on the model; frames that queued
  up behind a busy model socket leave as one `append` of up to `coalesce_ms`.
* **to Twilio** (playout): the model's audio chunks, in order, with a `mark` after
  each `mark_ms` of audio and at the end of each response (the mark echoes are how
  `Playback` knows what the caller heard). It holds `playout_buffer_chunks`; when
  full, `playout_full` tells the model reader to wait: the model is read no faster
  than Twilio takes audio. Chunks of one item that queued up leave as one `media`.

Nothing goes to Twilio before its `start` (the stream SID is in every message); the
trio layer's Twilio writer only starts pulling once `started` is true.

Barge-in (`input_audio_buffer.speech_started`) asks `Playback.interrupt` what to do
and does it at once, as state: the queued audio is dropped (it is stale), a `clear`
is queued ahead of everything, and the truncation and cancel go to the head of the
model's queue. The generation moves on, so a chunk whose send was already under
way when the caller spoke is recorded nowhere when `sent_to_twilio` reports it: its
`clear` follows it on the socket. "A send in flight" and "a generation" are state
here, not checks of cancel scopes and locks.

The model connection is replaceable: `model_connected` may be called again on the
same call. The conversation's state is the call's (the greeting is asked for once,
on the first connection); a new connection starts with the agent's `session.update`,
the previous connection's unsent control events are dropped (they name its items)
while caller audio it had not finished sending goes to the new one, and playback
starts a new generation as at a barge-in, with a `clear` if audio of the old
connection may still be queued at Twilio.

One response at a time, and the keypresses, are `Turns`' (`callbridge._turns`), the
other sub-state: `request_response` sends a `response.create` only when the API will
take it. Keypresses (`dtmf`) collected until the caller pauses `Agent.dtmf_timeout` or
presses `Agent.dtmf_terminator` reach the model as a user message and a requested
response, or go to `Agent.on_dtmf` instead.

Bad input never ends a call. A frame that is not JSON, an unknown or malformed
message, a frame for another stream, or a payload that is not valid base64 is a
protocol error: logged, counted and reported. Bad audio is replaced by silence of
the same length, so the model's input clock and the item offsets of the agent's
audio stay true.
"""

from __future__ import annotations

import binascii
import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import Literal, NamedTuple

from . import codec
from . import events as ev
from . import realtime as rt
from . import twilio as tw
from ._calldata import CallLimits, CallRefused, CallResult, CallStats
from ._errors import RemoteProtocolError
from ._playback import Interruption, Playback
from ._turns import Turns
from .agent import Agent, CallContext
from .events import EndReason, MarkOutcome

__all__ = ["Bridge"]

log = logging.getLogger("callbridge.call")


class _Audio(NamedTuple):
    """Bytes [start, end) of an agent item's audio, base64, on its way to Twilio."""

    item_id: str
    start: int
    end: int
    payload: str


class _Cue(enum.Enum):
    """Playout entries that are not audio."""

    #: drop everything queued at Twilio (barge-in); goes ahead of all audio
    CLEAR = "clear"
    #: the model's audio paused: mark what went out without a mark
    TAIL_MARK = "tail"


class _Sending(NamedTuple):
    """What the Twilio writer is sending now, and in which playback generation."""

    generation: int
    what: _Audio | _Cue
    mark: str | None


class Bridge:
    """The state and decisions of one call; see the module docstring.

    `now` and `wall` are the call clock and Unix time at the same instant (the call's
    start); events carry both. `on_event`, when given, is called synchronously with
    each `CallEvent`; without it no event object is made. `authorize` is called with
    Twilio's `start`; raising `CallRefused` ends the call as `refused`. `agent` may
    be None when it is chosen per call, after `start` (`use_agent`). `handle` is
    what `Agent.on_dtmf` gets as the call (the trio layer's live `Call`). `on_raw`,
    when given, sees every message as it arrived (`events.Raw`).
    """

    def __init__(
        self,
        *,
        agent: Agent | None,
        limits: CallLimits,
        now: float,
        wall: float,
        on_event: Callable[[ev.CallEvent], None] | None = None,
        authorize: Callable[[tw.Start], None] | None = None,
        bytes_per_ms: int = tw.BYTES_PER_MS,
        handle: object = None,
        on_raw: Callable[[ev.Raw], None] | None = None,
    ) -> None:
        self.agent = agent
        self.limits = limits
        self.stats = CallStats()
        self.playback = Playback(auto_cancel=agent is None or agent.auto_cancel,
                                 mark_bytes=limits.mark_ms * bytes_per_ms,
                                 bytes_per_ms=bytes_per_ms)
        self._on_event = on_event
        self._authorize = authorize
        self._handle = handle
        self._on_raw = on_raw
        self._clock_offset = wall - now
        #: Twilio's `start`, once it arrived and was authorized, and what it says
        self.start: tw.Start | None = None
        self.context: CallContext | None = None
        self.end_reason: EndReason | None = None
        self.end_detail = ""
        # to the model: control events first, then caller audio (base64 frames)
        self._control: deque[rt.ClientEvent] = deque()
        self._caller_audio: deque[str] = deque()
        self._model_coalesce = limits.coalesce_ms * tw.BYTES_PER_MS
        # the caller frames in the event the model writer is sending
        self._model_sending: tuple[str, ...] = ()
        # to Twilio: playout, and the one send the Twilio writer has under way
        self._playout: deque[_Audio | _Cue] = deque()
        self._playout_coalesce = limits.coalesce_ms * bytes_per_ms
        self._sending: _Sending | None = None
        self.turns = Turns()

    # --- state -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Twilio's `start` arrived and was authorized: Twilio may be written to."""
        return self.start is not None

    @property
    def ended(self) -> bool:
        return self.end_reason is not None

    @property
    def may_connect_model(self) -> bool:
        """The agent is known, and so is everything its session needs. With
        `authorize`, nothing is paid for before `start` was authorized; an agent whose
        instructions are a function of the `CallContext` waits for `start` too."""
        agent = self.agent
        if agent is None:
            return False
        return self.start is not None or (self._authorize is None and not agent.needs_context)

    def use_agent(self, agent: Agent) -> None:
        """The agent for this call, chosen once its context was known; before the model
        connects."""
        assert self.stats.model_connections == 0, "the agent is chosen before the model"
        self.agent = agent
        self.playback.auto_cancel = agent.auto_cancel

    @property
    def next_deadline(self) -> float | None:
        """When `tick` must be called next (None: no timer is running)."""
        return self.turns.next_deadline

    @property
    def playout_full(self) -> bool:
        """The model reader should wait until Twilio has taken some audio."""
        return len(self._playout) >= self.limits.playout_buffer_chunks

    def end(self, reason: EndReason, detail: str = "") -> None:
        """End the call (the first reason given is the one that counts)."""
        if self.end_reason is None:
            self.end_reason, self.end_detail = reason, detail

    def result(self, now: float) -> CallResult:
        """The call is over: its result (and the `End` event)."""
        reason = self.end_reason
        assert reason is not None, "result() before the call ended"
        self._emit(ev.End, now, reason=reason, detail=self.end_detail)
        start = self.start
        return CallResult(
            reason=reason,
            detail=self.end_detail,
            stream_sid=start.stream_sid if start else None,
            call_sid=start.call_sid if start else None,
            custom_parameters=dict(start.custom_parameters) if start else {},
            stats=self.stats,
        )

    def _emit(self, cls: type[ev.CallEvent], now: float, **data: object) -> None:
        if self._on_event is not None:
            self._on_event(cls(at=now, wall=now + self._clock_offset, **data))

    def protocol_error(self, source: Literal["twilio", "model"], detail: str,
                       now: float) -> None:
        """A peer (`twilio` or `model`) sent something unusable: count and report it."""
        self.stats.protocol_errors += 1
        log.warning("bad message from %s: %s", "Twilio" if source == "twilio" else "the model",
                    detail)
        self._emit(ev.ProtocolError, now, source=source, detail=detail)

    # --- from Twilio -------------------------------------------------------------------

    def receive_twilio(self, text: str | bytes, now: float) -> None:
        """One frame from Twilio's socket."""
        if self._on_raw is not None:
            self._on_raw(ev.Raw(source="twilio", message=text, at=now))
        if isinstance(text, bytes):
            self.protocol_error("twilio", "binary frame from Twilio", now)
            return
        try:
            message = codec.decode_twilio_audio(text)
        except RemoteProtocolError as exc:
            self.protocol_error("twilio", str(exc), now)
            return
        if type(message) is tuple:  # caller audio: the per-frame path
            self._caller_frame(message[0], message[1], now)
        else:
            self._twilio_message(message, now)  # type: ignore[arg-type]

    def _foreign(self, stream_sid: str, event: str, now: float) -> bool:
        """Twilio never mixes streams on one socket: another stream's frame is an error."""
        start = self.start
        if start is None or stream_sid == start.stream_sid:
            return False
        self.protocol_error("twilio", f"{event} for stream {stream_sid!r}, not this call's", now)
        return True

    def _caller_frame(self, stream_sid: str, payload: str, now: float) -> None:
        if self._foreign(stream_sid, "media", now):
            return
        self.stats.frames_in += 1
        if _base64_size(payload) is None:
            payload = self._bad_audio("twilio", payload, _whole_ms(payload, tw.BYTES_PER_MS),
                                      now)
        audio = self._caller_audio
        if len(audio) >= self.limits.caller_buffer_frames:
            audio.popleft()
            self.stats.frames_dropped += 1
        audio.append(payload)

    def _bad_audio(self, source: Literal["twilio", "model"], payload: str, nbytes: int,
                   now: float) -> str:
        """`nbytes` of silence, for an audio payload that is not valid base64."""
        self.stats.bad_audio += 1
        self.protocol_error(source, f"audio payload is not valid base64 ({len(payload)} "
                            "characters): replaced by silence", now)
        return _silence(nbytes)

    def _twilio_message(self, message: tw.TwilioMessage, now: float) -> None:
        if isinstance(message, tw.Media):
            self._caller_frame(message.stream_sid, message.payload, now)
        elif isinstance(message, tw.Mark):
            if not self._foreign(message.stream_sid, "mark", now):
                echo = self.playback.mark_echoed(message.name, now)
                if echo.outcome is MarkOutcome.PLAYED:
                    self.stats.marks_played += 1
                elif echo.outcome is MarkOutcome.DISCARDED:
                    self.stats.marks_discarded += 1
        elif isinstance(message, tw.Start):
            self._start(message, now)
        elif isinstance(message, tw.Stop):
            if not self._foreign(message.stream_sid, "stop", now):
                self.end(EndReason.CALLER_HANGUP)
        elif isinstance(message, tw.Dtmf):
            if not self._foreign(message.stream_sid, "dtmf", now):
                self._emit(ev.Dtmf, now, digit=message.digit)
                self._keypress(message.digit, now)
        elif isinstance(message, tw.UnknownTwilioMessage):
            log.info("ignoring unknown Twilio event %r", message.event)
        # `connected` carries nothing we need; `clear` only ever goes to Twilio

    def _start(self, start: tw.Start, now: float) -> None:
        if self.start is not None or self.ended:
            self.protocol_error("twilio", "a second `start` on one stream", now)
            return
        if self._authorize is not None:
            try:
                self._authorize(start)
            except CallRefused as exc:
                log.warning("refused stream %s: %s", start.stream_sid, exc)
                self.end(EndReason.REFUSED, str(exc))
                return
        self.start = start
        self.context = CallContext.from_start(start, started_at=now + self._clock_offset)
        self._emit(ev.Start, now, stream_sid=start.stream_sid, call_sid=start.call_sid,
                   custom_parameters=dict(start.custom_parameters))

    def _keypress(self, digit: str, now: float) -> None:
        agent = self.agent
        if agent is None or agent.dtmf_timeout is None:
            return
        digits = self.turns.keypress(digit, now, timeout=agent.dtmf_timeout,
                                     terminator=agent.dtmf_terminator)
        if digits is not None:
            self._deliver_digits(digits)

    def tick(self, now: float) -> None:
        """Time passed: do what was due by `now` (see `next_deadline`)."""
        digits = self.turns.tick(now)
        if digits is not None:
            self._deliver_digits(digits)

    def _deliver_digits(self, digits: str) -> None:
        agent = self.agent
        assert agent is not None
        if agent.on_dtmf is not None:
            try:
                agent.on_dtmf(digits, self._handle)
            except Exception:  # the application's bug: it must not end the call
                log.exception("on_dtmf(%r) raised; the call goes on", digits)
        else:
            self._control.append(agent.dtmf_message(digits))
            self.request_response()

    # --- to Twilio ---------------------------------------------------------------------

    def next_to_twilio(self) -> list[str] | None:
        """The next message(s) to send Twilio, back to back, or None when there is
        nothing to send. Call `sent_to_twilio` once they are sent."""
        assert self._sending is None, "one send to Twilio at a time"
        playout = self._playout
        while playout:
            head = playout.popleft()
            if head is _Cue.CLEAR:
                return self._send(head, None, [tw.Clear(stream_sid=self._stream_sid)])
            if head is _Cue.TAIL_MARK:
                mark = self.playback.tail_mark()
                if mark is not None:
                    return self._send(head, mark, [tw.Mark(stream_sid=self._stream_sid,
                                                           name=mark)])
                continue
            assert isinstance(head, _Audio)
            return self._send_audio(head)
        return None

    def _send_audio(self, first: _Audio) -> list[str]:
        # behind Twilio: merge this item's chunks that queued up meanwhile
        item_id, start, end, payload = first
        playout, limit = self._playout, self._playout_coalesce
        payloads = None
        while end - start < limit and playout:
            chunk = playout[0]
            if (type(chunk) is not _Audio or chunk.item_id != item_id or chunk.start != end
                    or chunk.end - start > limit):
                break
            playout.popleft()
            payloads = payloads or [payload]
            payloads.append(chunk.payload)
            end = chunk.end
        if payloads is not None:
            payload = _join_base64(payloads)
        sid = self._stream_sid
        mark = self.playback.mark_after(item_id, start, end)
        media = tw.Media(stream_sid=sid, payload=payload)
        messages: list[tw.Media | tw.Mark] = [media]
        if mark is not None:
            messages.append(tw.Mark(stream_sid=sid, name=mark))
        return self._send(_Audio(item_id, start, end, payload), mark, messages)

    def _send(self, what: _Audio | _Cue, mark: str | None,
              messages: list[tw.Media | tw.Mark] | list[tw.Clear] | list[tw.Mark]) -> list[str]:
        self._sending = _Sending(self.playback.generation, what, mark)
        return [codec.encode(message) for message in messages]

    def sent_to_twilio(self, now: float) -> None:
        """The messages from `next_to_twilio` are on their way."""
        sending, self._sending = self._sending, None
        assert sending is not None, "sent_to_twilio() without next_to_twilio()"
        what = sending.what
        if what is _Cue.CLEAR:
            self._emit(ev.Clear, now)
        elif sending.generation != self.playback.generation:
            pass  # a barge-in came during the send: this audio is gone, its `clear` follows
        elif what is _Cue.TAIL_MARK:
            assert sending.mark is not None
            self.playback.tail_marked(sending.mark)
        else:
            assert isinstance(what, _Audio)
            self.playback.sent(what.item_id, what.start, what.end, sending.mark, now)
            self.stats.chunks_out += 1
            self.stats.bytes_out += what.end - what.start

    @property
    def _stream_sid(self) -> str:
        assert self.start is not None, "nothing goes to Twilio before `start`"
        return self.start.stream_sid

    # --- from the model ----------------------------------------------------------------

    def model_connected(self, now: float) -> None:
        """A model connection opened (the first, or one taking over from another)."""
        agent = self.agent
        assert agent is not None, "model_connected() before the agent is known"
        self.stats.model_connections += 1
        # caller audio whose send the old connection did not finish goes to the new one
        self._caller_audio.extendleft(reversed(self._model_sending))
        self._model_sending = ()
        queued = list(self._control)  # what waited for the first connection (keypresses)
        self._control.clear()
        self._control.append(agent.session_update(self.context))
        first = self.stats.model_connections == 1
        greeting = agent.first_response() if first else None
        if greeting is not None:
            self._control.append(greeting)
        if first:
            self._control.extend(queued)
        else:  # anything unsent names the old connection's items; its audio is over:
            self._interrupt(now)  # as at a barge-in, minus its events
        if self.turns.connected(first=first, greeting=greeting is not None):
            self._control.append(rt.ResponseCreate())
        self._emit(ev.ModelConnected, now, connection=self.stats.model_connections)

    def receive_model(self, event: rt.ServerEvent, now: float) -> None:
        """One event from the model."""
        if self._on_raw is not None:
            self._on_raw(ev.Raw(source="model", message=event, at=now))
        if type(event) is rt.OutputAudioDelta:  # the per-chunk path
            self._audio_delta(event, now)
        elif isinstance(event, rt.SpeechStarted):
            self._emit(ev.SpeechStarted, now, audio_start_ms=event.audio_start_ms)
            self.turns.caller_spoke()
            self._barge_in(now)
        elif isinstance(event, rt.ResponseCreated):
            self.turns.created(event.response_id)
            self.playback.response_created(event.response_id)
            self._emit(ev.ResponseCreated, now, response_id=event.response_id)
        elif isinstance(event, rt.OutputAudioDone):
            self._playout.append(_Cue.TAIL_MARK)
        elif isinstance(event, rt.ResponseDone):
            if self.turns.done(event.response_id):
                self._control.append(rt.ResponseCreate())
            self.playback.response_done(event.response_id)
            self._playout.append(_Cue.TAIL_MARK)
            self._emit(ev.ResponseDone, now, response_id=event.response_id, status=event.status)
        elif isinstance(event, rt.SpeechStopped):
            self._emit(ev.SpeechStopped, now, audio_end_ms=event.audio_end_ms)
        elif isinstance(event, rt.ErrorEvent):
            self.stats.model_errors += 1
            log.warning("model error %s: %s", event.error.code, event.error.message)
            self._emit(ev.ModelError, now, code=event.error.code, message=event.error.message)
        elif isinstance(event, rt.OutputAudioTranscriptDone):
            self._emit(ev.AgentTranscript, now, item_id=event.item_id, text=event.transcript)
        elif isinstance(event, rt.InputTranscriptionCompleted):
            self._emit(ev.CallerTranscript, now, item_id=event.item_id, text=event.transcript)

    def _audio_delta(self, event: rt.OutputAudioDelta, now: float) -> None:
        payload = event.delta
        size = _base64_size(payload)
        if size is None:
            size = _whole_ms(payload, self.playback.bytes_per_ms)
            payload = self._bad_audio("model", payload, size, now)
        end = self.playback.audio_delta(event.response_id, event.item_id, size)
        if end is None:
            self.stats.stale_deltas += 1
        else:
            self._playout.append(_Audio(event.item_id, end - size, end, payload))

    def _barge_in(self, now: float) -> None:
        decision = self._interrupt(now)
        if decision.truncate is not None or decision.clear:
            self.stats.barge_ins += 1
        # both go ahead of the caller audio; truncate first: it names what was heard
        if decision.cancel is not None:
            self._control.appendleft(decision.cancel)
            self._emit(ev.Cancel, now, response_id=decision.cancel.response_id)
        if decision.truncate is not None:
            self._control.appendleft(decision.truncate)
            self.stats.truncations += 1
            self._emit(ev.Truncate, now, item_id=decision.truncate.item_id,
                       audio_end_ms=decision.truncate.audio_end_ms)

    def _interrupt(self, now: float) -> Interruption:
        """Start a new playback generation: drop the queued audio, and queue a `clear`
        if anything may still be playing (or about to)."""
        sending = self._sending
        audio_in_flight = sending is not None and isinstance(sending.what, _Audio)
        clear_queued = _Cue.CLEAR in self._playout
        decision = self.playback.interrupt(now, sending=audio_in_flight)
        self._playout.clear()
        if decision.clear or clear_queued:
            self._playout.append(_Cue.CLEAR)
        return decision

    # --- to the model ------------------------------------------------------------------

    def request_response(self) -> None:
        """Have the model respond as soon as the API takes it (`Turns`): at once, or
        after the open response's `response.done`."""
        if self.turns.request():
            self._control.append(rt.ResponseCreate())

    def send_to_model(self, event: rt.ClientEvent) -> None:
        """Queue a client event for the model, after the control events already
        queued and ahead of the caller audio still waiting."""
        self._control.append(event)

    def next_to_model(self) -> rt.ClientEvent | None:
        """The next event to send the model, or None when there is nothing to send.
        Call `sent_to_model` once it is sent."""
        if self._control:
            self._model_sending = ()
            return self._control.popleft()
        audio = self._caller_audio
        if not audio:
            return None
        payload = audio.popleft()
        if not audio:  # idle: one frame, as it came
            self._model_sending = (payload,)
            return rt.InputAudioBufferAppend(audio=payload)
        # behind: take what queued up meanwhile, as one append
        payloads = [payload]
        size = tw.payload_size(payload)
        while size < self._model_coalesce and audio:
            payloads.append(audio.popleft())
            size += tw.payload_size(payloads[-1])
        self._model_sending = tuple(payloads)
        return rt.InputAudioBufferAppend(audio=_join_base64(payloads))

    def sent_to_model(self) -> None:
        """The event from `next_to_model` is on its way."""
        self.stats.frames_to_model += len(self._model_sending)
        self._model_sending = ()


def _base64_size(payload: str) -> int | None:
    """The number of bytes `payload` decodes to; None if it is not valid base64."""
    try:
        return len(binascii.a2b_base64(payload, strict_mode=True))
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None


def _whole_ms(payload: str, bytes_per_ms: int) -> int:
    """How much audio a payload that is not base64 stood for, as well as can be told:
    what its length would decode to, in whole milliseconds (audio comes in whole ms,
    and the padding of a garbled payload is unknown)."""
    nbytes = len(payload) * 3 // 4
    return nbytes - nbytes % bytes_per_ms


#: μ-law silence (0xFF: the zero level), by length, for the few bad payloads
_SILENCE = b"\xff"


def _silence(nbytes: int) -> str:
    return binascii.b2a_base64(_SILENCE * nbytes, newline=False).decode("ascii")


def _join_base64(payloads: list[str]) -> str:
    """One base64 string for the concatenated audio (base64 does not concatenate).
    Every payload here was checked on its way in."""
    return binascii.b2a_base64(b"".join(map(binascii.a2b_base64, payloads)),
                               newline=False).decode("ascii")
