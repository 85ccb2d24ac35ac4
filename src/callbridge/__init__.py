"""callbridge: Twilio phone calls <-> realtime speech-to-speech models, on trio.

The public API is what this module exports; everything in an underscored module
is private. The protocol modules (`callbridge.twilio`, `callbridge.realtime`,
`callbridge.codec`, `callbridge.twiml`) are sans-I/O and import no I/O library,
so the names below are loaded on first use: importing a protocol module does not
pull in trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._call import Call, run_call
    from ._calldata import CallLimits, CallRefused, CallResult, CallStats, LiveCalls
    from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
    from ._sockets import MessageSocket, SocketClosed, memory_socket_pair
    from ._twilioctl import TwilioControl
    from .agent import PHONE_TURN_DETECTION, Agent, AgentFactory, CallContext, Guardrail
    from .backend import ModelConnectError, OpenAIRealtime, RealtimeBackend, RealtimeConnection
    from .calltools import end_call, transfer_call
    from .events import CallEvent, EndReason
    from .tools import Handoff, Tool, ToolResult, tool

_EXPORTS = {
    "CallLimits": "_calldata",
    "CallRefused": "_calldata",
    "CallResult": "_calldata",
    "CallStats": "_calldata",
    "Call": "_call",
    "LiveCalls": "_calldata",
    "TwilioControl": "_twilioctl",
    "run_call": "_call",
    "LocalProtocolError": "_errors",
    "ProtocolError": "_errors",
    "RemoteProtocolError": "_errors",
    "MessageSocket": "_sockets",
    "SocketClosed": "_sockets",
    "memory_socket_pair": "_sockets",
    "PHONE_TURN_DETECTION": "agent",
    "Agent": "agent",
    "AgentFactory": "agent",
    "CallContext": "agent",
    "Guardrail": "agent",
    "end_call": "calltools",
    "transfer_call": "calltools",
    "ModelConnectError": "backend",
    "OpenAIRealtime": "backend",
    "RealtimeBackend": "backend",
    "RealtimeConnection": "backend",
    "CallEvent": "events",
    "EndReason": "events",
    "Handoff": "tools",
    "Tool": "tools",
    "ToolResult": "tools",
    "tool": "tools",
}

__all__ = [
    "PHONE_TURN_DETECTION",
    "Agent",
    "AgentFactory",
    "Call",
    "CallContext",
    "CallEvent",
    "CallLimits",
    "CallRefused",
    "CallResult",
    "CallStats",
    "EndReason",
    "Guardrail",
    "Handoff",
    "LiveCalls",
    "LocalProtocolError",
    "MessageSocket",
    "ModelConnectError",
    "OpenAIRealtime",
    "ProtocolError",
    "RealtimeBackend",
    "RealtimeConnection",
    "RemoteProtocolError",
    "SocketClosed",
    "Tool",
    "ToolResult",
    "TwilioControl",
    "end_call",
    "memory_socket_pair",
    "run_call",
    "tool",
    "transfer_call",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'callbridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
