"""What happens on a call, as typed data: end reasons, mark outcomes and call events.

The bridge (`callbridge._bridge`) reports each of these through the `on_event` hook of
`run_call`, so metrics, logs and call records are built on classes and enums rather
than on string matching. Event classes are named for what happened (`Clear` is "we
sent Twilio a `clear`"), like h11's events; every one carries two times:

* `at`: the call clock, the monotonic clock the bridge runs on (`trio.current_time()`
  in a call; virtual under `MockClock`), for durations and ordering;
* `wall`: the same instant as Unix time, for records and logs.

Nothing here does I/O: the trio layer owns the clocks and passes the time in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import ClassVar, Literal

import attrs

from . import realtime as rt

__all__ = [
    "AgentAudio",
    "AgentTranscript",
    "CallEvent",
    "CallerTranscript",
    "Cancel",
    "Clear",
    "Dtmf",
    "End",
    "EndReason",
    "EventKind",
    "GuardrailTripped",
    "Handoff",
    "IdlePrompt",
    "MarkOutcome",
    "ModelConnected",
    "ModelError",
    "ProtocolError",
    "Raw",
    "ResponseCreated",
    "ResponseDone",
    "SpeechStarted",
    "SpeechStopped",
    "Start",
    "ToolCall",
    "ToolResult",
    "Truncate",
    "TwilioAction",
]


class EndReason(enum.StrEnum):
    """Why a call ended (`CallResult.reason`)."""

    #: Twilio sent `stop`: the caller hung up, or the call moved on
    CALLER_HANGUP = "caller_hangup"
    #: the Twilio socket closed without `stop`
    TWILIO_CLOSED = "twilio_closed"
    #: a send to Twilio took longer than `CallLimits.send_timeout`
    TWILIO_STALLED = "twilio_stalled"
    #: the model refused us for good (a fatal `error`: a bad key, no quota)
    MODEL_ERROR = "model_error"
    #: no model connection would open within `CallLimits.model_connect_budget`
    MODEL_UNAVAILABLE = "model_unavailable"
    #: no `start` within `CallLimits.start_timeout`
    NO_START = "no_start"
    #: Twilio's stream sent nothing for `CallLimits.media_idle_s`
    MEDIA_TIMEOUT = "media_timeout"
    #: the call reached `CallLimits.max_call_s` (the agent said its time-limit line)
    TIME_LIMIT = "time_limit"
    #: `authorize` raised `CallRefused`: no model session was opened
    REFUSED = "refused"
    #: the application ended the call (`Call.end()`)
    ENDED = "ended"
    #: the caller stayed silent through the agent's idle prompts (`Agent.idle_timeout`)
    IDLE = "idle"
    #: the agent hung up once its last words had played (`end_call`, `Call.hang_up()`)
    HUNG_UP = "hung_up"
    #: the call went on to another party (`transfer_call`, `Call.transfer()`)
    TRANSFERRED = "transferred"


class MarkOutcome(enum.StrEnum):
    """How an echoed Twilio mark was read."""

    #: the audio before it played: it moves what the caller heard
    PLAYED = "played"
    #: echoed because a `clear` discarded it (an earlier playback generation)
    DISCARDED = "discarded"
    #: not a mark this call sent (or already confirmed)
    FOREIGN = "foreign"


class EventKind(enum.StrEnum):
    """The kind of a `CallEvent`, one per class (`Clear.kind is EventKind.CLEAR`)."""

    START = "start"
    DTMF = "dtmf"
    MODEL_CONNECTED = "model_connected"
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"
    RESPONSE_CREATED = "response_created"
    RESPONSE_DONE = "response_done"
    AGENT_TRANSCRIPT = "agent_transcript"
    CALLER_TRANSCRIPT = "caller_transcript"
    AGENT_AUDIO = "agent_audio"
    CLEAR = "clear"
    TRUNCATE = "truncate"
    CANCEL = "cancel"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    GUARDRAIL_TRIPPED = "guardrail_tripped"
    IDLE_PROMPT = "idle_prompt"
    HANDOFF = "handoff"
    TWILIO_ACTION = "twilio_action"
    MODEL_ERROR = "model_error"
    PROTOCOL_ERROR = "protocol_error"
    END = "end"


@attrs.frozen(kw_only=True)
class CallEvent:
    """Something that happened on a call; subclasses say what."""

    kind: ClassVar[EventKind]
    #: call clock (monotonic seconds; see the module docstring)
    at: float
    #: the same instant as Unix time
    wall: float


@attrs.frozen(kw_only=True)
class Start(CallEvent):
    """Twilio's `start` arrived (and was authorized): the stream's identity."""

    kind = EventKind.START
    stream_sid: str
    call_sid: str
    custom_parameters: Mapping[str, str]


@attrs.frozen(kw_only=True)
class Dtmf(CallEvent):
    """The caller pressed a key."""

    kind = EventKind.DTMF
    digit: str


@attrs.frozen(kw_only=True)
class ModelConnected(CallEvent):
    """A model connection opened; `connection` counts them from 1 within the call."""

    kind = EventKind.MODEL_CONNECTED
    connection: int
    #: `first`, `reconnect` (the last one was lost), `rotation` (it grew old)
    why: str = "first"


@attrs.frozen(kw_only=True)
class SpeechStarted(CallEvent):
    """The model's VAD heard the caller start speaking (the barge-in trigger)."""

    kind = EventKind.SPEECH_STARTED
    audio_start_ms: int
    #: when the caller started, on the call clock: where their speech begins in their
    #: audio as Twilio stamped it (`audio_start_ms` less the VAD's prefix padding;
    #: `at` is when the model said so, later); None while no frame carried a timestamp
    caller_at: float | None = None


