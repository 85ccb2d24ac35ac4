"""Faithful local peers for tests, demos and benchmarks: no Twilio, no OpenAI.

`TwilioCaller` plays Twilio's side of a Media Streams call, with real-time playback
and mark/`clear` semantics; `LocalRealtimeServer` plays the model's side of the
OpenAI Realtime GA protocol. Both run on trio's `MockClock`.
"""

from __future__ import annotations

from .._sockets import memory_socket_pair
from ._twilio import SILENCE_FRAME, Heard, TwilioCaller, Utterance, speech_frame

__all__ = [
    "SILENCE_FRAME",
    "Heard",
    "TwilioCaller",
    "Utterance",
    "memory_socket_pair",
    "speech_frame",
]
