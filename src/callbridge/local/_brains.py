"""Brains for the local realtime server: what the model says, and which tools it calls.

A brain maps the caller's committed turn to a `Reply` (audio, transcript, function
calls) or None to stay silent. The server asks it once per response it would
start, so a scripted brain is a list of replies in turn order. The turn carries what
the client sent since the previous response (function outputs, text messages) and
the `response.create`'s instructions and metadata, so a brain can answer from what
its tools returned or what the agent told it, as the real model does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Self

import attrs

from ._audio import DEFAULT_THRESHOLD_DB, tone, trim_silence

__all__ = [
    "Brain",
    "Reply",
    "ToolCall",
    "Turn",
    "echo_brain",
    "scripted_brain",
    "tone_brain",
]


def _arguments_json(value: Mapping[str, Any] | str) -> str:
    return value if isinstance(value, str) else json.dumps(dict(value), separators=(",", ":"))


@attrs.frozen
class ToolCall:
    """One function call the model makes: `ToolCall("lookup_order", {"order": "42"})`.

    `arguments` goes on the wire as compact JSON; a string is sent as it is, so a
    script can hand the bridge malformed arguments on purpose. With `call_id` None the
    server assigns one (`call_...`); give one to find the output in `Turn`.
    """

    name: str
    arguments: str = attrs.field(default="{}", converter=_arguments_json)
    call_id: str | None = None


def _tool_calls(calls: Iterable[ToolCall]) -> tuple[ToolCall, ...]:
    return tuple(calls)


@attrs.frozen(kw_only=True)
class Reply:
    """What the brain says for one turn: μ-law 8 kHz audio, its transcript, tool calls.

    The response's output is the spoken message (left out when the reply has tool
    calls and neither audio nor transcript), then one `function_call` item per call.
    """

    audio: bytes = b""
    transcript: str = ""
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_tool_calls)

    @property
    def speaks(self) -> bool:
        return bool(self.audio or self.transcript or not self.tool_calls)


class Turn(bytes):
    """The caller's committed turn audio (μ-law), plus what the client asked for with it.

    A `bytes` subclass so brains that only listen keep working unchanged. The rest
    is what the real model would see of the request behind this response:

    * `function_outputs` maps call_id -> output for each `function_call_output` item
      the client created since the previous response started (empty otherwise); a
      `response.create` without new caller audio gets `Turn(b"", outputs)`.
    * `messages` is `(role, text)` for each `message` item with text content the
      client created since then, in order (`("user", "The caller pressed 1 2 3.")`,
      `("system", ...)`, or `("assistant", ...)` when a client replays a conversation
      into a new session); the text is its `input_text` / `output_text` parts joined
      by newlines.
    * `instructions` and `metadata` are the `response.create`'s `response.instructions`
      and `response.metadata`: None for a VAD response, or when not given.
    * `out_of_band` is true for `response.conversation == "none"`. Such a response
      sees the caller audio, outputs and messages not yet answered, but does not
      use them up: the next in-conversation response gets them again.
    """

    function_outputs: Mapping[str, str]
    messages: tuple[tuple[str, str], ...]
    instructions: str | None
    metadata: Mapping[str, str] | None
    out_of_band: bool

    def __new__(cls, audio: bytes = b"",
                function_outputs: Mapping[str, str] | None = None, *,
                messages: Iterable[tuple[str, str]] = (), instructions: str | None = None,
                metadata: Mapping[str, str] | None = None, out_of_band: bool = False) -> Self:
        turn = super().__new__(cls, audio)
        turn.function_outputs = MappingProxyType(dict(function_outputs or {}))
        turn.messages = tuple((str(role), str(text)) for role, text in messages)
        turn.instructions = instructions
        turn.metadata = None if metadata is None else MappingProxyType(dict(metadata))
        turn.out_of_band = out_of_band
        return turn


#: gets the caller's committed turn, returns a reply or None to stay silent
Brain = Callable[[Turn], Reply | None]


def tone_brain(ms: int = 2000) -> Brain:
    """Answer every turn with a loud 440 Hz tone of `ms` milliseconds."""
    audio = tone(ms)
    return lambda turn: Reply(audio=audio, transcript=f"<{ms} ms tone>")


def scripted_brain(replies: Sequence[Reply | Brain]) -> Brain:
    """Answer turn n with `replies[n]`, then stay silent.

    An entry may itself be a brain, called for its turn: that is how a script's
    follow-up answers from `turn.function_outputs`.
    """
    pending: Iterator[Reply | Brain] = iter(list(replies))

    def brain(turn: Turn) -> Reply | None:
        entry = next(pending, None)
        return entry(turn) if callable(entry) else entry

    return brain


def echo_brain(*, threshold_db: float = DEFAULT_THRESHOLD_DB) -> Brain:
    """Say the caller's turn back, without its leading and trailing silence (20 ms windows)."""

    def brain(turn: bytes) -> Reply | None:
        audio = trim_silence(turn, threshold_db)
        return Reply(audio=audio) if audio else None

    return brain
