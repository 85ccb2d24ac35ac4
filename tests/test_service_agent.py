"""The README's agent (`examples/pizza.py`) through the real service.

`hypercorn --worker-class trio callbridge.app:app` in a subprocess, as users run it,
with `CALLBRIDGE_AGENT=pizza:agent` loaded from the working directory; the local
realtime model on a real WebSocket plays a model that uses the tools; the synthetic
Twilio caller types an order number. Real sockets and the real clock: nothing here
depends on timing, the model's brain answers by what each response is for (its
outputs, its messages, out of band or not), and the call ends once the last line
was said. What must hold, seen from the model's side: every function call answered
by a valid `function_call_output`, never an `error` (so never a `response.create`
while a response was active), audio both ways throughout.
"""

from __future__ import annotations

import importlib.util
import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _schema import validate_client_event

from callbridge.local import LocalRealtimeServer, Reply, ServerSession, ToolCall, Turn
from callbridge.local._audio import tone
from callbridge.testing import (
    TwilioCaller,
    dial_twilio_stream,
    hypercorn_process,
    serve_realtime_websocket,
    simulate_call,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LINE = "I can only help with Pizza Co. orders."


def brain(turn: Turn) -> Reply:
    """A model that uses the pizza agent's tools, by what each response is for."""
    pressed = [text for role, text in turn.messages if "pressed" in text]
    if any(role == "system" for role, _ in turn.messages):  # an idle prompt
        return Reply(audio=tone(500), transcript="Are you still there?")
    if turn.out_of_band:  # the filler line
        return Reply(audio=tone(400), transcript=turn.instructions or "")
    if turn.instructions and LINE in turn.instructions:  # the guardrail's line
        return Reply(audio=tone(600), transcript=LINE)
    if pressed:  # "The caller pressed 9 9 9 9 9 9 #."
        digits = "".join(c for c in pressed[0] if c.isdigit())
        return Reply(audio=tone(300), transcript="Let me check.",
                     tool_calls=[ToolCall("lookup_order", {"order_id": digits})])
    if turn.function_outputs:
        said = " ".join(turn.function_outputs.values())
        if "LookupError" in said:  # then strays into the competition: cut off
            return Reply(audio=tone(3000),
                         transcript="I could not find that order, but Domino's is nearby.")
        return Reply(audio=tone(800), transcript=f"Here you go: {said}")
    # the greeting: two tools at once, one slow (filler), one through trio-asyncio
    return Reply(audio=tone(500), transcript="Hello from Pizza Co.!", tool_calls=[
        ToolCall("lookup_order", {"order_id": "123456"}),
        ToolCall("pizza_price", {"pizza": "Margherita"})])


def caller() -> TwilioCaller:
    return TwilioCaller(hangup_at=60.0, dtmf=[(6.0 + i / 5, d) for i, d in enumerate("999999#")],
                        custom_parameters={"from": "+15557770000", "to": "+15550001111"})


def line_said(sessions: list[ServerSession]) -> bool:
    return any(r.transcript == LINE and r.status == "completed"
               for s in sessions for r in s.responses)


def example_agent() -> Any:
    spec = importlib.util.spec_from_file_location("pizza", EXAMPLES / "pizza.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.agent


async def test_the_readme_agent_in_memory(autojump_clock: trio.testing.MockClock) -> None:
    """The same call on virtual time: `run_call` with the agent as embedders pass it."""
    model = LocalRealtimeServer(brain)
    phone = caller()
    phone.hangup_at = 16.0  # virtual time: everything is said by then
    run = await simulate_call(phone, agent=example_agent(), model=model)
    run.check_protocols()
    check_session(run.session, phone)


@pytest.mark.slow
async def test_the_readme_agent_through_the_real_service() -> None:
    model = LocalRealtimeServer(brain)
    phone = caller()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_realtime_websocket, model))
            env = {"OPENAI_API_KEY": "sk-test-not-a-key",
                   "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
                   "CALLBRIDGE_AGENT": "pizza:agent"}
            async with hypercorn_process("callbridge.app:app", env, cwd=EXAMPLES) as server:
                async with trio.open_nursery() as call:
                    call.start_soon(dial_twilio_stream, phone,
                                    f"ws://{server.host}/media-stream")
                    # the local model has no event for a response's end: poll (bounded)
                    while not line_said(model.sessions):  # noqa: ASYNC110
                        await trio.sleep(0.05)
                    await trio.sleep(1.0)  # let the line play, then hang up
                    phone.hangup_at = 0.0
                await model.wait_for_sessions(lambda s: len(s) == 1 and s[0].closed)
            nursery.cancel_scope.cancel()

    [session] = model.sessions
    check_session(session, phone)


def check_session(session: ServerSession, phone: TwilioCaller) -> None:
    assert line_said([session])
    errors = [e for e in map(json.loads, session.sent) if e["type"] == "error"]
    assert errors == []  # never a response.create while one was active, nothing invalid
    for text in session.received:
        validate_client_event(text)
    received = [json.loads(t) for t in session.received]
    outputs = {e["item"]["call_id"]: e["item"]["output"] for e in received
               if e["type"] == "conversation.item.create"
               and e["item"]["type"] == "function_call_output"}
    calls = {c.call_id: c for c in session.tool_calls}
    assert sorted(outputs) == sorted(calls)  # every call answered, once
    by_name = {calls[k].name + calls[k].arguments: v for k, v in outputs.items()}
    assert json.loads(by_name['lookup_order{"order_id":"123456"}']) == {
        "order_id": "123456", "status": "out for delivery", "eta_minutes": 12,
        "caller": "+15557770000"}
    assert by_name['pizza_price{"pizza":"Margherita"}'] == "11.0"
    assert json.loads(by_name['lookup_order{"order_id":"999999"}']) == {
        "error": "LookupError: there is no order 999999"}
    purposes = [e["response"]["metadata"]["callbridge"] for e in received
                if e["type"] == "response.create"]
    # greeting; a filler while a slow call runs and nothing else is said (exactly when
    # is held on virtual time in test_agent_call); the answers; the guardrail's line
    assert purposes.count("greeting") == 1 and purposes.count("line") == 1
    assert "filler" in purposes
    cut = [r for r in session.responses if "Domino" in r.transcript]
    assert cut and all(r.status == "cancelled" for r in cut)
    assert session.truncations  # what the caller heard of it is what the model keeps
    assert any(text.startswith("The caller pressed 9 9 9 9 9 9 #")
               for e in received if e["type"] == "conversation.item.create"
               for text in [e["item"].get("content", [{}])[0].get("text", "")])
    assert phone.violations == [] and phone.heard_audio() and len(session.input_audio) > 0
