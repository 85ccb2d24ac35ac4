"""The agent: who the model is on this call, as plain data, and what it knows of the call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from . import realtime as rt
from . import twilio as tw

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "PHONE_TURN_DETECTION",
    "Agent",
    "AgentFactory",
    "CallContext",
]

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant on a phone call. Speak naturally and briefly, "
    "one or two sentences at a time, and let the caller interrupt you."
)

#: Server VAD for narrowband phone audio: a little less eager than the API default
#: (line noise and breathing trip 0.5), the default 300 ms of lead-in, and a pause
#: long enough that callers can finish a thought. Every field is set explicitly:
#: omitted fields fall back to server defaults that have changed over time.
PHONE_TURN_DETECTION = rt.TurnDetection(
    type="server_vad",
    threshold=0.6,
    prefix_padding_ms=300,
    silence_duration_ms=600,
    create_response=True,
    interrupt_response=True,
)


@attrs.frozen(kw_only=True)
class CallContext:
    """Who is calling, as Twilio's `start` tells it.

    `from_number`, `to_number` come from the stream's `from` and `to` parameters
    (callbridge's webhook passes Twilio's `From` and `To` that way); `parameters` are
    all of the stream's `<Parameter>`s (`start.customParameters`).
    """

    call_sid: str
    stream_sid: str
    account_sid: str
    from_number: str | None = None
    to_number: str | None = None
    parameters: Mapping[str, str] = attrs.field(factory=dict)
    #: when the call's stream opened, as Unix time
    started_at: float = 0.0

    @classmethod
    def from_start(cls, start: tw.Start, *, started_at: float) -> CallContext:
        params = dict(start.custom_parameters)
        return cls(call_sid=start.call_sid, stream_sid=start.stream_sid,
                   account_sid=start.account_sid, from_number=params.get("from") or None,
                   to_number=params.get("to") or None, parameters=params,
                   started_at=started_at)


@attrs.frozen(kw_only=True)
class Agent:
    """Instructions, voice and turn-taking for a realtime speech-to-speech model.

    `instructions` is a string, or a function of the call's `CallContext` returning
    one (the model connection then waits for Twilio's `start`, which brings the
    context). `greeting`, when set, is sent as the instructions of a first
    `response.create` so the agent speaks first; otherwise it waits for the caller.
    """

    instructions: str | Callable[[CallContext], str] = DEFAULT_INSTRUCTIONS
    voice: str = "marin"
    model: str = "gpt-realtime"
    greeting: str | None = None
    turn_detection: rt.TurnDetection = PHONE_TURN_DETECTION
    noise_reduction: str | None = "near_field"
    transcription: Mapping[str, Any] | None = None
    speed: float | None = None
    #: keypresses reach the model as a user message ("The caller pressed 1 2 3 #.")
    #: followed by a response, once the caller paused this many seconds or pressed
    #: `dtmf_terminator`; None: they do not reach the model
    dtmf_timeout: float | None = 2.0
    dtmf_terminator: str | None = "#"
    #: takes the collected digits instead of the model (e.g. a PIN the model must not
    #: hear): called as `on_dtmf(digits, call)` with the live `Call`
    on_dtmf: Callable[[str, Any], None] | None = None

    @property
    def needs_context(self) -> bool:
        """Its session cannot be described before the call's `CallContext` is known."""
        return callable(self.instructions)

    @property
    def auto_cancel(self) -> bool:
        """The session cancels an in-progress response when the caller speaks."""
        return self.turn_detection.interrupt_response is not False

    def session_update(self, context: CallContext | None = None) -> rt.SessionUpdate:
        """The GA `session.update` for a phone call: μ-law in and out, no transcoding.
        `context` is required when the instructions are a function of it."""
        instructions = self.instructions
        if callable(instructions):
            if context is None:
                raise ValueError("these instructions need the call's context (after `start`)")
            instructions = instructions(context)
            if not isinstance(instructions, str):
                raise TypeError(f"instructions(context) returned {type(instructions).__name__}, "
                                "not a string")
        return rt.SessionUpdate(
            session=rt.Session(
                type="realtime",
                model=self.model,
                instructions=instructions,
                output_modalities=("audio",),
                audio=rt.AudioConfig(
                    input=rt.AudioInput(
                        format=rt.AudioFormat(type="audio/pcmu"),
                        turn_detection=self.turn_detection,
                        noise_reduction=(
                            {"type": self.noise_reduction} if self.noise_reduction else None
                        ),
                        transcription=self.transcription,
                    ),
                    output=rt.AudioOutput(
                        format=rt.AudioFormat(type="audio/pcmu"), voice=self.voice, speed=self.speed
                    ),
                ),
            )
        )

    def dtmf_message(self, digits: str) -> rt.ConversationItemCreate:
        """The user message that tells the model which keys the caller pressed."""
        text = f"The caller pressed {' '.join(digits)}."
        return rt.ConversationItemCreate(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]})

    def first_response(self) -> rt.ResponseCreate | None:
        if self.greeting is None:
            return None
        return rt.ResponseCreate(response={"instructions": self.greeting})


#: picks the agent for a call from its context (sync or async): one service, an agent
#: per dialled number
AgentFactory = Callable[[CallContext], Agent | Awaitable[Agent]]
