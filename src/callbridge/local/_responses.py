"""The local realtime server's responses as wire events, and the rules for its tool calls.

Split from `_model`, which decides *when* each event goes out (under its lock,
re-checking the response's status first); this module decides *what* they say,
with ids from the connection's counter and no clock.

A response's output is a list of items: the spoken message first (when the reply
speaks), then one `function_call` item per tool call. Each item opens
(`response.output_item.added`, `conversation.item.added`, and for audio
`response.content_part.added`), streams deltas, and closes with its `.done` events.
The spoken message streams its transcript ahead of its audio, as the API does:
each audio delta is preceded by the transcript up to the same fraction of the
whole (rounded up to the end of a word), so the words sent always cover the audio
sent. Cancelling closes the item in progress as `incomplete` with exactly the
transcript or arguments streamed so far, and never opens the items after it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import realtime as rt
from ._brains import ToolCall
from ._records import Output, ResponseRecord, ServerSession
from ._session import _PeerError

__all__ = ["ARGUMENT_CHUNK", "Piece", "ResponseEvents", "pieces", "tool_call_error"]

#: characters of function arguments per `response.function_call_arguments.delta`
ARGUMENT_CHUNK = 8

#: what one streaming step sends: (text, audio). The spoken message's transcript
#: and audio deltas (either may be empty), or a function call's arguments.
Piece = tuple[str, bytes]

#: a word with the whitespace before it; trailing whitespace joins the last word
_WORD = re.compile(r"\s*\S+(?:\s+\Z)?|\s+\Z")


def _word_end(text: str, at: int) -> int:
    """`at`, or the end of the word it falls inside."""
    while 0 < at < len(text) and not text[at].isspace():
        at += 1
    return at


def pieces(record: ResponseRecord, output: Output, audio_chunk: int) -> Sequence[Piece]:
    """What `output` streams, one step each: its arguments in `ARGUMENT_CHUNK`
    characters, or its audio in `audio_chunk` bytes, each with the transcript that
    covers it. A transcript without audio streams a word per step."""
    if output.call is not None:
        arguments = output.call.arguments
        return [(arguments[start : start + ARGUMENT_CHUNK], b"")
                for start in range(0, len(arguments), ARGUMENT_CHUNK)]
    audio, text = record.audio, record.transcript
    if not audio:
        return [(word, b"") for word in _WORD.findall(text)]
    steps: list[Piece] = []
    said = 0
    for start in range(0, len(audio), audio_chunk):
        end = min(len(audio), start + audio_chunk)
        cut = _word_end(text, -(-len(text) * end // len(audio)))  # the fraction, rounded up
        steps.append((text[said:cut], audio[start:end]))
        said = cut
    return steps


class ResponseEvents:
    """Builds one connection's response events from its `ResponseRecord`s.

    `opening`, `delta` and `closing` also record on the `Output` the progress their
    events report, so call them only for events that will be sent.
    """

    def __init__(self, new_id: Callable[[str], str], state: ServerSession) -> None:
        self._new_id, self._state = new_id, state

    def ev(self, kind: str, **fields: Any) -> rt.UnknownServerEvent:
        """A server event realtime.py does not model; codec sends `raw` as it is."""
        raw = {"type": kind, "event_id": self._new_id("event"), **fields}
        return rt.UnknownServerEvent(type=kind, raw=raw)

    def created(self, record: ResponseRecord) -> rt.ServerEvent:
        return rt.ResponseCreated(response=self._response(record), event_id=self._new_id("event"))

    def done(self, record: ResponseRecord) -> rt.ServerEvent:
        return rt.ResponseDone(response=self._response(record), event_id=self._new_id("event"))

    def opening(self, record: ResponseRecord, output: Output,
                previous: str | None) -> list[rt.ServerEvent]:
        output.opened = True
        item = self.item(record, output)
        events: list[rt.ServerEvent] = [self.ev(
            "response.output_item.added", response_id=record.id, output_index=output.index,
            item=item)]
        if not record.out_of_band:
            events.append(self.ev("conversation.item.added", previous_item_id=previous, item=item))
        if output.call is None:
            events.append(self.ev(
                "response.content_part.added", response_id=record.id, item_id=output.item_id,
                output_index=output.index, content_index=0,
                part={"type": "audio", "transcript": ""}))
        return events

    def delta(self, record: ResponseRecord, output: Output,
              piece: Piece) -> list[rt.ServerEvent]:
        text, audio = piece
        rid, iid, index = record.id, output.item_id, output.index
        if output.call is not None:
            output.sent += len(text)
            return [self.ev("response.function_call_arguments.delta", response_id=rid,
                            item_id=iid, output_index=index, call_id=output.call.call_id,
                            delta=text)]
        events: list[rt.ServerEvent] = []
        if text:
            output.said += len(text)
            events.append(rt.OutputAudioTranscriptDelta(
                response_id=rid, item_id=iid, output_index=index, delta=text,
                event_id=self._new_id("event")))
        if audio:
            output.sent += len(audio)
            events.append(rt.OutputAudioDelta(
                response_id=rid, item_id=iid, output_index=index,
                delta=base64.b64encode(audio).decode("ascii"), event_id=self._new_id("event")))
        return events

    def closing(self, record: ResponseRecord, output: Output) -> list[rt.ServerEvent]:
        output.status = "incomplete" if record.status == "cancelled" else "completed"
        item = self.item(record, output)
        rid, iid, index = record.id, output.item_id, output.index
        events: list[rt.ServerEvent]
        if output.call is None:
            transcript = item["content"][0]["transcript"]
            events = [
                rt.OutputAudioDone(response_id=rid, item_id=iid, output_index=index,
                                   event_id=self._new_id("event")),
                rt.OutputAudioTranscriptDone(response_id=rid, item_id=iid, output_index=index,
                                             transcript=transcript,
                                             event_id=self._new_id("event")),
                self.ev("response.content_part.done", response_id=rid, item_id=iid,
                        output_index=index, content_index=0,
                        part={"type": "audio", "transcript": transcript})]
        else:
            events = [self.ev("response.function_call_arguments.done", response_id=rid,
                              item_id=iid, output_index=index, call_id=output.call.call_id,
                              name=output.call.name, arguments=item["arguments"])]
        events.append(self.ev("response.output_item.done", response_id=rid, output_index=index,
                              item=item))
        if not record.out_of_band:
            events.append(self.ev("conversation.item.done", item=item))
        return events

    def item(self, record: ResponseRecord, output: Output) -> dict[str, Any]:
        """`output` as a conversation item: in progress until closed, then `completed`, or
        `incomplete` with what was streamed when the response was cancelled."""
        status = output.status
        item: dict[str, Any] = {"id": output.item_id, "object": "realtime.item"}
        if output.call is None:
            transcript: str | None = None
            if output.closed:  # when cut short, the transcript deltas sent
                whole = record.transcript
                transcript = whole if status == "completed" else whole[: output.said]
            return item | {"type": "message", "status": status, "role": "assistant",
                           "content": [{"type": "output_audio", "transcript": transcript}]}
        arguments = output.call.arguments
        arguments = "" if not output.closed else (
            arguments if status == "completed" else arguments[: output.sent])
        return item | {"type": "function_call", "status": status, "name": output.call.name,
                       "call_id": output.call.call_id, "arguments": arguments}

    def _response(self, record: ResponseRecord) -> dict[str, Any]:
        cancelled = record.status == "cancelled"
        voice = self._state.session.get("audio", {}).get("output", {}).get("voice", "marin")
        return {
            "object": "realtime.response", "id": record.id, "status": record.status,
            "status_details": {"type": "cancelled", "reason": record.reason} if cancelled else None,
            "output": [self.item(record, o) for o in record.outputs if o.closed],
            "conversation_id": None if record.out_of_band else f"conv_s{self._state.index}",
            "output_modalities": ["audio"], "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": voice}},
            "metadata": record.options.get("metadata"), "usage": None,
        }


def tool_call_error(calls: Sequence[ToolCall], session: Mapping[str, Any],
                    options: Mapping[str, Any]) -> _PeerError | None:
    """Why the model could not make `calls` under the session's (or this response's)
    `tools` and `tool_choice`; None when it could.

    The real model only calls declared tools and obeys `tool_choice`; a script that
    asks otherwise is a misconfigured test or agent, and must fail loudly rather
    than have the server invent a call the API never would.
    """
    scope = "response" if "tools" in options else "session"
    tools = options["tools"] if "tools" in options else session.get("tools") or []
    declared = [tool.get("name") for tool in tools
                if isinstance(tool, Mapping) and tool.get("type", "function") == "function"]
    for call in calls:
        if call.name not in declared:
            listed = ", ".join(f"'{name}'" for name in declared) or "none"
            return _PeerError(
                "tool_not_declared",
                f"The model cannot call function '{call.name}': it is not declared in "
                f"{scope}.tools (declared functions: {listed}).", f"{scope}.tools")
    choice_scope = "response" if "tool_choice" in options else "session"
    choice = options.get("tool_choice", session.get("tool_choice", "auto"))
    param = f"{choice_scope}.tool_choice"
    names = [call.name for call in calls]
    if choice == "none" and calls:
        return _PeerError("tool_choice_violation", f"The model cannot call function "
                          f"'{names[0]}': {param} is 'none'.", param)
    if choice == "required" and not calls:
        return _PeerError("tool_choice_violation", f"The model must call a function: {param} "
                          "is 'required', but the reply calls none.", param)
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        forced = choice.get("name")
        if not calls or any(name != forced for name in names):
            got = ", ".join(f"'{name}'" for name in names) or "no function"
            return _PeerError("tool_choice_violation", f"The model must call function "
                              f"'{forced}' ({param}), but the reply calls {got}.", param)
    return None
