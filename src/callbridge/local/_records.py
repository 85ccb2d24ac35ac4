"""What the local realtime server did, per connection and per response, for tests to inspect.

Split from `_model` so the protocol logic reads on its own; `_responses` builds
the wire events from these records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import trio

from ..twilio import BYTES_PER_MS
from ._brains import ToolCall

__all__ = ["Output", "ResponseRecord", "ServerSession"]


@attrs.define(eq=False)
class Output:
    """One output item of a response: the spoken message (`call` None) or a function call."""

    index: int
    item_id: str
    call: ToolCall | None = None
    #: audio bytes or argument characters sent in deltas so far
    sent: int = 0
    #: transcript characters sent in deltas so far (the spoken message)
    said: int = 0
    opened: bool = False
    #: the item's status: `completed` or `incomplete` (cut short) once closed
    status: str = "in_progress"

    @property
    def closed(self) -> bool:
        return self.status != "in_progress"


@attrs.define(eq=False)
class ResponseRecord:
    """One response as the server ran it: what it meant to say and call, and how it ended."""

    id: str
    #: the spoken message's item; None when the reply only calls tools
    item_id: str | None
    audio: bytes = attrs.field(repr=False)
    transcript: str
    options: Mapping[str, Any]
    #: the function calls it meant to make, with their call ids
    tool_calls: tuple[ToolCall, ...] = ()
    status: str = "in_progress"
    #: `turn_detected` or `client_cancelled` once cancelled
    reason: str | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, repr=False)
    outputs: list[Output] = attrs.field(factory=list, repr=False)

    @property
    def out_of_band(self) -> bool:
        return self.options.get("conversation") == "none"


@attrs.define(eq=False)
class ServerSession:
    """Everything one connection did, for tests to inspect."""

    index: int
    id: str
    model: str
    session: dict[str, Any] = attrs.field(repr=False)
    input_audio: bytearray = attrs.field(factory=bytearray, repr=False)
    appends_before_session_update: bool = False
    session_updates: int = 0
    #: assistant item id -> the audio bytes sent for it in deltas
    produced: dict[str, bytearray] = attrs.field(factory=dict, repr=False)
    #: accepted `conversation.item.truncate`s: (item_id, audio_end_ms)
    truncations: list[tuple[str, int]] = attrs.field(factory=list)
    #: the audio of each committed user turn
    turns: list[bytes] = attrs.field(factory=list, repr=False)
    responses: list[ResponseRecord] = attrs.field(factory=list)
    #: function calls made (their `output_item.added` was sent), with call ids
    tool_calls: list[ToolCall] = attrs.field(factory=list)
    #: call_id -> output of each accepted `function_call_output` item
    function_outputs: dict[str, str] = attrs.field(factory=dict)
    #: the brain asked for something the session does not allow (an undeclared tool...)
    violations: list[str] = attrs.field(factory=list)
    #: (event type, its audio_start_ms / audio_end_ms, input clock in ms when it was sent)
    vad_log: list[tuple[str, int, int]] = attrs.field(factory=list)
    received: list[str] = attrs.field(factory=list, repr=False)
    sent: list[str] = attrs.field(factory=list, repr=False)
    #: every frame either way, in order: (trio time, "in" or "out", text)
    timeline: list[tuple[float, str, str]] = attrs.field(factory=list, repr=False)
    closed: bool = False

    @property
    def input_ms(self) -> int:
        return len(self.input_audio) // BYTES_PER_MS
