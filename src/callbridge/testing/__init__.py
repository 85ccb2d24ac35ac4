"""Faithful local peers for tests, demos and benchmarks: no Twilio, no OpenAI.

`TwilioCaller` plays Twilio's side of a Media Streams call, with real-time playback
and mark/`clear` semantics, and records what the caller heard. `LocalRealtimeServer`
plays the model's side of the OpenAI Realtime GA protocol (server VAD, responses
faster than real time, auto-cancel, the real truncation rule) with pluggable brains;
it lives in `callbridge.local` (the service runs it offline) and is re-exported here
so tests find both peers in one place. Both run on trio's `MockClock`;
`serve_realtime_websocket` and `dial_twilio_stream` put them on real loopback
sockets. `simulate_call` runs a whole call in memory (also the `simulate_call`
pytest fixture); `babble`, `read_wav` and `write_wav` make and keep the audio.
"""
from __future__ import annotations

from .._sockets import memory_socket_pair
from ..local import (
    Brain,
    LocalRealtimeServer,
    Reply,
    ResponseRecord,
    ServerSession,
    ToolCall,
    Turn,
    echo_brain,
    pattern_audio,
    scripted_brain,
    tone_brain,
)
from ._harness import SimulatedCall, simulate_call
from ._net import (
    Handshake,
    HypercornProcess,
    dial_twilio_stream,
    hypercorn_process,
    serve_realtime_websocket,
    server_process,
)
from ._twilio import SILENCE_FRAME, Heard, TwilioCaller, Utterance, speech_frame
from ._voice import babble
from ._wav import read_wav, write_wav

__all__ = [
    "SILENCE_FRAME",
    "Brain",
    "Handshake",
    "Heard",
    "HypercornProcess",
    "LocalRealtimeServer",
    "Reply",
    "ResponseRecord",
    "ServerSession",
    "SimulatedCall",
    "ToolCall",
    "Turn",
    "TwilioCaller",
    "Utterance",
    "babble",
    "dial_twilio_stream",
    "echo_brain",
    "hypercorn_process",
    "memory_socket_pair",
    "pattern_audio",
    "read_wav",
    "scripted_brain",
    "serve_realtime_websocket",
    "server_process",
    "simulate_call",
    "speech_frame",
    "tone_brain",
    "write_wav",
]
