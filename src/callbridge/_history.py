"""The conversation so far, as text: what a new model session is told to carry on from.

A realtime session keeps its conversation on the server. When the connection drops,
or the session is rotated before the API's hour runs out, the next session starts
empty: `History` keeps what it needs, as the call goes, and `restore()` replays it
as `conversation.item.create` events after the new session's `session.update`.

* The agent's turns come from its output transcripts, cut where the caller stopped
  hearing them (a barge-in's truncation, as a share of the item's audio: the words
  are spread evenly enough over it for this purpose).
* The caller's turns come from input transcription, when the agent has it on
  (`Agent.transcription`); without it the new session knows only the agent's side.
  Transcripts arrive when they are ready, so a caller's turn may land after the
  agent's answer to it.
* Function calls go in with their outputs. A call still running when the session
  changed is restored too, so its output, when it comes, answers it.

Bounded: the most recent entries within `max_chars` of text (older ones go, with a
system note that they were left out). It also keeps the agent's words of each item
as they stream, for the output guardrails, and when each function call started.
Sans-I/O and clockless, like the bridge's other sub-states.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from . import realtime as rt

__all__ = ["History", "cut_text", "heard_share"]

#: what the newest entries may hold, in characters of text
MAX_CHARS = 20_000


class History:
    """The conversation of one call, for a new session; see the module docstring."""

    def __init__(self, max_chars: int = MAX_CHARS) -> None:
        self.max_chars = max_chars
        self._entries: deque[dict[str, Any]] = deque()  # conversation items, in order
        self._chars = 0
        self._dropped = False
        self._words: dict[str, str] = {}  # the agent's words of an item so far
        self._cuts: dict[str, float] = {}  # item id -> share heard, for a truncation
        self._calls: dict[str, tuple[str, float, dict[str, Any]]] = {}  # id -> name, when, item

    def agent_words(self, item_id: str, delta: str) -> str:
        """Add a transcript delta of the agent's item; its words so far."""
        text = self._words[item_id] = self._words.get(item_id, "") + delta
        return text

    def agent_said(self, item_id: str, transcript: str) -> None:
        """The agent's item is complete (`transcript`), or was cut short."""
        self._words.pop(item_id, None)
        cut = self._cuts.pop(item_id, None)
        if cut is not None:
            transcript = cut_text(transcript, cut)
        if transcript:
            self._add({"id": item_id, "type": "message", "role": "assistant",
                       "content": [{"type": "output_text", "text": transcript}]})

    def truncated(self, item_id: str, heard_ms: int, produced_ms: int) -> None:
        """The caller heard `heard_ms` of the item's `produced_ms` of audio."""
        share = heard_share(heard_ms, produced_ms)
        for entry in reversed(self._entries):  # its transcript may be in already
            if entry.get("role") == "assistant" and entry.get("id") == item_id:
                content = entry["content"][0]
                content["text"] = cut_text(content["text"], share)
                return
        self._cuts[item_id] = share

    def caller_said(self, transcript: str) -> None:
        if transcript.strip():
            self._add({"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": transcript}]})

    def function_call(self, call_id: str, name: str, arguments: str, now: float) -> None:
        item = {"type": "function_call", "call_id": call_id, "name": name,
                "arguments": arguments}
        self._calls[call_id] = (name, now, item)
        self._add(item)

    def function_output(self, call_id: str, output: str, now: float) -> tuple[str, float]:
        """The call's output: its tool's name and how long it took."""
        name, started, _ = self._calls.pop(call_id, ("?", now, None))
        self._add({"type": "function_call_output", "call_id": call_id, "output": output})
        return name, now - started

    def restore(self) -> list[rt.ClientEvent]:
        """The conversation so far, for a new session (after its `session.update`)."""
        items = [dict(entry) for entry in self._entries]
        for item in items:
            item.pop("id", None)
        if self._dropped:
            items.insert(0, {"type": "message", "role": "system", "content": [{
                "type": "input_text",
                "text": "The call has been going on for a while; its beginning is left out."}]})
        # a call left without its output would stall the new conversation's answer
        answered = {i["call_id"] for i in items if i["type"] == "function_call_output"}
        return [rt.ConversationItemCreate(item=item) for item in items
                if item["type"] != "function_call" or item["call_id"] in answered
                or item["call_id"] in self._calls]

    def _add(self, item: dict[str, Any]) -> None:
        self._entries.append(item)
        self._chars += _size(item)
        while self._chars > self.max_chars and len(self._entries) > 1:
            self._chars -= _size(self._entries.popleft())
            self._dropped = True


def heard_share(heard_ms: int, produced_ms: int) -> float:
    """The share of an item's audio the caller heard (a truncation)."""
    return 0.0 if produced_ms <= 0 else min(1.0, heard_ms / produced_ms)


def cut_text(transcript: str, share: float) -> str:
    """The words of a transcript the caller heard, `share` of its audio: the words
    are taken as spread evenly over the audio."""
    return transcript[: round(len(transcript) * share)]


def _size(item: dict[str, Any]) -> int:
    if item["type"] == "message":
        return len(item["content"][0]["text"])
    return len(item.get("arguments", "")) + len(item.get("output", ""))
