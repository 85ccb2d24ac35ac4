"""The agent: who the model is on this call, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from . import realtime as rt

__all__ = ["DEFAULT_INSTRUCTIONS", "PHONE_TURN_DETECTION", "Agent"]

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
class Agent:
    """Instructions, voice and turn-taking for a realtime speech-to-speech model.

    `greeting`, when set, is sent as the instructions of a first `response.create`
    so the agent speaks first; otherwise it waits for the caller.
    """

    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "marin"
    model: str = "gpt-realtime"
    greeting: str | None = None
    turn_detection: rt.TurnDetection = PHONE_TURN_DETECTION
    noise_reduction: str | None = "near_field"
    transcription: Mapping[str, Any] | None = None
    speed: float | None = None

    @property
    def auto_cancel(self) -> bool:
        """The session cancels an in-progress response when the caller speaks."""
        return self.turn_detection.interrupt_response is not False

    def session_update(self) -> rt.SessionUpdate:
        """The GA `session.update` for a phone call: μ-law in and out, no transcoding."""
        return rt.SessionUpdate(
            session=rt.Session(
                type="realtime",
                model=self.model,
                instructions=self.instructions,
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

    def first_response(self) -> rt.ResponseCreate | None:
        if self.greeting is None:
            return None
        return rt.ResponseCreate(response={"instructions": self.greeting})
