"""The agent on whole calls: tools, guardrails, idle prompts and handoffs, end to end.

Each test runs `run_call` between the synthetic Twilio caller and the local realtime
model (scripted), on MockClock. What is held on every call: every event the bridge
sent the model is valid by the openai SDK's models; the model never answered
`error` (so no `response.create` while a response was active); every function call
got exactly one `function_call_output`; audio kept flowing both ways.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import trio
import trio.testing
from _schema import validate_client_event

from callbridge import Agent, CallContext, EndReason, Handoff, tool
from callbridge import events as ev
from callbridge.local import LocalRealtimeServer, Reply, ToolCall, Turn, scripted_brain
from callbridge.local._audio import tone
from callbridge.testing import SimulatedCall, TwilioCaller, Utterance, simulate_call


def says(text: str, ms: int = 600) -> Reply:
    return Reply(audio=tone(ms), transcript=text)


def calls(*tool_calls: ToolCall, text: str = "", ms: int = 0) -> Reply:
    return Reply(audio=tone(ms) if ms else b"", transcript=text, tool_calls=tool_calls)


def answer(call_id: str, template: str = "Result: {}") -> Callable[[Turn], Reply]:
    """The follow-up: says what the tool returned (the brain reads the output)."""
    return lambda turn: says(template.format(turn.function_outputs.get(call_id, "MISSING")))


def client_events(run: SimulatedCall, kind: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, run.session.received) if e["type"] == kind]


def check(run: SimulatedCall) -> None:
    """What every call here must hold (see the module docstring)."""
    run.check_protocols()  # no `error` from the model, nothing Twilio would reject
    for text in run.session.received:
        validate_client_event(text)
    outputs = [e["item"]["call_id"] for e in client_events(run, "conversation.item.create")
               if e["item"]["type"] == "function_call_output"]
    made = [c.call_id for c in run.session.tool_calls]
    assert sorted(outputs) == sorted(made), (outputs, made)  # each call: one output
    assert len(run.caller.sent_audio) > 0 and run.caller.heard_audio()


def tool_results(run: SimulatedCall) -> dict[str, ev.ToolResult]:
    return {e.call_id: e for e in run.events if isinstance(e, ev.ToolResult)}


async def run_agent(agent: Agent, script: list[Any], *, hangup_at: float = 12.0,
                    utterances: list[Utterance] | None = None,
                    dtmf: list[tuple[float, str]] | None = None) -> SimulatedCall:
    model = LocalRealtimeServer(scripted_brain(script))
    caller = TwilioCaller(utterances=utterances or [], hangup_at=hangup_at, dtmf=dtmf or [])
    return await simulate_call(caller, agent=agent, model=model)


@tool
async def lookup_order(order_id: str, call: CallContext) -> dict[str, str]:
    """Look up an order. order_id: the 6-digit number the caller reads out."""
    await trio.sleep(0.5)
    return {"order_id": order_id, "status": "shipped", "call": call.call_sid}


def greeter(*tools: Any, **options: Any) -> Agent:
    return Agent(**{"greeting": "Ask for the order number.", "tools": list(tools),
                    "idle_timeout": None, **options})


async def test_one_call_its_output_and_exactly_one_response_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = [calls(ToolCall("lookup_order", {"order_id": "123456"}, call_id="c1")),
              answer("c1")]
    run = await run_agent(greeter(lookup_order), script)
    check(run)
    assert json.loads(run.session.function_outputs["c1"]) == {
        "order_id": "123456", "status": "shipped", "call": run.result.call_sid}
    assert len(client_events(run, "response.create")) == 2  # the greeting, the answer
    assert len(run.session.responses) == 2
    assert tool_results(run)["c1"].outcome == "ok"
    assert tool_results(run)["c1"].duration == 0.5


async def test_three_parallel_calls_run_concurrently_and_get_one_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = [calls(*(ToolCall("lookup_order", {"order_id": str(n)}, call_id=f"c{n}")
                      for n in range(3))),
              lambda turn: says(f"{len(turn.function_outputs)} orders")]
    start = trio.current_time()
    run = await run_agent(greeter(lookup_order), script)
    check(run)
    results = tool_results(run)
    assert sorted(results) == ["c0", "c1", "c2"]
    assert all(r.duration == 0.5 for r in results.values())  # side by side, not 1.5 s
    assert len(client_events(run, "response.create")) == 2
    assert run.session.responses[1].transcript == "3 orders"
    assert trio.current_time() - start >= 12.0


async def test_a_tool_done_while_its_response_still_speaks_waits_for_response_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @tool
    async def instant(order_id: str) -> str:
        return "ready"

    script = [calls(ToolCall("instant", {"order_id": "1"}, call_id="c1"),
                    text="Let me check that for you.", ms=2000),
              answer("c1")]
    run = await run_agent(greeter(instant), script)
    check(run)  # an early response.create would have been refused with an `error`
    assert len(client_events(run, "response.create")) == 2
    first_done = next(i for i, (_, way, text) in enumerate(run.session.timeline)
                      if way == "out" and '"response.done"' in text)
    answer_asked = [i for i, (_, way, text) in enumerate(run.session.timeline)
                    if way == "in" and '"response.create"' in text][-1]
    assert answer_asked > first_done


async def test_barge_in_mid_tool_delivers_the_output_without_a_double_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @tool
    async def slow(order_id: str) -> str:
        await trio.sleep(4.0)
        return "found"

    script = [calls(ToolCall("slow", {"order_id": "1"}, call_id="c1")),
              lambda turn: says("Answering your question."),  # VAD's reply to the caller
              answer("c1")]
    run = await run_agent(greeter(slow), script, hangup_at=15.0,
                          utterances=[Utterance(at=1.5, duration=0.8)])
    check(run)
    assert run.session.function_outputs["c1"] == "found"
    # greeting, then (after the caller's turn was answered by VAD) one for the output
    assert len(client_events(run, "response.create")) == 2
    assert [r.transcript for r in run.session.responses][-1] == "Result: found"


async def test_timeouts_exceptions_and_bad_arguments_become_error_outputs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @tool(timeout=1.0)
    async def hangs(order_id: str) -> str:
        await trio.sleep(60)
        return "never"

    @tool
    async def broken(order_id: str) -> str:
        raise ConnectionError("inventory service unreachable")

    script = [calls(ToolCall("hangs", {"order_id": "1"}, call_id="t"),
                    ToolCall("broken", {"order_id": "1"}, call_id="e"),
                    ToolCall("lookup_order", '{"order_id": 12', call_id="j"),
                    ToolCall("lookup_order", {"wrong": 1}, call_id="v")),
              lambda turn: says("Sorry, something went wrong.")]
    run = await run_agent(greeter(hangs, broken, lookup_order), script)
    check(run)
    outcomes = {k: r.outcome for k, r in tool_results(run).items()}
    assert outcomes == {"t": "timeout", "e": "error", "j": "invalid_arguments",
                        "v": "invalid_arguments"}
    outputs = {k: json.loads(v)["error"] for k, v in run.session.function_outputs.items()}
    assert outputs["t"] == "hangs timed out after 1 s"
    assert outputs["e"] == "ConnectionError: inventory service unreachable"
    assert "not JSON" in outputs["j"] and "order_id" in outputs["v"]
    assert run.result.reason is EndReason.CALLER_HANGUP  # the call went on
    assert run.result.stats.tool_failures == 4


async def test_a_sync_tool_runs_in_a_thread_and_an_asyncio_tool_through_trio_asyncio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    where: dict[str, Any] = {}

    @tool
    def blocking(sku: str) -> int:
        """Stock of a SKU, from a blocking client."""
        where["thread"] = threading.current_thread() is not threading.main_thread()
        return 7

    @tool(asyncio=True)
    async def aio(sku: str) -> str:
        """From an asyncio-only SDK."""
        await asyncio.sleep(0)
        where["loop"] = asyncio.get_running_loop() is not None
        return "ok"

    script = [calls(ToolCall("blocking", {"sku": "A"}, call_id="s"),
                    ToolCall("aio", {"sku": "A"}, call_id="a")),
              lambda turn: says("Both answered.")]
    run = await run_agent(greeter(blocking, aio), script)
    check(run)
    assert run.session.function_outputs == {"s": "7", "a": "ok"}
    assert where == {"thread": True, "loop": True}


async def test_a_slow_tool_gets_a_filler_line_that_never_delays_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @tool(filler_after=1.0, filler="One moment while I check.")
    async def slow(order_id: str) -> str:
        await trio.sleep(3.0)
        return "found"

    script = [calls(ToolCall("slow", {"order_id": "1"}, call_id="c1")),
              lambda turn: says(f"filler:{turn.out_of_band}:{turn.instructions}", 500),
              answer("c1")]
    run = await run_agent(greeter(slow), script)
    check(run)
    creates = client_events(run, "response.create")
    assert [c["response"]["metadata"]["callbridge"] for c in creates] == [
        "greeting", "filler", "reply"]
    filler = run.session.responses[1]
    assert filler.out_of_band and "One moment while I check." in filler.transcript
    assert run.session.responses[2].transcript == "Result: found"
    # the answer was asked for as soon as the output was in (the filler had finished)
    asked = [t for t, way, text in run.session.timeline
             if way == "in" and '"response.create"' in text][-1]
    assert asked == tool_results(run)["c1"].at


async def test_a_guardrail_cuts_the_agent_off_mid_sentence_and_says_its_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def no_prices(text: str, call: CallContext) -> str | None:
        return "I can't discuss prices." if "$" in text else None

    long_line = "Sure. Our plans are simple and flexible, and the premium one costs $99 a month."
    script = [says(long_line, 4000), lambda turn: says(turn.instructions or "", 800)]
    run = await run_agent(Agent(greeting="Hi.", guardrails=[no_prices], idle_timeout=None),
                          script)
    check(run)
    (trip,) = [e for e in run.events if isinstance(e, ev.GuardrailTripped)]
    assert "$" in trip.text and trip.replacement == "I can't discuss prices."
    assert run.session.responses[0].status == "cancelled"
    [(item_id, audio_end_ms)] = run.session.truncations
    [cleared] = run.caller.clears
    heard = run.caller.heard_audio(cleared)
    produced = bytes(run.session.produced[item_id])
    assert 0 < len(heard) < len(produced) and heard == produced[: len(heard)]
    # the item now ends where the caller stopped hearing it (within a frame)
    assert audio_end_ms * 8 <= len(heard) and len(heard) - audio_end_ms * 8 < 160
    assert "I can't discuss prices." in run.session.responses[1].transcript


async def test_idle_prompts_then_a_polite_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = [says("Hello, how can I help?"),
              lambda turn: says("Are you still there?"),
              lambda turn: says("Hello?"),
              lambda turn: says("Goodbye.")]
    agent = Agent(greeting="Greet.", idle_timeout=5.0, idle_prompts=2)
    run = await run_agent(agent, script, hangup_at=60.0)
    check(run)
    assert run.result.reason is EndReason.IDLE
    prompts = [(e.count, e.final) for e in run.events if isinstance(e, ev.IdlePrompt)]
    assert prompts == [(1, False), (2, False), (3, True)]
    goodbye = run.session.produced[run.session.responses[3].outputs[0].item_id]
    assert run.caller.heard_audio().endswith(bytes(goodbye))  # heard in full, then the end


async def test_a_handoff_carries_the_conversation_to_another_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    billing_tool_seen: list[str] = []

    @tool
    async def refund(order_id: str) -> str:
        billing_tool_seen.append(order_id)
        return "refunded"

    billing = Agent(name="billing", instructions="You are the billing desk.", tools=[refund],
                    idle_timeout=None)

    @tool
    async def to_billing() -> Handoff:
        """Hand the caller to billing."""
        return Handoff(agent=billing, message="You are now the billing desk.")

    script = [calls(ToolCall("to_billing", {}, call_id="h")),
              calls(ToolCall("refund", {"order_id": "9"}, call_id="r")),
              answer("r")]
    run = await run_agent(greeter(to_billing), script)
    check(run)
    assert run.session.session["instructions"] == "You are the billing desk."
    assert [t["name"] for t in run.session.session["tools"]] == ["refund"]
    assert billing_tool_seen == ["9"]
    assert run.session.function_outputs["h"] == "You are now the billing desk."
    assert [e.to_agent for e in run.events if isinstance(e, ev.Handoff)] == ["billing"]
