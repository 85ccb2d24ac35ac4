"""The local realtime model: the model's side of the OpenAI Realtime GA protocol, in process.

`LocalRealtimeServer` is a `RealtimeBackend` that behaves like the real service where
the bridge is fragile (server VAD on the input clock, responses faster than real
time, auto-cancel on barge-in, the real truncation rule, function calls), with a
pluggable `Brain` deciding what it says. It lives in the package proper, not in
`callbridge.testing`, because the service itself runs it: without an
`OPENAI_API_KEY` the app answers calls with `LocalRealtimeServer(echo_brain())`.
Tests, the demo and the benchmarks use it too, through `callbridge.testing`, which
re-exports these names next to the Twilio-side peers.

It needs no network: `connect` hands back one end of an in-memory socket pair.
`callbridge.testing.serve_realtime_websocket` puts it on a real loopback WebSocket.
"""

from __future__ import annotations

from ._audio import pattern_audio
from ._brains import Brain, Reply, ToolCall, Turn, echo_brain, scripted_brain, tone_brain
from ._model import LocalRealtimeServer
from ._pcm import LocalPcmPlatform, LocalVapi, PcmCallRecord
from ._records import ResponseRecord, ServerSession

__all__ = [
    "Brain",
    "LocalPcmPlatform",
    "LocalRealtimeServer",
    "LocalVapi",
    "PcmCallRecord",
    "Reply",
    "ResponseRecord",
    "ServerSession",
    "ToolCall",
    "Turn",
    "echo_brain",
    "pattern_audio",
    "scripted_brain",
    "tone_brain",
]
