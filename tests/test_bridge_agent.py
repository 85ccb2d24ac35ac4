"""The agent in the sans-I/O bridge: tools, handoffs, guardrails, idle prompts, MCP.

Each test feeds a `Bridge` model events and tool results, with the time, and checks
what goes to the model and to Twilio. The protocol rules under test: every function
call gets a `function_call_output`; exactly one `response.create` follows once every
call of a response has its output and the response is done; never one while a
response is active; none when the caller's new turn is answered by server VAD.
Every event that goes to the model is validated with the openai SDK's models.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from _schema import validate_client_event
from test_bridge import SPEECH, created, delta, done, drain_twilio, kinds, make, mark, start

from callbridge import Agent, EndReason, Handoff, tool
from callbridge import events as ev
from callbridge import realtime as rt
from callbridge._bridge import Bridge
from callbridge.codec import encode
from callbridge.tools import ToolResult


@tool
async def lookup_order(order_id: str) -> dict[str, str]:
    """Look up an order. order_id: the 6-digit number."""
    return {"status": "shipped"}


@tool(filler_after=2.0, filler="One moment while I check.")
async def slow_lookup(order_id: str) -> str:
    """A slow backend."""
    return "late"


def agent(**options: Any) -> Agent:
    return Agent(**{"tools": [lookup_order, slow_lookup], "idle_timeout": None, **options})


def connected(a: Agent | None = None, events: list[ev.CallEvent] | None = None) -> Bridge:
    bridge = make(agent=a or agent(), events=events)
    bridge.receive_twilio(start(), 100.0)
    bridge.model_connected(100.0)
    sent(bridge)
    return bridge


def sent(bridge: Bridge) -> list[rt.ClientEvent]:
    """Everything queued for the model, each validated against the openai types."""
    out = []
    while (event := bridge.next_to_model()) is not None:
        bridge.sent_to_model()
        validate_client_event(encode(event))
        out.append(event)
    return out


def call(call_id: str, name: str = "lookup_order", response: str = "r1",
         arguments: str = '{"order_id": "123456"}') -> rt.FunctionCallArgumentsDone:
    return rt.FunctionCallArgumentsDone(response_id=response, item_id=f"fc_{call_id}",
                                        call_id=call_id, name=name, arguments=arguments)


def output(call_id: str, text: str) -> rt.ConversationItemCreate:
    return rt.ConversationItemCreate(item={"type": "function_call_output", "call_id": call_id,
                                           "output": text})


def ours(purpose: str, **body: Any) -> rt.ResponseCreate:
    return rt.ResponseCreate(response={**body, "metadata": {"callbridge": purpose}})


REPLY = ours("reply")


def ok(value: Any) -> ToolResult:
    return ToolResult.of(value)


# --- function calls ------------------------------------------------------------------


def test_one_call_its_output_then_one_response_after_response_done() -> None:
    events: list[ev.CallEvent] = []
    bridge = connected(events=events)
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(call("c1"), 100.1)
    pending = bridge.next_tool_call()
    assert pending is not None and pending.call_id == "c1" and pending.tool is lookup_order
    assert bridge.next_tool_call() is None
    bridge.receive_model(done("r1"), 100.2)
    assert sent(bridge) == []  # nothing until the output is there
    bridge.tool_result("c1", ok({"status": "shipped"}), 100.7)
    assert sent(bridge) == [output("c1", '{"status":"shipped"}'), REPLY]
    tool_events = [e for e in events if isinstance(e, ev.ToolCall | ev.ToolResult)]
    assert [(type(e), e.at) for e in tool_events] == [(ev.ToolCall, 100.1), (ev.ToolResult, 100.7)]
    result = tool_events[1]
    assert isinstance(result, ev.ToolResult)
    assert result.outcome == "ok" and result.duration == pytest.approx(0.6)
    assert result.output == '{"status":"shipped"}' and result.name == "lookup_order"
    assert bridge.stats.tool_calls == 1 and bridge.stats.tool_failures == 0


def test_three_parallel_calls_get_three_outputs_and_one_response() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    for call_id in ("a", "b", "c"):
        bridge.receive_model(call(call_id), 100.1)
    assert [p.call_id for p in iter(bridge.next_tool_call, None)] == ["a", "b", "c"]
    bridge.receive_model(done("r1"), 100.2)
    bridge.tool_result("b", ok(2), 100.3)
    bridge.tool_result("a", ok(1), 100.4)
    assert sent(bridge) == [output("b", "2"), output("a", "1")]
    bridge.tool_result("c", ok(3), 100.5)
    assert sent(bridge) == [output("c", "3"), REPLY]


def test_a_tool_that_finishes_while_its_response_still_speaks_waits_for_response_done() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(delta(b"\x01" * 160), 100.0)  # "let me check..."
    bridge.receive_model(call("c1"), 100.1)
    bridge.tool_result("c1", ok("found"), 100.2)
    assert sent(bridge) == [output("c1", "found")]  # the output at once; no response yet
    bridge.receive_model(done("r1"), 100.9)
    assert sent(bridge) == [REPLY]


def test_the_same_call_reported_twice_runs_once() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(call("c1"), 100.1)
    bridge.receive_model(call("c1"), 100.1)
    assert len(list(iter(bridge.next_tool_call, None))) == 1


def test_barge_in_mid_tool_still_delivers_the_output_and_vad_answers_the_turn() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(call("c1"), 100.1)
    bridge.receive_model(done("r1"), 100.2)
    bridge.receive_model(SPEECH, 101.0)  # the caller speaks while the tool runs
    bridge.tool_result("c1", ok("found"), 101.5)
    # the output goes in; server VAD's reply to the caller's turn will include it
    assert sent(bridge) == [output("c1", "found")]
    bridge.receive_model(created("r2"), 102.0)  # VAD's response
    bridge.receive_model(done("r2"), 103.0)
    assert sent(bridge) == []  # never a double response


def test_an_output_after_vads_reply_started_gets_its_own_response_afterwards() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(call("c1"), 100.1)
    bridge.receive_model(done("r1"), 100.2)
    bridge.receive_model(SPEECH, 101.0)
    bridge.receive_model(created("r2"), 102.0)  # VAD answers the turn, without the output
    bridge.tool_result("c1", ok("found"), 102.5)
    assert sent(bridge) == [output("c1", "found")]  # not while r2 is active
    bridge.receive_model(done("r2"), 103.0)
    assert sent(bridge) == [REPLY]  # now the model can speak the result


def test_failures_become_error_outputs_and_the_call_goes_on() -> None:
    events: list[ev.CallEvent] = []
    bridge = connected(events=events)
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(call("c1"), 100.1)
    bridge.receive_model(call("c2", name="no_such_tool"), 100.1)
    assert [p.call_id for p in iter(bridge.next_tool_call, None)] == ["c1"]
    bridge.receive_model(done("r1"), 100.2)
    bridge.tool_result("c1", ToolResult.error(RuntimeError("backend down")), 100.3)
    out = sent(bridge)
    assert out == [output("c2", json.dumps({"error": "there is no tool named 'no_such_tool'"})),
                   output("c1", json.dumps({"error": "RuntimeError: backend down"})), REPLY]
    outcomes = [e.outcome for e in events if isinstance(e, ev.ToolResult)]
    assert outcomes == ["unknown_tool", "error"]
    assert bridge.stats.tool_failures == 2 and bridge.end_reason is None


def test_a_call_running_across_a_reconnect_is_restored_and_answered_there() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(delta(b"\x01" * 160, item="i1"), 100.0)
    bridge.receive_model(rt.OutputAudioTranscriptDone(response_id="r1", item_id="i1",
                                                      transcript="Let me check."), 100.05)
    bridge.receive_model(call("c1"), 100.1)
    bridge.model_connected(100.5)  # a new session: it knows nothing of c1 but what we tell
    update, said, restored = sent(bridge)
    assert isinstance(update, rt.SessionUpdate)
    assert said == rt.ConversationItemCreate(item={
        "type": "message", "role": "assistant",
        "content": [{"type": "output_text", "text": "Let me check."}]})
    assert restored == rt.ConversationItemCreate(item={
        "type": "function_call", "call_id": "c1", "name": "lookup_order",
        "arguments": '{"order_id": "123456"}'})
    bridge.tool_result("c1", ok("late"), 101.0)
    assert sent(bridge) == [output("c1", "late"), REPLY]  # its response is long over


def test_a_refused_response_create_waits_for_the_active_response() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(call("c1"), 100.1)
    bridge.receive_model(done("r1"), 100.2)
    bridge.tool_result("c1", ok("x"), 100.3)
    assert sent(bridge)[-1] == REPLY
    # a VAD response raced ours: the server refuses ours, and it waits for that one
    bridge.receive_model(rt.ResponseCreated(response={"id": "v", "metadata": None}), 100.4)
    bridge.receive_model(rt.ErrorEvent(error=rt.ErrorInfo(
        type="invalid_request_error", code="conversation_already_has_active_response",
        message="Conversation already has an active response in progress: v.")), 100.4)
    assert sent(bridge) == []
    bridge.receive_model(done("v"), 101.0)
    assert sent(bridge) == [REPLY]


# --- fillers -----------------------------------------------------------------------------


def test_a_slow_tool_gets_a_filler_line_out_of_band_and_the_answer_cancels_it() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(call("c1", name="slow_lookup"), 100.0)
    bridge.receive_model(done("r1"), 100.1)
    assert bridge.next_deadline == 102.0
    bridge.tick(102.0)
    filler = ours("filler", conversation="none", tool_choice="none",
                  instructions="Say this, briefly and nothing else: One moment while I check.")
    assert sent(bridge) == [filler]
    bridge.receive_model(rt.ResponseCreated(response={
        "id": "f", "metadata": {"callbridge": "filler"}}), 102.1)
    bridge.receive_model(delta(b"\x02" * 160, item="fi", response="f"), 102.2)
    bridge.tool_result("c1", ok("late"), 102.3)  # the answer is due: the filler goes
    assert sent(bridge) == [output("c1", "late"), rt.ResponseCancel(response_id="f")]
    bridge.receive_model(done("f"), 102.4)
    assert sent(bridge) == [REPLY]


def test_no_filler_while_a_response_is_active_and_none_after_the_output() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(call("c1", name="slow_lookup"), 100.0)
    bridge.tick(102.0)  # r1 still speaks: no filler, and none later
    assert sent(bridge) == [] and bridge.next_deadline is None
    bridge.receive_model(call("c2", name="slow_lookup"), 101.0)
    bridge.tool_result("c2", ok("fast"), 101.5)
    bridge.receive_model(done("r1"), 101.6)
    bridge.tool_result("c1", ok("x"), 101.7)
    assert bridge.next_deadline is None


def test_the_filler_is_never_truncated_at_a_barge_in() -> None:
    bridge = connected()
    bridge.receive_model(rt.ResponseCreated(response={
        "id": "f", "metadata": {"callbridge": "filler"}}), 100.0)
    bridge.receive_model(delta(b"\x02" * 1600, item="fi", response="f"), 100.0)
    drain_twilio(bridge, 100.0)
    bridge.receive_model(SPEECH, 100.1)
    assert not any(isinstance(e, rt.ConversationItemTruncate) for e in sent(bridge))
    assert kinds(drain_twilio(bridge, 100.1)) == ["clear"]


# --- handoffs ------------------------------------------------------------------------


def test_a_handoff_updates_the_session_before_the_output() -> None:
    events: list[ev.CallEvent] = []
    billing = Agent(name="billing", instructions="You handle billing.", idle_timeout=None)
    bridge = connected(events=events)
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(call("c1"), 100.1)
    bridge.receive_model(done("r1"), 100.2)
    bridge.tool_result("c1", ToolResult.of(Handoff(agent=billing)), 100.3)
    update, out, reply = sent(bridge)
    assert isinstance(update, rt.SessionUpdate)
    assert update.session.instructions == "You handle billing." and update.session.tools is None
    assert out == output("c1", '{"handoff": "billing"}') and reply == REPLY
    assert bridge.agent is billing
    assert [(e.from_agent, e.to_agent) for e in events if isinstance(e, ev.Handoff)] == [
        ("agent", "billing")]


def test_a_handoff_that_would_change_the_voice_after_speaking_is_refused() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(delta(b"\x01" * 160), 100.0)
    bridge.receive_model(call("c1"), 100.1)
    other = Agent(name="other", voice="cedar")
    bridge.tool_result("c1", ToolResult.of(Handoff(agent=other)), 100.2)
    (out,) = sent(bridge)
    assert isinstance(out, rt.ConversationItemCreate)
    error = json.loads(out.item["output"])["error"]
    assert "voice cannot change" in error and "cedar" in error
    assert bridge.agent is not other


# --- guardrails ----------------------------------------------------------------------


def transcript(text: str, item: str = "i1", response: str = "r1") -> rt.OutputAudioTranscriptDelta:
    return rt.OutputAudioTranscriptDelta(response_id=response, item_id=item, delta=text)


def no_secrets(text: str, call: Any) -> str | None:
    return "I can't share that." if "password" in text else None


def test_a_guardrail_cuts_the_agent_off_at_what_the_caller_heard_and_says_its_line() -> None:
    events: list[ev.CallEvent] = []
    bridge = connected(agent(guardrails=[no_secrets]), events)
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(delta(b"\x01" * 800), 100.0)  # 100 ms, sent at once
    drain_twilio(bridge, 100.0)
    bridge.receive_model(transcript("Sure, the "), 100.0)
    assert sent(bridge) == []
    bridge.receive_twilio(mark("0:800:i1"), 100.1)  # all 100 ms played
    bridge.receive_model(delta(b"\x01" * 800), 100.1)
    assert kinds(drain_twilio(bridge, 100.1)) == ["media", "mark"]
    bridge.receive_model(transcript("password is"), 100.1)
    assert kinds(drain_twilio(bridge, 100.1)) == ["clear"]  # the unplayed audio is gone
    assert sent(bridge) == [rt.ConversationItemTruncate(item_id="i1", audio_end_ms=100),
                            rt.ResponseCancel(response_id="r1")]
    (trip,) = [e for e in events if isinstance(e, ev.GuardrailTripped)]
    assert trip.text == "Sure, the password is" and trip.replacement == "I can't share that."
    bridge.receive_model(transcript(" hunter2"), 100.2)  # late words: ignored
    bridge.receive_model(done("r1"), 100.3)
    assert sent(bridge) == [ours("line", instructions="Say exactly this, and nothing else: "
                                 "I can't share that.")]
    assert bridge.stats.guardrail_trips == 1 and bridge.stats.barge_ins == 0


def test_a_guardrail_that_raises_does_not_trip() -> None:
    def broken(text: str, call: Any) -> bool:
        raise ValueError("bug")

    bridge = connected(agent(guardrails=[broken]))
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(transcript("hello"), 100.0)
    assert sent(bridge) == [] and bridge.stats.guardrail_trips == 0


# --- idle caller ---------------------------------------------------------------------


def test_idle_prompts_then_a_goodbye_then_the_end() -> None:
    events: list[ev.CallEvent] = []
    bridge = connected(agent(idle_timeout=8.0, idle_prompts=2), events)
    assert bridge.next_deadline == 108.0
    now = 108.0
    for purpose in ("idle", "idle", "goodbye"):
        bridge.tick(now)
        message, create = sent(bridge)
        assert isinstance(message, rt.ConversationItemCreate)
        assert message.item["role"] == "system" and create == ours(purpose)
        bridge.receive_model(created(f"r{now}"), now)
        bridge.receive_model(delta(b"\x01" * 160, item=f"i{now}", response=f"r{now}"), now)
        bridge.receive_model(done(f"r{now}"), now + 0.5)
        drain_twilio(bridge, now + 0.5)
        # the prompt is still playing; a goodbye ends the call in 30 s at the latest
        assert bridge.next_deadline == (now + 30 if purpose == "goodbye" else None)
        bridge.receive_twilio(mark(f"{bridge.playback.generation}:160:i{now}"), now + 1)
        if purpose == "goodbye":
            break
        assert bridge.next_deadline == now + 9  # silence counts from when it played
        now += 9
    assert bridge.end_reason is EndReason.IDLE
    prompts = [(e.count, e.final) for e in events if isinstance(e, ev.IdlePrompt)]
    assert prompts == [(1, False), (2, False), (3, True)]


def test_the_caller_speaking_resets_the_idle_prompts() -> None:
    bridge = connected(agent(idle_timeout=8.0, idle_prompts=1))
    bridge.tick(108.0)
    sent(bridge)
    bridge.receive_model(created("r1"), 108.0)
    bridge.receive_model(done("r1"), 108.5)
    bridge.receive_model(SPEECH, 109.0)
    assert bridge.next_deadline is None  # the caller is speaking
    bridge.receive_model(rt.SpeechStopped(audio_end_ms=1000, item_id="u1"), 110.0)
    bridge.receive_model(created("r2"), 110.1)
    bridge.receive_model(done("r2"), 110.5)
    assert bridge.next_deadline == 118.5
    bridge.tick(118.5)  # a prompt again, not the goodbye: the caller answered the last
    assert sent(bridge)[-1] == ours("idle")


def test_idle_prompts_can_be_turned_off() -> None:
    bridge = connected(agent(idle_timeout=None))
    assert bridge.next_deadline is None


# --- hosted MCP ----------------------------------------------------------------------


def approval_request(request_id: str = "mcpr_1") -> rt.UnknownServerEvent:
    item = {"type": "mcp_approval_request", "id": request_id, "name": "search",
            "server_label": "docs", "arguments": "{}"}
    raw = {"type": "response.output_item.done", "response_id": "r1", "output_index": 0,
           "item": item}
    return rt.UnknownServerEvent(type=raw["type"], raw=raw)


def test_mcp_tools_pass_through_and_approval_requests_are_denied_by_default() -> None:
    mcp = {"type": "mcp", "server_label": "docs", "server_url": "https://example.test/mcp"}
    a = Agent(tools=[lookup_order, mcp], idle_timeout=None)
    bridge = make(agent=a)
    bridge.receive_twilio(start(), 100.0)
    bridge.model_connected(100.0)
    (update,) = sent(bridge)
    assert isinstance(update, rt.SessionUpdate) and update.session.tools is not None
    assert update.session.tools[1] == mcp
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(approval_request(), 100.1)
    bridge.receive_model(done("r1"), 100.2)
    assert sent(bridge) == [
        rt.ConversationItemCreate(item={"type": "mcp_approval_response", "id": "mcpa_mcpr_1",
                                        "approval_request_id": "mcpr_1", "approve": False}),
        REPLY]


def test_an_approval_callback_answers_mcp_requests() -> None:
    seen: list[Any] = []
    a = agent(mcp_approval=lambda item, call: seen.append((item["name"], call.call_sid)) or True)
    bridge = connected(a)
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(approval_request(), 100.1)
    (answer,) = sent(bridge)
    assert isinstance(answer, rt.ConversationItemCreate) and answer.item["approve"] is True
    assert seen == [("search", "CA1")]


# --- several message items in one response -------------------------------------------


def test_two_items_in_one_response_keep_marks_and_barge_in_right() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(delta(b"\x01" * 800, item="i1"), 100.0)  # 100 ms
    bridge.receive_model(rt.OutputAudioDone(response_id="r1", item_id="i1"), 100.0)
    bridge.receive_model(delta(b"\x02" * 800, item="i2"), 100.0)  # 100 ms more
    out = drain_twilio(bridge, 100.0)
    assert kinds(out) == ["media", "mark", "media", "mark"]  # one media per item: not merged
    assert [m["mark"]["name"] for m in out if m["event"] == "mark"] == ["0:800:i1", "0:800:i2"]
    bridge.receive_twilio(mark("0:800:i1"), 100.1)  # i1 played
    bridge.receive_model(SPEECH, 100.15)  # in the middle of i2
    assert sent(bridge) == [rt.ConversationItemTruncate(item_id="i2", audio_end_ms=50)]


def test_a_barge_in_during_the_first_item_deletes_the_unheard_second() -> None:
    bridge = connected()
    bridge.receive_model(created("r1"), 100.0)
    bridge.receive_model(delta(b"\x01" * 800, item="i1"), 100.0)
    bridge.receive_model(delta(b"\x02" * 800, item="i2"), 100.0)
    drain_twilio(bridge, 100.0)
    bridge.receive_model(SPEECH, 100.05)
    assert sent(bridge) == [rt.ConversationItemTruncate(item_id="i1", audio_end_ms=50),
                            rt.ConversationItemDelete(item_id="i2")]
    assert kinds(drain_twilio(bridge, 100.05)) == ["clear"]