@attrs.frozen(kw_only=True)
class SpeechStopped(CallEvent):
    kind = EventKind.SPEECH_STOPPED
    audio_end_ms: int
    #: when the caller stopped, on the call clock (`audio_end_ms` less the VAD's
    #: silence duration; `at` comes later still); None while no frame carried a timestamp
    caller_at: float | None = None


@attrs.frozen(kw_only=True)
class ResponseCreated(CallEvent):
    kind = EventKind.RESPONSE_CREATED
    response_id: str


@attrs.frozen(kw_only=True)
class ResponseDone(CallEvent):
    kind = EventKind.RESPONSE_DONE
    response_id: str
    #: `completed`, `cancelled`, `failed`, `incomplete`
    status: str


@attrs.frozen(kw_only=True)
class AgentTranscript(CallEvent):
    """What the agent said in one item (the model's transcript of its audio)."""

    kind = EventKind.AGENT_TRANSCRIPT
    item_id: str
    text: str


@attrs.frozen(kw_only=True)
class CallerTranscript(CallEvent):
    """What the caller said in one item (needs input transcription on the agent)."""

    kind = EventKind.CALLER_TRANSCRIPT
    item_id: str
    text: str


@attrs.frozen(kw_only=True)
class AgentAudio(CallEvent):
    """Some of the agent's audio went to Twilio (one `media` message): the caller
    hears it from now, or after what was sent before it has played."""

    kind = EventKind.AGENT_AUDIO
    item_id: str
    #: as sent: base64 of `nbytes` bytes of μ-law at 8 kHz (8 bytes a ms)
    payload: str
    nbytes: int
    #: call clock: when (the first of) its chunk(s) came from the model
    received: float


@attrs.frozen(kw_only=True)
class Clear(CallEvent):
    """We told Twilio to drop the audio it had queued (barge-in)."""

    kind = EventKind.CLEAR


@attrs.frozen(kw_only=True)
class Truncate(CallEvent):
    """We cut the agent's item at what the caller heard (barge-in)."""

    kind = EventKind.TRUNCATE
    item_id: str
    #: what the caller heard of the item
    audio_end_ms: int
    #: how much audio the model had produced for it by then
    produced_ms: int


@attrs.frozen(kw_only=True)
class Cancel(CallEvent):
    """We cancelled a response the session would not cancel by itself (barge-in)."""

    kind = EventKind.CANCEL
    response_id: str


@attrs.frozen(kw_only=True)
class ToolCall(CallEvent):
    """The model called a function tool (its arguments complete); it runs now."""

    kind = EventKind.TOOL_CALL
    call_id: str
    name: str
    #: as the model sent them: a JSON string, not necessarily valid
    arguments: str


@attrs.frozen(kw_only=True)
class ToolResult(CallEvent):
    """A tool call's output went into the conversation."""

    kind = EventKind.TOOL_RESULT
    call_id: str
    name: str
    #: `ok`, `error` (it raised), `timeout`, `invalid_arguments`, `unknown_tool`
    outcome: str
    output: str
    #: seconds from the call to its output (call clock)
    duration: float


@attrs.frozen(kw_only=True)
class GuardrailTripped(CallEvent):
    """An output guardrail cut the agent off (see `Agent.guardrails`)."""

    kind = EventKind.GUARDRAIL_TRIPPED
    item_id: str
    #: the agent's words of the item so far, as the guardrail saw them
    text: str
    #: what the agent says instead, if anything
    replacement: str | None


@attrs.frozen(kw_only=True)
class IdlePrompt(CallEvent):
    """The caller stayed silent (`Agent.idle_timeout`): the agent was prompted to
    check in (`final`: to say goodbye, and the call ends)."""

    kind = EventKind.IDLE_PROMPT
    count: int
    final: bool


@attrs.frozen(kw_only=True)
class Handoff(CallEvent):
    """A tool handed the conversation to another agent (`callbridge.Handoff`)."""

    kind = EventKind.HANDOFF
    from_agent: str
    to_agent: str


@attrs.frozen(kw_only=True)
class TwilioAction(CallEvent):
    """The call was ended or handed on through Twilio's REST API, once the agent's
    last words had played: `action` is `hang_up`, `transfer` (its `<Dial>` TwiML) or
    `apology` (the model is unavailable: `<Say>` the agent's apology, `<Hangup>`)."""

    kind = EventKind.TWILIO_ACTION
    action: str
    #: Twilio took it; otherwise the failure was logged and the stream closed
    ok: bool
    twiml: str | None = None


@attrs.frozen(kw_only=True)
class ModelError(CallEvent):
    """The model sent an `error` event (the call goes on)."""

    kind = EventKind.MODEL_ERROR
    code: str | None
    message: str


@attrs.frozen(kw_only=True)
class ProtocolError(CallEvent):
    """A peer sent something we could not use; it was dropped and counted."""

    kind = EventKind.PROTOCOL_ERROR
    source: Literal["twilio", "model"]
    detail: str


@attrs.frozen(kw_only=True)
class End(CallEvent):
    """The call is over (the last event of every call)."""

    kind = EventKind.END
    reason: EndReason
    detail: str


@attrs.frozen(kw_only=True)
class Raw:
    """A message as it arrived, before the bridge read it, for what callbridge does
    not model (`run_call(on_raw=...)`): every frame from Twilio (text, or the bytes of
    a binary frame) and every event from the model (`realtime.UnknownServerEvent` for
    the types callbridge has no class for, with the whole JSON in `raw`)."""

    source: Literal["twilio", "model"]
    message: str | bytes | rt.ServerEvent
    #: call clock
    at: float
