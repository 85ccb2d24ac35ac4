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
    tick(now), once next_deadline passed   next_tool_call() -> a function call to run
    tool_result(call_id, result, now)

Two queues hold what is on its way out, each with its policy when full:

* **to the model**: control events (`session.update`, `conversation.item.truncate`,
  `response.cancel`, the application's own) go first, then the caller's audio, from
  `CallerAudio` (`callbridge._inbound`): a drop-oldest queue of `caller_buffer_frames`
  frames, so reading Twilio never waits on the model, coalesced when behind, with
  the holes of frames lost on the line filled with silence by their timestamps.
* **to Twilio**: the `Playout` (`callbridge._playout`), the model's audio in order
  with marks, `playout_buffer_chunks` long; when full, `playout.full` holds the model
  reader. Nothing goes to Twilio before its `start` (the stream SID is in every
  message); the trio layer's Twilio writer starts pulling once `started` is true.

Barge-in (`input_audio_buffer.speech_started`) asks `Playback.interrupt` what to do
and does it at once, as state: the queued audio is dropped, a `clear` is queued
ahead of everything, and the truncation and cancel go to the head of the model's
queue. No cancel scopes or locks are checked: see `callbridge._playout`.

The model connection is replaceable: `model_connected` may be called again on the
same call. The conversation is the call's (the greeting is asked for once); a new
connection starts with the agent's `session.update`, the old connection's unsent
control events are dropped (they name its items) while caller audio it had not
finished sending goes to the new one, and playback starts a new generation.

Whose turn it is, and what the agent does between turns (one response at a time,
tool calls and their outputs, filler lines, idle prompts, keypress entries), is the
`Conversation`'s (`callbridge._conversation`), the other sub-state. The bridge wires
the agent to it: function calls go out through `next_tool_call` to be run by the
trio layer and come back through `tool_result` (a `Handoff` result updates the
session with the other agent); keypresses reach the model as a user message, or
`Agent.on_dtmf` instead; output guardrails read the agent's transcript as it streams
and cut it off with the barge-in machinery (`clear`, truncate, `response.cancel`),
then have it say their replacement line.

Bad input never ends a call: a frame that is not JSON, an unknown or malformed
message, a frame for another stream, a payload that is not base64 is a protocol
error, logged, counted and reported. Bad audio becomes silence of the same length.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, NamedTuple

from . import codec
from . import events as ev
from . import realtime as rt
from . import twilio as tw
from ._calldata import CallLimits, CallRefused, CallResult, CallStats
from ._conversation import Conversation
from ._errors import RemoteProtocolError
from ._history import History
from ._inbound import CallerAudio
from ._payload import base64_size, silence, whole_ms
from ._playback import Interruption, Playback
from ._playout import AudioOut, Playout, Sent
from .agent import Agent, CallContext
from .events import EndReason, MarkOutcome

if TYPE_CHECKING:
    from .tools import Tool, ToolResult

__all__ = ["Bridge"]

log = logging.getLogger("callbridge.call")


class PendingTool(NamedTuple):
    """A function call for the trio layer to run (`Bridge.next_tool_call`)."""

    call_id: str
    tool: Tool
    arguments: str


class Bridge:
    """The state and decisions of one call; see the module docstring.

    `now` and `wall` are the call clock and Unix time at the same instant (the call's
    start); events carry both. `on_event`, when given, is called synchronously with each
    `CallEvent`; without it no event object is made. `authorize` is called with Twilio's
    `start`; raising `CallRefused` ends the call as `refused`. `agent` may be None when
    it is chosen per call, after `start` (`use_agent`). `handle` is what `Agent.on_dtmf`
    gets as the call (the live `Call`). `on_raw` sees every message as it arrived.
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
        self._on_event, self._authorize, self._handle = on_event, authorize, handle
        self.truncates = True  # the model can be told what was heard (`model_connected`)
        self._vad: rt.TurnDetection | None = None  # the model's VAD, when not the agent's
        self.on_raw = on_raw  # (settable: `Call.watch_raw`; `Call.watch_caller_audio`:)
        self.on_caller_audio: Callable[[str, int | None, float], None] | None = None
        self._clock_offset = wall - now
        #: Twilio's `start`, once it arrived and was authorized, and what it says
        self.start: tw.Start | None = None
        self.context: CallContext | None = None
        self.end_reason: EndReason | None = None
        self.end_detail = ""
        # to the model: control events first, then the caller's audio
        self._control: deque[rt.ClientEvent] = deque()
        self.inbound = CallerAudio(self.stats, limit=limits.caller_buffer_frames,
                                   coalesce_bytes=limits.coalesce_ms * tw.BYTES_PER_MS)
        # to Twilio: playout, and the one send the Twilio writer has under way
        self.playout = Playout(self.playback, limit=limits.playout_buffer_chunks,
                               coalesce_bytes=limits.coalesce_ms * bytes_per_ms)
        self.conversation = Conversation(agent)
        self._tool_calls: deque[PendingTool] = deque()
        self.history = History()  # what a new session is told (and the words so far)
        self._tripped: set[str] = set()  # responses a guardrail cut off
        self._early: list[tuple[str, str, int | None]] = []  # media before `start`
        self._spoken = False  # the model produced audio (its voice is fixed now)

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
        """The agent chosen for this call once its context was known (before the model)."""
        assert self.stats.model_connections == 0, "the agent is chosen before the model"
        self._set_agent(agent)

    def _set_agent(self, agent: Agent) -> None:
        self.agent = self.conversation.agent = agent
        self.playback.auto_cancel = agent.auto_cancel

    @property
    def next_deadline(self) -> float | None:
        """When `tick` must be called next (None: no timer is running)."""
        return self.conversation.next_deadline

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
        return CallResult(reason=reason, detail=self.end_detail, stats=self.stats,
                          stream_sid=start.stream_sid if start else None,
                          call_sid=start.call_sid if start else None,
                          custom_parameters=dict(start.custom_parameters) if start else {})

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
        if self.on_raw is not None:
            self.on_raw(ev.Raw(source="twilio", message=text, at=now))
        if isinstance(text, bytes):
            self.protocol_error("twilio", "binary frame from Twilio", now)
            return
        try:
            message = codec.decode_twilio_audio(text)
        except RemoteProtocolError as exc:
            self.protocol_error("twilio", str(exc), now)
            return
        if type(message) is tuple:  # caller audio: the per-frame path
            self._caller_frame(*message, now)
        else:
            self._twilio_message(message, now)  # type: ignore[arg-type]

    def _foreign(self, stream_sid: str, event: str, now: float) -> bool:
        """Twilio never mixes streams on one socket: another stream's frame is an error."""
        start = self.start
        if start is None or stream_sid == start.stream_sid:
            return False
        self.protocol_error("twilio", f"{event} for stream {stream_sid!r}, not this call's", now)
        return True

    def _caller_frame(self, stream_sid: str, payload: str, timestamp: int | None,
                      now: float) -> None:
        if self.start is None:  # whose stream it is, `start` will say: held until then
            if len(self._early) < self.limits.caller_buffer_frames:
                self._early.append((stream_sid, payload, timestamp))
            return
        if self._foreign(stream_sid, "media", now):
            return
        self.stats.frames_in += 1
        size = base64_size(payload)
        if size is None:
            size = whole_ms(payload, tw.BYTES_PER_MS)
            payload = self._bad_audio("twilio", payload, size, now)
        self.inbound.push(payload, size, timestamp, now)
        if self.on_caller_audio is not None:
            self.on_caller_audio(payload, timestamp, now)

    def _bad_audio(self, source: Literal["twilio", "model"], payload: str, nbytes: int,
                   now: float) -> str:
        """`nbytes` of silence, for an audio payload that is not valid base64."""
        self.stats.bad_audio += 1
        self.protocol_error(source, f"audio payload is not valid base64 ({len(payload)} "
                            "characters): replaced by silence", now)
        return silence(nbytes)

    def _twilio_message(self, message: tw.TwilioMessage, now: float) -> None:
        if isinstance(message, tw.Media):
            self._caller_frame(message.stream_sid, message.payload, message.timestamp, now)
        elif isinstance(message, tw.Mark):
            if not self._foreign(message.stream_sid, "mark", now):
                echo = self.playback.mark_echoed(message.name, now)
                if echo.outcome is MarkOutcome.PLAYED:
                    self.stats.marks_played += 1
                    self._settle(now)
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
                digits = self.conversation.keypress(message.digit, now)
                if digits is not None:
                    self._deliver_digits(digits)
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
        self.context = CallContext.from_start(start, started_at=now + self._clock_offset,
                                              live=self._handle)
        self._emit(ev.Start, now, stream_sid=start.stream_sid, call_sid=start.call_sid,
                   custom_parameters=dict(start.custom_parameters))
        early, self._early = self._early, []
        for frame in early:
            self._caller_frame(*frame, now)

    def tick(self, now: float) -> None:
        """Time passed: do what was due by `now` (see `next_deadline`)."""
        conversation = self.conversation
        digits = conversation.keypress_tick(now)
        if digits is not None:
            self._deliver_digits(digits)
        self._control.extend(conversation.tick(now))
        if conversation.prompts > self.stats.idle_prompts:
            self.stats.idle_prompts = conversation.prompts
            self._emit(ev.IdlePrompt, now, count=conversation.prompts,
                       final=conversation.ending is not None)
        self._settle(now)

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
        """The next message(s) for Twilio, back to back (None: nothing); `sent_to_twilio` next."""
        return self.playout.next(self._stream_sid)

    def sent_to_twilio(self, now: float) -> None:
        """The messages from `next_to_twilio` are on their way."""
        sent = self.playout.sent(now)
        if type(sent) is AudioOut:
            self.stats.chunks_out += 1
            self.stats.bytes_out += sent.end - sent.start
            if self._on_event is not None:
                self._emit(ev.AgentAudio, now, item_id=sent.item_id, payload=sent.payload,
                           nbytes=sent.end - sent.start, received=sent.received)
        elif sent is Sent.CLEAR:
            self._emit(ev.Clear, now)

    @property
    def _stream_sid(self) -> str:
        assert self.start is not None, "nothing goes to Twilio before `start`"
        return self.start.stream_sid

    # --- from the model ----------------------------------------------------------------

    def model_connected(self, now: float, why: str = "", *, truncates: bool = True,
                        vad: rt.TurnDetection | None = None) -> None:
        """A model connection opened (`why`); `truncates`, `vad`: as `pcm.PcmConnection`."""
        agent = self.agent
        assert agent is not None, "model_connected() before the agent is known"
        self.stats.model_connections += 1
        self.truncates, self._vad = truncates, vad
        self.inbound.connected()  # what the old connection did not finish sending
        queued, self._control = self._control, deque()  # what waited (e.g. keypresses)
        self._control.append(agent.session_update(self.context))
        first = self.stats.model_connections == 1
        self._control.extend(self.conversation.connected(first=first))  # the greeting
        if first:
            self._control.extend(queued)
        else:  # anything unsent names the old session's items; its audio is over:
            self.playout.interrupt(now)  # as at a barge-in, minus its events
            self._control.extend(self.history.restore())  # the conversation so far
        self._control.extend(self.conversation.send_waiting())
        self._emit(ev.ModelConnected, now, connection=self.stats.model_connections,
                   why=why or ("first" if first else "reconnect"))
        self._settle(now)

    def receive_model(self, event: rt.ServerEvent, now: float) -> None:
        """One event from the model."""
        if self.on_raw is not None:
            self.on_raw(ev.Raw(source="model", message=event, at=now))
        if type(event) is rt.OutputAudioDelta:  # the per-chunk path
            self._audio_delta(event, now)
            return
        conversation = self.conversation
        if type(event) is rt.OutputAudioTranscriptDelta:
            if self.agent is not None and self.agent.guardrails:
                self._guard(event, now)
            return
        if isinstance(event, rt.SpeechStarted):
            self._emit(ev.SpeechStarted, now, audio_start_ms=event.audio_start_ms,
                       caller_at=self._spoke(event.audio_start_ms, start=True))
            conversation.caller_spoke()
            self._barge_in(now)
        elif isinstance(event, rt.ResponseCreated):
            purpose = conversation.created(event.response)
            # an out-of-band response's items are not in the conversation: never truncated
            self.playback.response_created(event.response_id,
                                           in_conversation=purpose != "filler")
            self._emit(ev.ResponseCreated, now, response_id=event.response_id)
        elif isinstance(event, rt.OutputAudioDone):
            self.playout.pause()
        elif isinstance(event, rt.ResponseDone):
            self._control.extend(conversation.done(event.response_id))
            self.playback.response_done(event.response_id)
            self._tripped.discard(event.response_id)
            self.playout.pause()
            self.stats.add_usage(event.response.get("usage"))
            self._emit(ev.ResponseDone, now, response_id=event.response_id, status=event.status)
        elif isinstance(event, rt.FunctionCallArgumentsDone):
            self._function_call(event, now)
        elif isinstance(event, rt.SpeechStopped):
            conversation.caller_stopped()
            self._emit(ev.SpeechStopped, now, audio_end_ms=event.audio_end_ms,
                       caller_at=self._spoke(event.audio_end_ms, start=False))
        elif isinstance(event, rt.ErrorEvent):
            self.stats.model_errors += 1
            log.warning("model error %s: %s", event.error.code, event.error.message)
            if event.error.code == "conversation_already_has_active_response":
                self._control.extend(conversation.rejected())
            elif event.error.code in rt.FATAL_ERRORS:  # no new session would fare better
                self.end(EndReason.MODEL_ERROR, f"{event.error.code}: {event.error.message}")
            self._emit(ev.ModelError, now, code=event.error.code, message=event.error.message)
        elif isinstance(event, rt.OutputAudioTranscriptDone):
            self.history.agent_said(event.item_id, event.transcript)
            self._emit(ev.AgentTranscript, now, item_id=event.item_id, text=event.transcript)
        elif isinstance(event, rt.InputTranscriptionCompleted):
            self.history.caller_said(event.transcript)
            self._emit(ev.CallerTranscript, now, item_id=event.item_id, text=event.transcript)
        elif isinstance(event, rt.UnknownServerEvent):
            item = event.raw.get("item")
            if (event.type == "response.output_item.done" and isinstance(item, dict)
                    and item.get("type") == "mcp_approval_request"):
                self._control.extend(conversation.mcp_approval(
                    str(event.raw.get("response_id", "")), item, self.context, now))
        self._settle(now)

    def _spoke(self, audio_ms: int, *, start: bool) -> float | None:
        """When the caller's speech began or ended, on the call clock (events' `caller_at`)."""
        vad = self._vad or (self.agent or Agent()).turn_detection
        return self.inbound.clock(vad.speech_edge(audio_ms, start=start))

    def _audio_delta(self, event: rt.OutputAudioDelta, now: float) -> None:
        payload = event.delta
        size = base64_size(payload)
        if size is None:
            size = whole_ms(payload, self.playback.bytes_per_ms)
            payload = self._bad_audio("model", payload, size, now)
        end = self.playback.audio_delta(event.response_id, event.item_id, size)
        if end is None:
            self.stats.stale_deltas += 1
        else:
            self._spoken = True
            self.playout.audio(event.item_id, end - size, end, payload, now)

    def _barge_in(self, now: float) -> None:
        decision = self._cut_off(now)
        if decision.truncate is not None or decision.clear:
            self.stats.barge_ins += 1

    def _cut_off(self, now: float, *, cancel: bool = False) -> Interruption:
        """Stop the agent where the caller is: `clear`, truncate at what was heard, and
        cancel the response if the session does not (or `cancel`)."""
        decision = self.playout.interrupt(now, cancel=cancel)
        self._control.extendleft(reversed(decision.events))  # ahead of the caller audio
        if decision.cancel is not None:
            self._emit(ev.Cancel, now, response_id=decision.cancel.response_id)
        if decision.truncate is not None and self.truncates:
            self.stats.truncations += 1
            self.history.truncated(decision.truncate.item_id, decision.truncate.audio_end_ms,
                                   decision.produced_ms or 0)
            self._emit(ev.Truncate, now, item_id=decision.truncate.item_id,
                       audio_end_ms=decision.truncate.audio_end_ms,
                       produced_ms=decision.produced_ms or 0)
        return decision

    # --- the agent: tools, handoffs, guardrails, MCP approvals -------------------------

    def end_after_playout(self, reason: EndReason, now: float, say: str | None = None) -> None:
        """End the call once the agent's words under way have played (see
        `Conversation.end_after_playout`): how the agent hangs up or transfers. `say`:
        have the agent say this first."""
        conversation = self.conversation
        if say is None:
            conversation.end_after_playout(reason, now)
        else:
            self._control.extend(conversation.end_after_goodbye(reason, now, say))
        self._settle(now)

    def _settle(self, now: float) -> None:
        conversation = self.conversation
        conversation.settle(now, playing=self.playout.playing)
        if conversation.finished is not None:
            self.end(conversation.finished)

    def _function_call(self, event: rt.FunctionCallArgumentsDone, now: float) -> None:
        agent = self.agent
        assert agent is not None
        tool = agent.find_tool(event.name)
        if not self.conversation.function_call(event.response_id, event.call_id, now, tool):
            return  # already known
        self.history.function_call(event.call_id, event.name, event.arguments, now)
        self._emit(ev.ToolCall, now, call_id=event.call_id, name=event.name,
                   arguments=event.arguments)
        if tool is None:
            log.warning("the model called %r, which agent %r lacks", event.name, agent.name)
            self._tool_output(event.call_id, _error(f"there is no tool named {event.name!r}"),
                              "unknown_tool", now)
        else:
            self._tool_calls.append(PendingTool(event.call_id, tool, event.arguments))

    def next_tool_call(self) -> PendingTool | None:
        """The next function call to run (its arguments are as the model sent them);
        report its result with `tool_result`."""
        return self._tool_calls.popleft() if self._tool_calls else None

    def tool_result(self, call_id: str, result: ToolResult, now: float) -> None:
        """A function call from `next_tool_call` finished: its output goes to the model
        (and, once its response is answered, a response follows)."""
        output, outcome = result.output, result.outcome
        if result.handoff is not None:
            refused = self._hand_off(result.handoff, now)
            if refused is not None:
                output, outcome = _error(refused), "error"
        self._tool_output(call_id, output, outcome, now)
        self._settle(now)

    def _tool_output(self, call_id: str, output: str, outcome: str, now: float) -> None:
        self._control.extend(self.conversation.output(call_id, {
            "type": "function_call_output", "call_id": call_id, "output": output}))
        name, duration = self.history.function_output(call_id, output, now)
        self.stats.tool_calls += 1
        self.stats.tool_failures += outcome != "ok"
        self._emit(ev.ToolResult, now, call_id=call_id, name=name, outcome=outcome,
                   output=output, duration=duration)

    def _hand_off(self, to: Agent, now: float) -> str | None:
        """Continue the conversation as agent `to`; why not, if it cannot be."""
        agent = self.agent
        assert agent is not None
        why = agent.handoff_refusal(to, spoken=self._spoken)
        if why is not None:
            log.error("handoff to agent %r refused: %s", to.name, why)
            return f"handoff to {to.name} refused: {why}"
        self._set_agent(to)
        self._control.append(to.session_update(self.context))
        self._emit(ev.Handoff, now, from_agent=agent.name, to_agent=to.name)
        return None

    def _guard(self, event: rt.OutputAudioTranscriptDelta, now: float) -> None:
        """An output guardrail may cut the agent off, then have it say another line."""
        agent, context = self.agent, self.context
        assert agent is not None
        if context is None or event.response_id in self._tripped:
            return  # before `start` (only a greeting can be that early): the words keep
        text = self.history.agent_words(event.item_id, event.delta)
        verdict = agent.guard(text, context)
        if not verdict:
            return
        line = verdict if isinstance(verdict, str) else None
        self._tripped.add(event.response_id)
        self.stats.guardrail_trips += 1
        log.warning("a guardrail cut the agent off: %r", text)
        self._cut_off(now, cancel=True)
        self._emit(ev.GuardrailTripped, now, item_id=event.item_id, text=text, replacement=line)
        if line is not None:
            self._control.extend(self.conversation.request("line", {
                "instructions": f"Say exactly this, and nothing else: {line}"}))

    # --- to the model ------------------------------------------------------------------

    def request_response(self) -> None:
        """Have the model respond as soon as the API takes it (`Conversation`): at
        once, or after the open response's `response.done`."""
        self._control.extend(self.conversation.request())

    def send_to_model(self, event: rt.ClientEvent) -> None:
        """Queue a client event for the model, after the control events already
        queued and ahead of the caller audio still waiting."""
        self._control.append(event)

    def next_to_model(self) -> rt.ClientEvent | None:
        """The next event for the model (None: nothing to send); `sent_to_model` next."""
        if self._control:
            return self._control.popleft()
        return self.inbound.next()

    def sent_to_model(self) -> None:
        """The event from `next_to_model` is on its way."""
        self.stats.frames_to_model += self.inbound.sent()


def _error(message: str) -> str:
    """A function call's output saying it failed."""
    return json.dumps({"error": message})
