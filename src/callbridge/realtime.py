"""OpenAI Realtime (GA interface) events the bridge uses, as plain data.

Client events are what a bridge sends to the model, server events what it gets
back; the local realtime model in `callbridge.local` uses the same classes the
other way round. Field names are the wire names (the API is snake_case already);
the `type` strings live in `callbridge.codec`, which also turns anything we do not
model into `UnknownServerEvent` / `UnknownClientEvent` instead of raising.

Optional fields left as `None` are omitted on the wire: the API treats an explicit
`null` as "clear this setting", which is never what an unset field means here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "FATAL_ERRORS",
    "AudioConfig",
    "AudioFormat",
    "AudioInput",
    "AudioOutput",
    "ClientEvent",
    "ConversationItemCreate",
    "ConversationItemDelete",
    "ConversationItemTruncate",
    "ConversationItemTruncated",
    "ErrorEvent",
    "ErrorInfo",
    "FunctionCallArgumentsDone",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCommit",
    "InputAudioBufferCommitted",
    "InputTranscriptionCompleted",
    "OutputAudioDelta",
    "OutputAudioDone",
    "OutputAudioTranscriptDelta",
    "OutputAudioTranscriptDone",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ServerEvent",
    "Session",
    "SessionCreated",
    "SessionUpdate",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TurnDetection",
    "UnknownClientEvent",
    "UnknownServerEvent",
]

# --- session configuration ------------------------------------------------------


@attrs.frozen(kw_only=True)
class AudioFormat:
    """`audio/pcmu` is G.711 μ-law at 8 kHz: Twilio's codec, so audio passes through."""

    type: str = "audio/pcmu"
    rate: int | None = None


@attrs.frozen(kw_only=True)
class TurnDetection:
    """Server-side voice activity detection.

    `type` is `server_vad` (uses `threshold`, `prefix_padding_ms`,
    `silence_duration_ms`, `idle_timeout_ms`) or `semantic_vad` (uses `eagerness`).
    """

    type: str = "server_vad"
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None
    eagerness: str | None = None

    def speech_edge(self, audio_ms: int, *, start: bool) -> int:
        """Where the caller's speech began (`start`) or ended on the input audio clock,
        from `speech_started.audio_start_ms` (which holds `prefix_padding_ms` of audio
        before the speech) or `speech_stopped.audio_end_ms` (which holds the
        `silence_duration_ms` that ended the turn). Server VAD only (the API's defaults:
        300 and 500 ms); semantic VAD does not say, and `audio_ms` is returned."""
        if self.type != "server_vad":
            return audio_ms
        if start:
            return audio_ms + (300 if self.prefix_padding_ms is None else self.prefix_padding_ms)
        return audio_ms - (500 if self.silence_duration_ms is None else self.silence_duration_ms)


@attrs.frozen(kw_only=True)
class AudioInput:
    format: AudioFormat = AudioFormat()
    turn_detection: TurnDetection | None = None
    noise_reduction: Mapping[str, Any] | None = None
    transcription: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class AudioOutput:
    format: AudioFormat = AudioFormat()
    voice: str | None = None
    speed: float | None = None


@attrs.frozen(kw_only=True)
class AudioConfig:
    input: AudioInput = AudioInput()
    output: AudioOutput = AudioOutput()


@attrs.frozen(kw_only=True)
class Session:
    """The GA `session` object (`type: "realtime"` is what selects GA semantics)."""

    type: str = "realtime"
    model: str | None = None
    instructions: str | None = None
    output_modalities: tuple[str, ...] | None = None
    audio: AudioConfig | None = None
    tools: tuple[Mapping[str, Any], ...] | None = None
    tool_choice: str | None = None


#: `error` codes after which no new session would fare better: the call ends (politely).
#: Every other error is logged and the call goes on; `session_expired` is followed by
#: the server closing, which the call survives by opening a new session. UNCONFIRMED
#: for the realtime API beyond `session_expired`: these are OpenAI's general codes.
FATAL_ERRORS = frozenset({"invalid_api_key", "insufficient_quota", "model_not_found",
                          "beta_api_shape_disabled"})


# --- client events (bridge -> model) --------------------------------------------


@attrs.frozen(kw_only=True)
class SessionUpdate:
    session: Session
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class InputAudioBufferAppend:
    audio: str
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class InputAudioBufferCommit:
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class InputAudioBufferClear:
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class ConversationItemCreate:
    item: Mapping[str, Any]
    previous_item_id: str | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class ConversationItemTruncate:
    """Cut an assistant audio item at what the caller heard (inclusive, in ms)."""

    item_id: str
    audio_end_ms: int
    content_index: int = 0
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class ConversationItemDelete:
    item_id: str
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class ResponseCreate:
    response: Mapping[str, Any] | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class ResponseCancel:
    response_id: str | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class UnknownClientEvent:
    type: str
    raw: Mapping[str, Any]


ClientEvent = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemTruncate
    | ConversationItemDelete
    | ResponseCreate
    | ResponseCancel
    | UnknownClientEvent
)

# --- server events (model -> bridge) --------------------------------------------


@attrs.frozen(kw_only=True)
class SessionCreated:
    session: Mapping[str, Any]
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class SessionUpdated:
    session: Mapping[str, Any]
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class SpeechStarted:
    """Server VAD heard the caller start. `audio_start_ms` is on the *input* clock."""

    audio_start_ms: int
    item_id: str
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class InputAudioBufferCommitted:
    item_id: str
    previous_item_id: str | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class ResponseCreated:
    response: Mapping[str, Any]
    event_id: str | None = None

    @property
    def response_id(self) -> str:
        return str(self.response.get("id", ""))


@attrs.frozen(kw_only=True)
class OutputAudioDelta:
    """A chunk of assistant audio, base64 in the session's output format."""

    response_id: str
    item_id: str
    delta: str
    output_index: int = 0
    content_index: int = 0
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class OutputAudioDone:
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class OutputAudioTranscriptDone:
    response_id: str
    item_id: str
    transcript: str
    output_index: int = 0
    content_index: int = 0
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class OutputAudioTranscriptDelta:
    """A piece of the transcript of what the agent is saying, as it is generated."""

    response_id: str
    item_id: str
    delta: str
    output_index: int = 0
    content_index: int = 0
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class FunctionCallArgumentsDone:
    """A function call's arguments are complete (`arguments`: a JSON string). Also
    sent when the response is interrupted or cancelled."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str
    output_index: int = 0
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class InputTranscriptionCompleted:
    item_id: str
    transcript: str
    content_index: int = 0
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class ResponseDone:
    """End of a response, whatever its status (`completed`, `cancelled`, ...)."""

    response: Mapping[str, Any]
    event_id: str | None = None

    @property
    def response_id(self) -> str:
        return str(self.response.get("id", ""))

    @property
    def status(self) -> str:
        return str(self.response.get("status", ""))


@attrs.frozen(kw_only=True)
class ConversationItemTruncated:
    item_id: str
    audio_end_ms: int
    content_index: int = 0
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class ErrorInfo:
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class ErrorEvent:
    error: ErrorInfo
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class UnknownServerEvent:
    """Any server event the bridge has no use for (there are many); kept, not fatal."""

    type: str
    raw: Mapping[str, Any]


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputAudioBufferCommitted
    | ResponseCreated
    | OutputAudioDelta
    | OutputAudioDone
    | OutputAudioTranscriptDone
    | OutputAudioTranscriptDelta
    | FunctionCallArgumentsDone
    | InputTranscriptionCompleted
    | ResponseDone
    | ConversationItemTruncated
    | ErrorEvent
    | UnknownServerEvent
)
