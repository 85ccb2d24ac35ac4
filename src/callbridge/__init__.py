"""callbridge: Twilio phone calls <-> realtime speech-to-speech models, on trio.

The public API is what this module exports; everything in an underscored module
is private. Protocol modules (`callbridge.twilio`, `callbridge.realtime`,
`callbridge.codec`, `callbridge.twiml`) are sans-I/O and importable on their own.
"""

from __future__ import annotations

from ._call import CallEvent, CallLimits, CallResult, CallStats, run_call
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._sockets import MessageSocket, SocketClosed, memory_socket_pair
from .agent import PHONE_TURN_DETECTION, Agent
from .backend import ModelConnectError, OpenAIRealtime, RealtimeBackend, RealtimeConnection

__all__ = [
    "PHONE_TURN_DETECTION",
    "Agent",
    "CallEvent",
    "CallLimits",
    "CallResult",
    "CallStats",
    "LocalProtocolError",
    "MessageSocket",
    "ModelConnectError",
    "OpenAIRealtime",
    "ProtocolError",
    "RealtimeBackend",
    "RealtimeConnection",
    "RemoteProtocolError",
    "SocketClosed",
    "memory_socket_pair",
    "run_call",
]

__version__ = "0.1.0"
