"""One response at a time, tool batches and keypress entries: the pure `Conversation`."""

from __future__ import annotations

from typing import Any

import pytest

from callbridge import Agent
from callbridge import realtime as rt
from callbridge._conversation import Conversation

# A step: ("connect", first) | ("request",) | ("created", id, purpose) | ("done", id)
# | ("spoke",) | ("rejected",); each answers the purposes of the `response.create`s
# that go out now.


def ours(response_id: str, purpose: str | None) -> dict[str, Any]:
    metadata = None if purpose is None else {"callbridge": purpose}
    return {"id": response_id, "metadata": metadata}


def run(steps: list[tuple[Any, ...]], agent: Agent | None = None) -> list[list[str]]:
    conversation = Conversation(agent or Agent(idle_timeout=None))
    said = []
    for kind, *args in steps:
        events: list[rt.ClientEvent] = []
        if kind == "connect":
            events = conversation.connected(first=args[0]) + conversation.send_waiting()
        elif kind == "request":
            events = conversation.request()
        elif kind == "created":
            conversation.created(ours(*args))
        elif kind == "done":
            events = conversation.done(args[0])
        elif kind == "spoke":
            conversation.caller_spoke()
        elif kind == "rejected":
            events = conversation.rejected()
        else:  # pragma: no cover
            raise AssertionError(kind)
        said.append([e.response["metadata"]["callbridge"] for e in events
                     if isinstance(e, rt.ResponseCreate) and e.response])
    return said


@pytest.mark.parametrize(("steps", "expected"), [
    pytest.param([("connect", True), ("request",)], [[], ["reply"]], id="idle: at once"),
    pytest.param([("request",), ("connect", True)], [[], ["reply"]],
                 id="before the connection: when it opens"),
    pytest.param([("connect", True), ("created", "r", None), ("request",), ("done", "r")],
                 [[], [], [], ["reply"]], id="after the open response"),
    pytest.param([("connect", True), ("request",), ("request",), ("created", "a", "reply"),
                  ("done", "a")], [[], ["reply"], [], [], ["reply"]],
                 id="ours on its way counts as open"),
    pytest.param([("connect", True), ("request",), ("created", "v", None), ("done", "v"),
                  ("created", "a", "reply"), ("done", "a")],
                 [[], ["reply"], [], [], [], []],
                 id="a VAD response is not taken for ours"),
    pytest.param([("connect", True), ("created", "r", None), ("request",), ("spoke",),
                  ("done", "r")], [[], [], [], [], []],
                 id="a new turn of the caller answers instead"),
    pytest.param([("connect", True), ("spoke",), ("request",), ("created", "v", None),
                  ("done", "v")], [[], [], [], [], []],
                 id="a request while the caller's turn is unanswered is answered by it"),
    pytest.param([("connect", True), ("request",), ("created", "v", None), ("rejected",),
                  ("done", "v")], [[], ["reply"], [], [], ["reply"]],
                 id="refused: after the response that was in the way"),
    pytest.param([("connect", True), ("created", "r", None), ("request",),
                  ("connect", False), ("request",)], [[], [], [], [], ["reply"]],
                 id="a new connection: nothing open, the old request dropped"),
])
def test_response_requests(steps: list[tuple[Any, ...]], expected: list[list[str]]) -> None:
    assert run(steps) == expected


def test_the_greeting_goes_first_on_the_first_connection_only() -> None:
    conversation = Conversation(Agent(greeting="Hello!", idle_timeout=None))
    (greeting,) = conversation.connected(first=True)
    assert greeting == rt.ResponseCreate(response={
        "instructions": "Hello!", "metadata": {"callbridge": "greeting"}})
    assert conversation.request() == []  # after the greeting
    assert conversation.connected(first=False) == []


def test_a_servers_response_without_metadata_is_taken_for_our_oldest_request() -> None:
    # lenient: should a server not echo `metadata`, the bridge still does not stall
    conversation = Conversation(Agent(idle_timeout=None))
    conversation.connected(first=True)
    conversation.request()
    assert conversation.created({"id": "r"}) == "reply"
    assert conversation.created({"id": "v", "metadata": None}) == ""


def test_outputs_of_a_response_answer_it_once_all_are_in_and_it_is_done() -> None:
    conversation = Conversation(Agent(idle_timeout=None))
    conversation.connected(first=True)
    conversation.created(ours("r", None))
    assert conversation.function_call("r", "a", 0.0) and conversation.function_call("r", "b", 0.0)
    assert not conversation.function_call("r", "a", 0.0)  # known already
    item = {"type": "function_call_output", "call_id": "a", "output": "1"}
    assert conversation.output("a", item) == [rt.ConversationItemCreate(item=item)]
    assert conversation.done("r") == []  # b has no output yet
    assert conversation.tools_running
    events = conversation.output("b", {**item, "call_id": "b"})
    assert [type(e) for e in events] == [rt.ConversationItemCreate, rt.ResponseCreate]
    assert not conversation.tools_running
    assert conversation.output("zzz", item) == []  # unknown: nothing


def test_keypress_entries_end_at_the_terminator_or_the_pause() -> None:
    conversation = Conversation(Agent(dtmf_timeout=2.0, dtmf_terminator="#"))
    assert conversation.keypress("1", 0.0) is None
    assert conversation.next_deadline == 2.0
    assert conversation.keypress("#", 1.0) == "1#"
    assert conversation.next_deadline is None
    assert conversation.keypress("5", 3.0) is None
    assert conversation.keypress_tick(4.9) is None
    assert conversation.keypress_tick(5.0) == "5"
    assert Conversation(Agent(dtmf_timeout=None)).keypress("1", 0.0) is None
