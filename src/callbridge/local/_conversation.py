"""The local realtime server's default conversation: its items, and the API's rules for them.

Split from `_model`, which sends the events; this module is plain state: no I/O,
no clock. It knows which items are in the conversation, in order, which function calls
their outputs may name, how far each assistant item was truncated, and what the
client added since the last in-conversation response started, which the brain sees
in its `Turn`. Bad client input raises `_PeerError`, with the API's code and message
where they are known.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..twilio import BYTES_PER_MS
from ._brains import Turn
from ._records import ServerSession
from ._session import _field, _PeerError

__all__ = ["Conversation"]


def _texts(content: Any) -> list[str]:
    """The `text` of each text part of a message's content (checked: a string):
    `input_text` (user, system), `output_text` (an assistant turn a client replays)."""
    if not isinstance(content, list):
        return []
    return [_field(part, "text", str, prefix=f"item.content[{i}].")
            for i, part in enumerate(content)
            if isinstance(part, Mapping) and part.get("type") in ("input_text", "output_text")]


class Conversation:
    """One connection's default conversation (out-of-band output never joins it)."""

    def __init__(self, state: ServerSession) -> None:
        self._state = state
        #: item id -> role ("user", "assistant", "system") or item type, in order
        self.items: dict[str, str] = {}
        #: call_id -> its function_call item (outputs must name a call in the conversation)
        self.calls: dict[str, str] = {}
        self._truncated_ms: dict[str, int] = {}
        #: the last committed caller turn no response has answered yet
        self._turn: bytes | None = None
        #: what the client added since the last in-conversation response started
        self._outputs: dict[str, str] = {}
        self._messages: list[tuple[str, str]] = []

    @property
    def last(self) -> str | None:
        return next(reversed(self.items), None)

    def add(self, item_id: str, role: str, *, call_id: str | None = None) -> str | None:
        """Append an item; returns the id of the one before it."""
        previous = self.last
        self.items[item_id] = role
        if call_id is not None:
            self.calls[call_id] = item_id
        return previous

    def commit(self, item_id: str, audio: bytes) -> str | None:
        """A committed caller turn: a user item the next response answers."""
        self._state.turns.append(audio)
        self._turn = audio
        return self.add(item_id, "user")

    def turn(self, *, vad: bool, options: Mapping[str, Any]) -> Turn:
        """The brain's view of a new response. A VAD response answers the turn just
        committed; `response.create` the last turn not yet answered. An out-of-band
        response sees the same but uses nothing up (see `Turn`)."""
        out_of_band = options.get("conversation") == "none"
        turn = Turn(self._turn or b"", self._outputs, messages=self._messages,
                    out_of_band=out_of_band,
                    instructions=None if vad else options.get("instructions"),
                    metadata=None if vad else options.get("metadata"))
        if not out_of_band:
            self._turn, self._outputs, self._messages = None, {}, []
        return turn

    def create(self, raw: Mapping[str, Any],
               new_id: Callable[[str], str]) -> tuple[dict[str, Any], str | None]:
        """A `conversation.item.create`: the item as the server completes it, and the id
        of the item before it."""
        item = dict(_field(raw, "item", dict))
        kind = _field(item, "type", str, prefix="item.")
        if kind not in ("message", "function_call", "function_call_output"):
            raise _PeerError("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                             "'message', 'function_call', and 'function_call_output'.",
                             "item.type")
        content = item.get("content")
        if isinstance(content, list) and any(
                isinstance(part, dict) and part.get("type") == "output_audio" for part in content):
            raise _PeerError("invalid_value", "Assistant audio messages cannot be created.",
                             "item.content")
        texts = _texts(content) if kind == "message" else []
        call_id = _field(item, "call_id", str, required=kind == "function_call_output",
                         prefix="item.")
        output = ""
        if kind == "function_call":
            _field(item, "name", str, prefix="item.")
            _field(item, "arguments", str, prefix="item.")
        elif kind == "function_call_output":
            output = _field(item, "output", str, prefix="item.")
            if self.calls.get(call_id) not in self.items:
                raise _PeerError("invalid_tool_call_id",
                                 f"Tool call ID '{call_id}' not found in conversation.")
        previous = _field(raw, "previous_item_id", str, required=False)
        if previous not in (None, "root") and previous not in self.items:
            raise _PeerError("invalid_value", f"Previous item with id '{previous}' not found.",
                             "previous_item_id")
        item_id = _field(item, "id", str, required=False, prefix="item.") or new_id("item")
        role = str(item.get("role", kind))
        last = self.add(item_id, role, call_id=call_id if kind == "function_call" else None)
        previous = None if previous == "root" else previous or last
        if kind == "function_call_output":
            self._state.function_outputs[call_id] = self._outputs[call_id] = output
        elif texts:
            self._messages.append((role, "\n".join(texts)))
        return item | {"id": item_id, "object": "realtime.item", "status": "completed"}, previous

    def delete(self, raw: Mapping[str, Any]) -> str:
        item_id: str = _field(raw, "item_id", str)
        if self.items.pop(item_id, None) is None:
            raise _PeerError("item_delete_invalid_item_id",
                             f"Item with item_id not found: {item_id}", "item_id")
        return item_id

    def truncate(self, raw: Mapping[str, Any]) -> tuple[str, int]:
        """A `conversation.item.truncate`: (item_id, audio_end_ms) once accepted.

        Only an assistant item of the conversation with audio produced can be cut,
        and not past the audio produced (or an earlier, shorter cut). An out-of-band
        response's item was never in the conversation: not found, as on the API.
        """
        item_id: str = _field(raw, "item_id", str)
        audio_end_ms: int = _field(raw, "audio_end_ms", int)
        content_index = _field(raw, "content_index", int)
        if item_id not in self.items:
            raise _PeerError("item_truncate_invalid_item_id",
                             f"Item with item_id not found: {item_id}", "item_id")
        produced = self._state.produced.get(item_id)
        if self.items[item_id] != "assistant" or not produced:
            raise _PeerError("unsupported_content_type",
                             "Only model output audio messages can be truncated")
        if content_index != 0 or audio_end_ms < 0:
            name = "content_index" if content_index != 0 else "audio_end_ms"
            raise _PeerError("invalid_value", f"Invalid value for '{name}': {raw[name]}.", name)
        produced_ms = len(produced) // BYTES_PER_MS
        # a truncated item's audio is as long as the cut
        produced_ms = min(produced_ms, self._truncated_ms.get(item_id, produced_ms))
        if audio_end_ms > produced_ms:
            raise _PeerError("invalid_value", f"Audio content of {produced_ms}ms is already "
                             f"shorter than {audio_end_ms}ms")
        self._truncated_ms[item_id] = audio_end_ms
        self._state.truncations.append((item_id, audio_end_ms))
        return item_id, audio_end_ms
