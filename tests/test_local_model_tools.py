"""Function calling on the local realtime server: scripted tool calls, as the GA API makes them.

Protocol-level, on MockClock, through the schema-checking client of
test_local_model: every server event received is validated against the openai
SDK's GA models, and the function-call events also against their own classes.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pydantic
import pytest
import trio
from _schema import validate_client_event
from openai.types.realtime import (
    RealtimeConversationItemFunctionCall,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
)
from test_local_model import (
    RESPONSE_HEAD,
    RESPONSE_TAIL,
    Client,
    audio_of,
    open_client,
    silence,
    types,
    vad_update,
    validate_server_event,
)

from callbridge import codec
from callbridge import realtime as rt
from callbridge.local import LocalRealtimeServer, Reply, ToolCall, Turn, scripted_brain
from callbridge.local._audio import tone

LOOKUP = {"type": "function", "name": "lookup_order",
          "description": "Look up an order by number. Tell the caller you are checking.",
          "parameters": {"type": "object", "properties": {"order": {"type": "string"}},
                         "required": ["order"]}}
STOCK = {"type": "function", "name": "check_stock", "description": "Stock level of a SKU.",
         "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}}}

_SPECIFIC: dict[str, type[pydantic.BaseModel]] = {
    "response.output_item.added": ResponseOutputItemAddedEvent,
    "response.output_item.done": ResponseOutputItemDoneEvent,
    "response.function_call_arguments.delta": ResponseFunctionCallArgumentsDeltaEvent,
    "response.function_call_arguments.done": ResponseFunctionCallArgumentsDoneEvent,
}


#: one streaming step of a spoken message: the transcript that covers its audio, the audio
SPOKEN_STEP = ["response.output_audio_transcript.delta", "response.output_audio.delta"]


def check_call_event(event: dict[str, Any]) -> None:
    """Function-call events, strictly against their own SDK class too."""
    model = _SPECIFIC[event["type"]].model_validate(event, strict=True)
    item = getattr(model, "item", None)
    if item is not None and event["item"]["type"] == "function_call":
        assert isinstance(item, RealtimeConversationItemFunctionCall)


def call_types(deltas: int, *, in_conversation: bool = True) -> list[str]:
    """The events of one function_call output item, in order."""
    added = ["conversation.item.added"] if in_conversation else []
    done = ["conversation.item.done"] if in_conversation else []
    return (["response.output_item.added", *added]
            + ["response.function_call_arguments.delta"] * deltas
            + ["response.function_call_arguments.done", "response.output_item.done", *done])


def tools_update(*tools: dict[str, Any], tool_choice: Any = "auto") -> str:
    """A session.update declaring `tools` (raw JSON: tool_choice may be an object)."""
    return json.dumps({"type": "session.update", "session": {
        "type": "realtime", "tools": list(tools), "tool_choice": tool_choice}})


def function_output(call_id: str, output: str, event_id: str | None = None) -> str:
    text = codec.encode(rt.ConversationItemCreate(
        item={"type": "function_call_output", "call_id": call_id, "output": output},
        event_id=event_id))
    validate_client_event(text)  # the shape the SDK sends
    return text


async def send_update(client: Client, update: str) -> dict[str, Any]:
    validate_client_event(update)
    return (await client.update(update))["session"]


def errors(client: Client) -> list[dict[str, Any]]:
    return [e["error"] for e in client.events if e["type"] == "error"]


# --- brains and replies (synchronous) --------------------------------------------------


def test_tool_call_and_reply_values() -> None:
    call = ToolCall("lookup_order", {"order": "42", "rush": True})
    assert call.arguments == '{"order":"42","rush":true}' and call.call_id is None
    assert ToolCall("end_call").arguments == "{}"
    assert ToolCall("x", '{"broken"').arguments == '{"broken"'  # malformed on purpose
    assert Reply(audio=b"\x01").speaks and Reply().speaks
    assert not Reply(tool_calls=[call]).speaks
    assert Reply(transcript="One moment", tool_calls=[call]).tool_calls == (call,)


def test_turn_is_bytes_with_function_outputs() -> None:
    turn = Turn(b"\x01\x02", {"call_1": "ok"})
    assert turn == b"\x01\x02" and isinstance(turn, bytes)
    assert dict(turn.function_outputs) == {"call_1": "ok"}
    assert dict(Turn().function_outputs) == {} and Turn() == b""
    with pytest.raises(TypeError):
        turn.function_outputs["call_2"] = "no"  # type: ignore[index]


def test_scripted_brain_entries_may_be_brains() -> None:
    first = Reply(tool_calls=[ToolCall("lookup_order", {"order": "42"}, call_id="call_a")])
    brain = scripted_brain([
        first, lambda turn: Reply(transcript=f"It says {turn.function_outputs['call_a']}")])
    assert brain(Turn(b"x")) == first
    assert brain(Turn(b"", {"call_a": "shipped"})) == Reply(transcript="It says shipped")
    assert brain(Turn(b"")) is None


# --- the happy path ----------------------------------------------------------------------


async def test_tool_call_then_spoken_follow_up(autojump_clock: Any) -> None:
    heard: list[Turn] = []

    def follow_up(turn: Turn) -> Reply:
        heard.append(turn)
        (output,) = turn.function_outputs.values()
        status = json.loads(output)["status"]
        return Reply(audio=tone(300), transcript=f"Your order {status} today")

    server = LocalRealtimeServer(scripted_brain([
        Reply(tool_calls=[ToolCall("lookup_order", {"order": "42"})]), follow_up]))
    async with open_client(server) as client:
        session = await send_update(client, tools_update(LOOKUP))
        assert session["tools"] == [LOOKUP] and session["tool_choice"] == "auto"
        await client.update(vad_update())
        await client.append(silence(300) + tone(400) + silence(600))
        committed = await client.recv_until("conversation.item.done")
        user_item = committed[-1]["item"]["id"]
        t0 = trio.current_time()
        events = await client.recv_until("response.done")
        elapsed = trio.current_time() - t0

        # '{"order":"42"}' is 14 characters: two deltas of at most 8
        assert types(events) == ["response.created", *call_types(2), "response.done"]
        for event in events[1:-1]:
            if event["type"] in _SPECIFIC:
                check_call_event(event)
        created, added, conv_added, d1, d2, args_done, item_done, conv_done, done = events
        response_id = created["response"]["id"]
        item = added["item"]
        call_id, item_id = item["call_id"], item["id"]
        assert call_id.startswith("call_") and item_id.startswith("item_")
        assert item == {"id": item_id, "object": "realtime.item", "type": "function_call",
                        "status": "in_progress", "name": "lookup_order", "call_id": call_id,
                        "arguments": ""}
        assert added["output_index"] == 0 and added["response_id"] == response_id
        assert conv_added["item"] == item and conv_added["previous_item_id"] == user_item
        assert [d["delta"] for d in (d1, d2)] == ['{"order"', ':"42"}']
        for delta in (d1, d2):
            assert (delta["response_id"], delta["item_id"], delta["call_id"],
                    delta["output_index"]) == (response_id, item_id, call_id, 0)
        assert {k: v for k, v in args_done.items() if k not in ("event_id", "type")} == {
            "response_id": response_id, "item_id": item_id, "output_index": 0,
            "call_id": call_id, "name": "lookup_order", "arguments": '{"order":"42"}'}
        final = item | {"status": "completed", "arguments": '{"order":"42"}'}
        assert item_done["item"] == final and conv_done["item"] == final
        response = done["response"]
        assert response["status"] == "completed" and response["status_details"] is None
        assert response["output"] == [final]
        # faster than real time, at the audio pace: a delta every chunk_ms / speedup
        assert elapsed == pytest.approx(0.02)
        delta_times = client.times[-len(events) + 3 : -len(events) + 5]
        assert [round(b - a, 6) for a, b in itertools.pairwise(delta_times)] == [0.01]

        # the bridge runs the tool, sends its output, then asks for a response (C3)
        await client.send(function_output(call_id, '{"status":"ships"}', event_id="out1"))
        out_added, _ = await client.recv_until("conversation.item.done")
        assert out_added["previous_item_id"] == item_id
        assert out_added["item"]["type"] == "function_call_output"
        await client.send(rt.ResponseCreate())
        events = await client.recv_until("response.done")
        assert types(events) == RESPONSE_HEAD + SPOKEN_STEP * 3 + RESPONSE_TAIL
        assert audio_of(events) == tone(300)
        assert events[-1]["response"]["output"][0]["content"][0]["transcript"] == (
            "Your order ships today")
    assert heard == [b""] and dict(heard[0].function_outputs) == {call_id: '{"status":"ships"}'}
    state = server.sessions[0]
    assert state.tool_calls == [ToolCall("lookup_order", {"order": "42"}, call_id=call_id)]
    assert state.function_outputs == {call_id: '{"status":"ships"}'}
    assert state.responses[0].item_id is None and state.responses[0].tool_calls == (
        state.tool_calls[0],)
    assert list(state.produced) == [state.responses[1].item_id]
    assert not state.violations and errors(client) == []


async def test_several_calls_after_speech_in_one_response(autojump_clock: Any) -> None:
    """Output 0 is the spoken message, then one function_call item per call; all the
    outputs, then one response.create, and the brain sees them all."""
    seen: list[dict[str, str]] = []

    def answer(turn: Turn) -> Reply:
        seen.append(dict(turn.function_outputs))
        return Reply(audio=tone(100), transcript="Both done")

    server = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(200), transcript="Let me check",
              tool_calls=[ToolCall("lookup_order", {"order": "7"}),
                          ToolCall("check_stock", {"sku": "A-1"}, call_id="call_stock")]),
        answer]))
    async with open_client(server) as client:
        await send_update(client, tools_update(LOOKUP, STOCK))
        await client.send(rt.ResponseCreate())
        events = await client.recv_until("response.done")
        audio = RESPONSE_HEAD + SPOKEN_STEP * 2 + RESPONSE_TAIL[:-1]
        assert types(events) == audio + call_types(2) + call_types(2) + ["response.done"]
        for event in events:
            if event["type"] in _SPECIFIC:
                check_call_event(event)
        message_id = events[1]["item"]["id"]
        first, second = (e for e in events if e["type"] == "response.function_call_arguments.done")
        assert (first["output_index"], first["name"], first["arguments"]) == (
            1, "lookup_order", '{"order":"7"}')
        assert (second["output_index"], second["call_id"], second["arguments"]) == (
            2, "call_stock", '{"sku":"A-1"}')
        chain = [(e["previous_item_id"], e["item"]["id"]) for e in events
                 if e["type"] == "conversation.item.added"]
        assert chain == [(None, message_id), (message_id, first["item_id"]),
                         (first["item_id"], second["item_id"])]
        output = events[-1]["response"]["output"]
        assert [(o["type"], o["status"]) for o in output] == [
            ("message", "completed"), ("function_call", "completed"),
            ("function_call", "completed")]
        assert output[0]["content"][0]["transcript"] == "Let me check"

        await client.send(function_output(first["call_id"], "shipped"))
        await client.send(function_output("call_stock", "3 left"))
        await client.send(rt.ResponseCreate())
        events = await client.recv_until("response.done")
        assert events[-1]["response"]["status"] == "completed"
    assert seen == [{first["call_id"]: "shipped", "call_stock": "3 left"}]
    state = server.sessions[0]
    assert [c.call_id for c in state.tool_calls] == [first["call_id"], "call_stock"]
    assert not state.violations and errors(client) == []


async def test_response_create_during_a_call_is_rejected(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(scripted_brain([
        Reply(tool_calls=[ToolCall("lookup_order", {"order": "x" * 40})])]))
    async with open_client(server) as client:
        await send_update(client, tools_update(LOOKUP))
        await client.send(rt.ResponseCreate())
        await client.send(rt.ResponseCreate(event_id="again"))
        events = await client.recv_until("error")
        response_id = events[0]["response"]["id"]
        assert types(events) == ["response.created", "response.output_item.added",
                                 "conversation.item.added", "error"]
        assert events[-1]["error"] == {
            "type": "invalid_request_error", "code": "conversation_already_has_active_response",
            "message": f"Conversation already has an active response in progress: {response_id}. "
                       "Wait until the response is finished before creating a new one.",
            "event_id": "again"}
        assert (await client.recv_until("response.done"))[-1]["response"]["status"] == "completed"


# --- outputs the API rejects ------------------------------------------------------------


async def test_function_output_must_name_a_call_in_the_conversation(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(scripted_brain([
        Reply(tool_calls=[ToolCall("lookup_order", {"order": "1"}, call_id="call_oob")]),
        Reply(tool_calls=[ToolCall("lookup_order", {"order": "2"}, call_id="call_del")])]))
    async with open_client(server) as client:
        await send_update(client, tools_update(LOOKUP))
        await client.send(function_output("call_nope", "{}", event_id="o1"))
        assert (await client.recv())["error"] == {
            "type": "invalid_request_error", "code": "invalid_tool_call_id",
            "message": "Tool call ID 'call_nope' not found in conversation.", "event_id": "o1"}

        # an out-of-band response's call is not in the conversation
        await client.send(rt.ResponseCreate(response={"conversation": "none"}))
        events = await client.recv_until("response.done")
        assert types(events) == ["response.created", *call_types(2, in_conversation=False),
                                 "response.done"]
        assert events[-1]["response"]["conversation_id"] is None
        await client.send(function_output("call_oob", "{}"))
        assert (await client.recv())["error"]["code"] == "invalid_tool_call_id"

        # nor is a call whose item was deleted
        await client.send(rt.ResponseCreate())
        item_id = (await client.recv_until("response.done"))[1]["item"]["id"]
        await client.send(rt.ConversationItemDelete(item_id=item_id))
        assert (await client.recv())["type"] == "conversation.item.deleted"
        await client.send(function_output("call_del", "{}"))
        assert (await client.recv())["error"]["code"] == "invalid_tool_call_id"

        # a function_call item the client created itself is a call like any other
        await client.send(rt.ConversationItemCreate(item={
            "type": "function_call", "name": "lookup_order", "call_id": "call_mine",
            "arguments": "{}"}))
        await client.recv_until("conversation.item.done")
        await client.send(function_output("call_mine", "done"))
        assert (await client.recv_until("conversation.item.done"))[0]["item"]["call_id"] == (
            "call_mine")
    state = server.sessions[0]
    assert state.function_outputs == {"call_mine": "done"}
    assert [c.call_id for c in state.tool_calls] == ["call_oob", "call_del"]


@pytest.mark.parametrize(("item", "code", "param"), [
    ({"type": "function_call_output", "output": "{}"}, "missing_required_parameter",
     "item.call_id"),
    ({"type": "function_call_output", "call_id": "call_1", "output": {"status": "ok"}},
     "invalid_type", "item.output"),  # the output is a string: serialise JSON yourself
    ({"type": "function_call_output", "call_id": "call_1"}, "missing_required_parameter",
     "item.output"),
    ({"type": "function_call", "call_id": "call_1", "arguments": "{}"},
     "missing_required_parameter", "item.name"),
])
async def test_malformed_call_items(
    autojump_clock: Any, item: dict[str, Any], code: str, param: str
) -> None:
    async with open_client(LocalRealtimeServer()) as client:
        await client.send(json.dumps({"type": "conversation.item.create", "item": item}))
        error = (await client.recv())["error"]
    assert (error["code"], error["param"]) == (code, param)


# --- tools the session does not allow ------------------------------------------------


async def test_undeclared_tool_is_an_error_and_a_violation(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(scripted_brain([
        Reply(tool_calls=[ToolCall("lookup_order", {"order": "42"})]),
        Reply(audio=tone(100), tool_calls=[ToolCall("refund")]),
        Reply(audio=tone(100), transcript="fine")]))
    async with open_client(server) as client:
        # no tools declared at all (the default session)
        await client.send(rt.ResponseCreate(event_id="r1"))
        error = (await client.recv())["error"]
        assert error == {
            "type": "invalid_request_error", "code": "tool_not_declared",
            "message": "The model cannot call function 'lookup_order': it is not declared in "
                       "session.tools (declared functions: none).",
            "param": "session.tools", "event_id": "r1"}

        # a VAD turn: the error has no client event to name; no response starts
        await send_update(client, tools_update(LOOKUP, {"type": "function", "name": "end_call"}))
        await client.update(vad_update())
        await client.append(silence(200) + tone(300) + silence(600))
        events = await client.recv_until("error")
        assert types(events)[-3:] == ["conversation.item.added", "conversation.item.done",
                                      "error"]
        error = events[-1]["error"]
        assert error.get("event_id") is None and error["code"] == "tool_not_declared"
        assert "'refund'" in error["message"] and "'lookup_order', 'end_call'" in error["message"]

        # the session goes on
        await client.send(rt.ResponseCreate())
        assert (await client.recv_until("response.done"))[-1]["response"]["status"] == (
            "completed")
    state = server.sessions[0]
    assert len(state.violations) == 2 and "'lookup_order'" in state.violations[0]
    assert len(state.responses) == 1 and state.tool_calls == []


@pytest.mark.parametrize(("tool_choice", "reply", "override", "fragment"), [
    ("none", Reply(tool_calls=[ToolCall("lookup_order")]), None,
     "cannot call function 'lookup_order': session.tool_choice is 'none'"),
    ("auto", Reply(tool_calls=[ToolCall("lookup_order")]), {"tool_choice": "none"},
     "cannot call function 'lookup_order': response.tool_choice is 'none'"),
    ("required", Reply(audio=b"\x01" * 80), None,
     "must call a function: session.tool_choice is 'required', but the reply calls none"),
    ({"type": "function", "name": "check_stock"}, Reply(tool_calls=[ToolCall("lookup_order")]),
     None, ("must call function 'check_stock' (session.tool_choice), but the reply calls "
            "'lookup_order'")),
    ("auto", Reply(tool_calls=[ToolCall("lookup_order")]), {"tools": [STOCK]},
     ("'lookup_order': it is not declared in response.tools (declared functions: "
      "'check_stock')")),
])
async def test_tool_choice_is_respected(
    autojump_clock: Any, tool_choice: Any, reply: Reply, override: dict[str, Any] | None,
    fragment: str
) -> None:
    server = LocalRealtimeServer(scripted_brain([reply]))
    async with open_client(server) as client:
        await send_update(client, tools_update(LOOKUP, STOCK, tool_choice=tool_choice))
        await client.send(rt.ResponseCreate(response=override, event_id="r"))
        error = (await client.recv())["error"]
    assert error["code"] in ("tool_choice_violation", "tool_not_declared")
    assert fragment in error["message"] and error["event_id"] == "r"
    assert server.sessions[0].violations == [error["message"]]
    assert server.sessions[0].responses == []


@pytest.mark.parametrize(("tool_choice", "override"), [
    ({"type": "function", "name": "lookup_order"}, None),
    ("none", {"tool_choice": "auto"}),
    ("auto", {"tools": [LOOKUP], "tool_choice": "required"}),
])
async def test_allowed_calls(
    autojump_clock: Any, tool_choice: Any, override: dict[str, Any] | None
) -> None:
    server = LocalRealtimeServer(scripted_brain([Reply(tool_calls=[ToolCall("lookup_order")])]))
    async with open_client(server) as client:
        await send_update(client, tools_update(LOOKUP, tool_choice=tool_choice))
        await client.send(rt.ResponseCreate(response=override))
        events = await client.recv_until("response.done")
    assert types(events) == ["response.created", *call_types(1), "response.done"]
    assert not server.sessions[0].violations


@pytest.mark.parametrize(("session", "code", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "lookup_order"}}]},
     "unknown_parameter", "session.tools[0].function"),  # the Chat Completions shape
    ({"tools": [{"type": "function", "description": "no name"}]},
     "missing_required_parameter", "session.tools[0].name"),
    ({"tools": [LOOKUP, {"type": "code_interpreter"}]}, "invalid_value", "session.tools[1].type"),
    ({"tools": {"type": "function"}}, "invalid_type", "session.tools"),
    ({"tool_choice": "sometimes"}, "invalid_value", "session.tool_choice"),
    ({"tool_choice": {"type": "function"}}, "missing_required_parameter",
     "session.tool_choice.name"),
])
async def test_session_tools_are_checked(
    autojump_clock: Any, session: dict[str, Any], code: str, param: str
) -> None:
    server = LocalRealtimeServer()
    async with open_client(server) as client:
        await client.send(json.dumps({"type": "session.update",
                                      "session": {"type": "realtime", **session}}))
        error = (await client.recv())["error"]
        assert (error["code"], error["param"]) == (code, param)
        await client.send(json.dumps({"type": "response.create", "response": session}))
        error = (await client.recv())["error"]
        assert error["param"] == param.replace("session.", "response.")
    assert server.sessions[0].session["tools"] == [] and server.sessions[0].responses == []


# --- cancelling a call -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["client", "speech"])
async def test_cancel_mid_arguments(autojump_clock: Any, how: str) -> None:
    """The open call closes `incomplete` with the arguments streamed so far; the next
    call never starts."""
    arguments = {"order": "x" * 30}  # 42 characters: six deltas
    server = LocalRealtimeServer(scripted_brain([
        Reply(tool_calls=[ToolCall("lookup_order", arguments), ToolCall("check_stock")])]))
    async with open_client(server) as client:
        await send_update(client, tools_update(LOOKUP, STOCK))
        await client.update(vad_update())
        await client.send(rt.ResponseCreate())
        head = await client.recv_until("response.function_call_arguments.delta")
        head.append(await client.recv())  # a second delta: 16 characters streamed
        assert head[-1]["type"] == "response.function_call_arguments.delta"
        if how == "client":
            await client.send(rt.ResponseCancel())
        else:
            await client.append(tone(100))
        events = await client.recv_until("response.done")
        if how == "speech":
            assert events.pop(0)["type"] == "input_audio_buffer.speech_started"
        assert types(events) == ["response.function_call_arguments.done",
                                 "response.output_item.done", "conversation.item.done",
                                 "response.done"]
        for event in events[:2]:
            check_call_event(event)
        partial = json.dumps(arguments, separators=(",", ":"))[:16]
        assert events[0]["arguments"] == partial
        item = events[1]["item"]
        assert (item["status"], item["arguments"], item["name"]) == (
            "incomplete", partial, "lookup_order")
        response = events[-1]["response"]
        reason = "client_cancelled" if how == "client" else "turn_detected"
        assert response["status"] == "cancelled"
        assert response["status_details"] == {"type": "cancelled", "reason": reason}
        assert response["output"] == [item]
        await trio.sleep(1)  # nothing more comes: the stream really stopped
        assert client.events[-1]["type"] == "response.done"
    state = server.sessions[0]
    assert [c.name for c in state.tool_calls] == ["lookup_order"]  # check_stock never made
    assert (state.responses[0].status, state.responses[0].reason) == ("cancelled", reason)


async def test_cancel_mid_arguments_keeps_the_finished_message(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(100), transcript="Checking",
              tool_calls=[ToolCall("lookup_order", {"order": "y" * 30})])]))
    async with open_client(server) as client:
        await send_update(client, tools_update(LOOKUP))
        await client.send(rt.ResponseCreate())
        await client.recv_until("response.function_call_arguments.delta")
        await client.send(rt.ResponseCancel())
        events = await client.recv_until("response.done")
    assert types(events) == ["response.function_call_arguments.done",
                             "response.output_item.done", "conversation.item.done",
                             "response.done"]
    message, call = events[-1]["response"]["output"]
    assert (message["status"], message["content"][0]["transcript"]) == ("completed", "Checking")
    assert (call["status"], call["arguments"]) == ("incomplete", '{"order"')


async def test_cancel_during_speech_before_the_calls(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(1000), transcript="Let me check that",
              tool_calls=[ToolCall("lookup_order")])]))
    async with open_client(server) as client:
        await send_update(client, tools_update(LOOKUP))
        await client.send(rt.ResponseCreate())
        await client.recv_until("response.output_audio.delta")
        await client.send(rt.ResponseCancel())
        events = await client.recv_until("response.done")
    assert types(events) == RESPONSE_TAIL
    (message,) = events[-1]["response"]["output"]
    assert message["type"] == "message" and message["status"] == "incomplete"
    assert server.sessions[0].tool_calls == []


# --- schema ----------------------------------------------------------------------------


async def test_every_event_of_a_tool_session_matches_the_ga_schema(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(200), transcript="Checking",
              tool_calls=[ToolCall("lookup_order", {"order": "42"}), ToolCall("check_stock")]),
        Reply(audio=tone(200), transcript="Done"),
        Reply(tool_calls=[ToolCall("lookup_order", {"order": "9" * 20})]),
        Reply(tool_calls=[ToolCall("refund")])]))
    async with open_client(server) as client:
        await send_update(client, tools_update(LOOKUP, STOCK))
        await client.send(rt.ResponseCreate(response={"metadata": {"k": "v"}}))
        events = await client.recv_until("response.done")
        calls = [e for e in events if e["type"] == "response.function_call_arguments.done"]
        for call in calls:
            await client.send(function_output(call["call_id"], "ok"))
        await client.send(rt.ResponseCreate())
        await client.recv_until("response.done")
        await client.send(rt.ResponseCreate())
        await client.recv_until("response.function_call_arguments.delta")
        await client.send(rt.ResponseCancel())
        await client.recv_until("response.done")
        await client.send(function_output("call_nope", "x"))
        await client.send(rt.ResponseCreate())
        await client.recv_until("error")
        await client.recv_until("error")
    sent = server.sessions[0].sent
    assert len(sent) == len(client.events)
    checked = [validate_server_event(text) for text in sent]
    for event in checked:
        if event["type"] in _SPECIFIC:
            check_call_event(event)
    assert {"response.output_item.added", "response.function_call_arguments.delta",
            "response.function_call_arguments.done", "response.output_item.done",
            "conversation.item.added", "conversation.item.done", "response.done",
            "error"} <= {e["type"] for e in checked}
    ids = [e["event_id"] for e in checked]
    assert len(ids) == len(set(ids))
