"""Faithful local peers for tests, demos and benchmarks: no Twilio, no OpenAI.

`TwilioCaller` plays Twilio's side of a Media Streams call, with real-time playback
and mark/`clear` semantics, and records what the caller heard. `LocalRealtimeServer`
plays the model's side of the OpenAI Realtime GA protocol (server VAD, responses
faster than real time, auto-cancel, the real truncation rule) with pluggable brains;
it lives in `callbridge.local` (the service runs it offline) and is re-exported here
so tests find both peers in one place. Both run on trio's `MockClock`;
`serve_realtime_websocket`, `serve_pcm_websocket` (the local model as a PCM voice
platform, `LocalPcmPlatform`) and `dial_twilio_stream` put them on real loopback
sockets. `simulate_call` runs a whole call in memory (also the `simulate_call`
pytest fixture); `babble`, `read_wav` and `write_wav` make and keep the audio.
`LocalTwilio` fakes the platform around them: Twilio's REST API for calls (hang-up,
redirect, `<Dial>` transfers, placing calls), signed webhooks and status/AMD
callbacks, and the Media Streams it opens, in memory or on loopback.
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
    serve_pcm_websocket,
    serve_realtime_websocket,
    server_process,
)
from ._platform import (
    AnsweringMachine,
    Callback,
    LocalTwilio,
    OutboundCall,
    Transfer,
    answering_machine,
    asgi_stream,
    dial_stream,
    memory_stream,
)
from ._platform_rest import PlatformCall, PlatformStream, RestRequest
from ._twilio import SILENCE_FRAME, Heard, TwilioCaller, Utterance, speech_frame
from ._voice import babble
from ._wav import read_wav, write_wav

__all__ = [
    "SILENCE_FRAME",
    "AnsweringMachine",
    "Brain",
    "Callback",
    "Handshake",
    "Heard",
    "HypercornProcess",
    "LocalRealtimeServer",
    "LocalTwilio",
    "OutboundCall",
    "PlatformCall",
    "PlatformStream",
    "Reply",
    "ResponseRecord",
    "RestRequest",
    "ServerSession",
    "SimulatedCall",
    "ToolCall",
    "Transfer",
    "Turn",
    "TwilioCaller",
    "Utterance",
    "answering_machine",
    "asgi_stream",
    "babble",
    "dial_stream",
    "dial_twilio_stream",
    "echo_brain",
    "hypercorn_process",
    "memory_socket_pair",
    "memory_stream",
    "pattern_audio",
    "read_wav",
    "scripted_brain",
    "serve_pcm_websocket",
    "serve_realtime_websocket",
    "server_process",
    "simulate_call",
    "speech_frame",
    "tone_brain",
    "write_wav",
]
