"""The conversation so far, for a new session: the pure `History`."""

from __future__ import annotations

from typing import Any

from _schema import validate_client_event

from callbridge import realtime as rt
from callbridge._history import History
from callbridge.codec import encode


def items(history: History) -> list[dict[str, Any]]:
    events = history.restore()
    for event in events:
        validate_client_event(encode(event))  # each one as the API takes it
    return [dict(e.item) for e in events if isinstance(e, rt.ConversationItemCreate)]


def text(item: dict[str, Any]) -> str:
    return str(item["content"][0]["text"])


def test_turns_calls_and_outputs_in_order() -> None:
    history = History()
    history.caller_said("What's my order status?")
    history.agent_said("i1", "Let me check.")
    history.function_call("c1", "lookup_order", '{"order_id":"1"}', 10.0)
    assert history.function_output("c1", '{"status":"shipped"}', 10.5) == ("lookup_order", 0.5)
    history.agent_said("i2", "It has shipped.")
    restored = items(history)
    assert [(i["type"], i.get("role")) for i in restored] == [
        ("message", "user"), ("message", "assistant"), ("function_call", None),
        ("function_call_output", None), ("message", "assistant")]
    assert "id" not in restored[1]  # the new session names its own items


def test_what_the_caller_did_not_hear_is_cut_before_or_after_its_transcript() -> None:
    history = History()
    history.agent_said("i1", "0123456789")
    history.truncated("i1", heard_ms=300, produced_ms=1000)  # after the transcript
    history.truncated("i2", heard_ms=500, produced_ms=1000)  # before it
    history.agent_said("i2", "abcdefghij")
    assert [text(i) for i in items(history)] == ["012", "abcde"]


def test_a_call_without_an_output_is_restored_only_while_it_runs() -> None:
    history = History()
    history.function_call("c1", "slow", "{}", 0.0)
    assert [i["type"] for i in items(history)] == ["function_call"]  # still running
    history.function_output("c1", "done", 1.0)
    assert [i["type"] for i in items(history)] == ["function_call", "function_call_output"]


def test_bounded_to_the_newest_text_with_a_note() -> None:
    history = History(max_chars=100)
    for n in range(20):
        history.caller_said(f"turn {n:02d} " + "x" * 20)
    restored = items(history)
    assert restored[0]["role"] == "system" and "left out" in text(restored[0])
    assert text(restored[-1]).startswith("turn 19")
    assert sum(len(text(i)) for i in restored[1:]) <= 100


def test_the_agents_words_stream_for_the_guardrails() -> None:
    history = History()
    assert history.agent_words("i1", "Hello") == "Hello"
    assert history.agent_words("i1", ", caller") == "Hello, caller"
    history.agent_said("i1", "Hello, caller.")
    assert history.agent_words("i1", "x") == "x"  # a finished item starts over
