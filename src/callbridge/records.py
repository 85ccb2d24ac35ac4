"""Call records: what happened on a call, kept after it (sans-I/O).

A `RecordBuilder` reads a call's `CallEvent`s as they happen and, once the call is
over, makes its `CallRecord`:

* the **turns**, who spoke when: the caller's from the model's voice activity
  (`speech_started` .. `speech_stopped`), with what they said when input
  transcription is on (`Agent.transcription`); the agent's from its audio as it went
  to Twilio, played back to back in real time from when each message was sent, cut
  at each `clear`. An agent turn that a barge-in cut short keeps the words the caller
  heard: its transcript cut at the truncation's share of the item's audio, the same
  rule the conversation history follows (`callbridge._history.cut_text`);
* the **timeline**: the stream's start, model connections, barge-ins (when the caller
  spoke, how long until the `clear` went out, what was heard of the item), tool calls
  (arguments, output, outcome, duration), keypresses, handoffs, guardrails, idle
  prompts, what was done through Twilio (hang-up, transfer), errors, and the end;
* the **latencies**: response latency (the caller stopped speaking -> the agent's
  first audio sent to Twilio: what the caller waits) and barge-in reaction (the
  caller started speaking over the agent -> the `clear` sent);
* the call's counters and token usage (`CallStats`).

Times are ms since the call began (its stream was accepted), on the call clock;
`started_at` is that instant as Unix time. `agent_audio` returns where on that clock
a message of agent audio plays, so a recording lines up with the record
(`callbridge._recording`). Records go to a `callbridge._store` sink as JSON
(`to_json` / `from_json`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import cattrs

from . import events as ev
from ._calldata import CallResult
from ._history import cut_text, heard_share

__all__ = ["CallRecord", "Moment", "RecordBuilder", "Turn"]

#: timeline entries kept for each of the kinds that can repeat without bound
MAX_REPEATS = 50


@attrs.frozen(kw_only=True)
class Turn:
    """One stretch of speech by the caller or the agent."""

    speaker: Literal["caller", "agent"]
    start_ms: int
    end_ms: int
    #: what was said (the agent's: what the caller heard of it); "" when unknown
    text: str = ""
    item_id: str = ""
    #: a barge-in (or a guardrail) cut the agent off: what the caller heard, in ms of
    #: the item's audio, when the model was told (its truncation)
    heard_ms: int | None = None
    cut: bool = False


@attrs.frozen(kw_only=True)
class Moment:
    """One thing on a call's timeline."""

    t_ms: int
    #: start, model_connected, barge_in, tool_call, dtmf, handoff, guardrail,
    #: idle_prompt, twilio_action, model_error, protocol_error, end
    kind: str
    #: one line for a person
    summary: str
    data: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class CallRecord:
    """Everything kept about one call (see the module docstring)."""

    stream_sid: str
    call_sid: str
    #: Unix time the call began, and how long it lasted
    started_at: float
    duration_s: float
    end_reason: str
    end_detail: str = ""
    from_number: str = ""
    to_number: str = ""
    agent: str = ""
    parameters: Mapping[str, str] = attrs.field(factory=dict)
    turns: tuple[Turn, ...] = ()
    timeline: tuple[Moment, ...] = ()
    response_latency_ms: tuple[int, ...] = ()
    barge_in_reaction_ms: tuple[int, ...] = ()
    #: the call's counters and token usage (`CallStats`' fields)
    stats: Mapping[str, int] = attrs.field(factory=dict)
    #: the recording's file, when the call was recorded
    recording: str | None = None

    @property
    def agent_transcript(self) -> str:
        """What the caller heard the agent say, turn by turn."""
        return "\n".join(t.text for t in self.turns if t.speaker == "agent" and t.text)

    @property
    def caller_transcript(self) -> str:
        return "\n".join(t.text for t in self.turns if t.speaker == "caller" and t.text)

    def to_json(self) -> str:
        return json.dumps(_converter.unstructure(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> CallRecord:
        return _converter.structure(json.loads(text), cls)


_converter = cattrs.Converter()


@attrs.define
class _Speaking:
    """An agent item being played (mutable while it plays)."""

    item_id: str
    start: float
    end: float
    sent_ms: float = 0.0
    cut: bool = False


class RecordBuilder:
    """Builds one call's `CallRecord` from its events; see the module docstring.

    `began` and `wall` are the call clock and Unix time when the call began."""

    def __init__(self, began: float, wall: float, *, agent: str = "") -> None:
        self._began, self._wall = began, wall
        self.agent = agent
        self._start: ev.Start | None = None
        self._end: ev.End | None = None
        self._turns: list[Turn | _Speaking] = []
        self._timeline: list[Moment] = []
        self._repeats: dict[str, int] = {}
        self._caller: tuple[float, str] | None = None  # speaking since, item
        self._caller_untold: list[int] = []  # caller turns still without a transcript
        self._items: dict[str, int] = {}  # agent item -> its turn's index
        self._said: dict[str, str] = {}  # agent item -> its transcript
        self._heard: dict[str, tuple[int, int]] = {}  # agent item -> heard, produced ms
        self._cursor = began  # when the agent audio sent so far has played
        self._stopped: float | None = None  # the caller stopped speaking, unanswered
        self._spoke_over: float | None = None  # the caller started speaking over the agent
        self._cut: ev.Truncate | None = None  # the truncation of that barge-in
        self._tools: dict[str, ev.ToolCall] = {}
        self.latencies: list[int] = []
        self.reactions: list[int] = []

    def ms(self, at: float) -> int:
        """Call clock -> ms since the call began."""
        return round((at - self._began) * 1000)

    def _moment(self, at: float, kind: str, summary: str, **data: Any) -> None:
        if kind in ("protocol_error", "model_error", "dtmf"):
            seen = self._repeats[kind] = self._repeats.get(kind, 0) + 1
            if seen > MAX_REPEATS:
                return
        self._timeline.append(Moment(t_ms=self.ms(at), kind=kind, summary=summary, data=data))

    # --- the events -------------------------------------------------------------------

    def event(self, event: ev.CallEvent) -> None:
        """One event of the call, in order."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def agent_audio(self, event: ev.AgentAudio) -> float:
        """A message of agent audio went to Twilio: where it plays on the call clock."""
        at = max(event.at, self._cursor)
        seconds = event.nbytes / 8000
        self._cursor = at + seconds
        index = self._items.get(event.item_id)
        turn = self._turns[index] if index is not None else None
        if isinstance(turn, _Speaking) and not turn.cut:
            turn.end = self._cursor
        else:
            self._items[event.item_id] = len(self._turns)
            turn = _Speaking(event.item_id, at, self._cursor)
            self._turns.append(turn)
        turn.sent_ms += seconds * 1000
        if self._stopped is not None:
            self.latencies.append(self.ms(event.at) - self.ms(self._stopped))
            self._stopped = None
        return at

    def _on_speech_started(self, event: ev.SpeechStarted) -> None:
        self._caller = (event.at if event.caller_at is None else event.caller_at, "")
        self._stopped = None
        self._spoke_over, self._cut = event.at, None  # a `clear` next: a barge-in

    def _on_speech_stopped(self, event: ev.SpeechStopped) -> None:
        stopped = event.at if event.caller_at is None else event.caller_at
        since = self._caller[0] if self._caller is not None else stopped
        self._caller = None
        self._caller_untold.append(len(self._turns))
        self._turns.append(Turn(speaker="caller", start_ms=self.ms(since),
                                end_ms=self.ms(stopped)))
        self._stopped = stopped

    def _on_caller_transcript(self, event: ev.CallerTranscript) -> None:
        if self._caller_untold:
            index = self._caller_untold.pop(0)
            turn = self._turns[index]
            assert isinstance(turn, Turn)
            self._turns[index] = attrs.evolve(turn, text=event.text, item_id=event.item_id)
        else:  # no voice activity events (turn detection off): when it was told
            self._turns.append(Turn(speaker="caller", start_ms=self.ms(event.at),
                                    end_ms=self.ms(event.at), text=event.text,
                                    item_id=event.item_id))

    def _on_agent_transcript(self, event: ev.AgentTranscript) -> None:
        self._said[event.item_id] = event.text

    def _on_truncate(self, event: ev.Truncate) -> None:
        self._heard[event.item_id] = (event.audio_end_ms, event.produced_ms)
        self._cut = event

    def _on_clear(self, event: ev.Clear) -> None:
        if self._cursor > event.at:  # what was still to play is not heard
            self._cursor = event.at
            for turn in self._turns:
                if isinstance(turn, _Speaking) and turn.end > event.at:
                    turn.end, turn.cut = max(turn.start, event.at), True
        spoke, cut = self._spoke_over, self._cut
        if spoke is None:
            return
        self._spoke_over = self._cut = None
        reaction = self.ms(event.at) - self.ms(spoke)
        self.reactions.append(reaction)
        data: dict[str, Any] = {"reaction_ms": reaction}
        summary = f"the caller spoke over the agent; playback cleared in {reaction} ms"
        if cut is not None:
            data |= {"item_id": cut.item_id, "heard_ms": cut.audio_end_ms,
                     "produced_ms": cut.produced_ms}
            summary += f", the agent's item cut at {cut.audio_end_ms} ms"
        self._moment(spoke, "barge_in", summary, **data)

    def _on_start(self, event: ev.Start) -> None:
        self._start = event
        self._moment(event.at, "start", f"stream {event.stream_sid} of call {event.call_sid}")

    def _on_model_connected(self, event: ev.ModelConnected) -> None:
        self._moment(event.at, "model_connected",
                     f"model connection {event.connection} opened ({event.why})",
                     connection=event.connection, why=event.why)

    def _on_tool_call(self, event: ev.ToolCall) -> None:
        self._tools[event.call_id] = event

    def _on_tool_result(self, event: ev.ToolResult) -> None:
        called = self._tools.pop(event.call_id, None)
        at = called.at if called is not None else event.at - event.duration
        self._moment(at, "tool_call",
                     f"{event.name}: {event.outcome} in {round(event.duration * 1000)} ms",
                     name=event.name, call_id=event.call_id,
                     arguments=called.arguments if called is not None else "",
                     output=event.output, outcome=event.outcome,
                     duration_ms=round(event.duration * 1000))

    def _on_dtmf(self, event: ev.Dtmf) -> None:
        self._moment(event.at, "dtmf", f"the caller pressed {event.digit}", digit=event.digit)

    def _on_handoff(self, event: ev.Handoff) -> None:
        self.agent = event.to_agent
        self._moment(event.at, "handoff", f"handed from {event.from_agent} to {event.to_agent}",
                     from_agent=event.from_agent, to_agent=event.to_agent)

    def _on_guardrail(self, event: ev.GuardrailTripped) -> None:
        self._spoke_over = None  # its clear is not a barge-in
        self._moment(event.at, "guardrail", f"a guardrail cut the agent off: {event.text!r}",
                     item_id=event.item_id, text=event.text, replacement=event.replacement)

    def _on_idle_prompt(self, event: ev.IdlePrompt) -> None:
        self._moment(event.at, "idle_prompt",
                     f"the caller was silent: prompt {event.count}"
                     + (" (the last: goodbye)" if event.final else ""),
                     count=event.count, final=event.final)

    def _on_twilio_action(self, event: ev.TwilioAction) -> None:
        self._moment(event.at, "twilio_action",
                     f"{event.action} through Twilio: {'done' if event.ok else 'failed'}",
                     action=event.action, ok=event.ok, twiml=event.twiml)

    def _on_model_error(self, event: ev.ModelError) -> None:
        self._moment(event.at, "model_error", f"model error {event.code}: {event.message}",
                     code=event.code, message=event.message)

    def _on_protocol_error(self, event: ev.ProtocolError) -> None:
        self._moment(event.at, "protocol_error", f"bad message from {event.source}: "
                     f"{event.detail}", source=event.source, detail=event.detail)

    def _on_ended(self, event: ev.End) -> None:
        self._end = event
        self._moment(event.at, "end", f"ended: {event.reason}"
                     + (f" ({event.detail})" if event.detail else ""),
                     reason=str(event.reason), detail=event.detail)

    # --- the record --------------------------------------------------------------------

    def record(self, result: CallResult, *, recording: str | None = None) -> CallRecord:
        """The call is over (its `End` event came): its record."""
        end = self._end
        ended = end.at if end is not None else self._cursor
        if self._caller is not None:  # still speaking when the call ended
            self._turns.append(Turn(speaker="caller", start_ms=self.ms(self._caller[0]),
                                    end_ms=self.ms(ended)))
        for called in self._tools.values():
            self._moment(called.at, "tool_call", f"{called.name}: unfinished when the call "
                         "ended", name=called.name, call_id=called.call_id,
                         arguments=called.arguments, outcome="unfinished")
        start = self._start
        parameters = dict(start.custom_parameters) if start is not None else {}
        return CallRecord(
            stream_sid=result.stream_sid or "", call_sid=result.call_sid or "",
            started_at=self._wall, duration_s=round(ended - self._began, 3),
            end_reason=str(result.reason), end_detail=result.detail,
            from_number=parameters.get("from", ""), to_number=parameters.get("to", ""),
            agent=self.agent, parameters=parameters,
            turns=tuple(sorted((self._turn(t) for t in self._turns),
                               key=lambda t: (t.start_ms, t.speaker))),
            timeline=tuple(sorted(self._timeline, key=lambda m: m.t_ms)),
            response_latency_ms=tuple(self.latencies),
            barge_in_reaction_ms=tuple(self.reactions),
            stats=attrs.asdict(result.stats), recording=recording)

    def _turn(self, turn: Turn | _Speaking) -> Turn:
        if isinstance(turn, Turn):
            return turn
        text = self._said.get(turn.item_id, "")
        heard = self._heard.get(turn.item_id)
        if heard is not None:
            text = cut_text(text, heard_share(*heard))
        elif turn.cut:  # cleared with no truncation told: what played of what was sent
            played = (turn.end - turn.start) * 1000
            text = cut_text(text, heard_share(round(played), round(turn.sent_ms)))
        return Turn(speaker="agent", start_ms=self.ms(turn.start), end_ms=self.ms(turn.end),
                    text=text, item_id=turn.item_id,
                    heard_ms=heard[0] if heard is not None else None, cut=turn.cut)


_HANDLERS: dict[type[ev.CallEvent], Any] = {
    ev.AgentAudio: RecordBuilder.agent_audio,
    ev.SpeechStarted: RecordBuilder._on_speech_started,
    ev.SpeechStopped: RecordBuilder._on_speech_stopped,
    ev.CallerTranscript: RecordBuilder._on_caller_transcript,
    ev.AgentTranscript: RecordBuilder._on_agent_transcript,
    ev.Truncate: RecordBuilder._on_truncate,
    ev.Clear: RecordBuilder._on_clear,
    ev.Start: RecordBuilder._on_start,
    ev.ModelConnected: RecordBuilder._on_model_connected,
    ev.ToolCall: RecordBuilder._on_tool_call,
    ev.ToolResult: RecordBuilder._on_tool_result,
    ev.Dtmf: RecordBuilder._on_dtmf,
    ev.Handoff: RecordBuilder._on_handoff,
    ev.GuardrailTripped: RecordBuilder._on_guardrail,
    ev.IdlePrompt: RecordBuilder._on_idle_prompt,
    ev.TwilioAction: RecordBuilder._on_twilio_action,
    ev.ModelError: RecordBuilder._on_model_error,
    ev.ProtocolError: RecordBuilder._on_protocol_error,
    ev.End: RecordBuilder._on_ended,
}
