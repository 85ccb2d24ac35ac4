"""Hanging up after the goodbye, and transferring after the agent's line, on MockClock.

The REST side here is `Operator`, a stand-in for Twilio's REST API that does what
Twilio does to the stream: a hang-up or a `<Dial>` redirect makes the synthetic
caller send `stop` and close. (The local Twilio platform of `callbridge.testing`
does the same over HTTP; these tests hold the call's side of it.) What must hold:
the request arrives only once the agent's last words were played to the caller
(their last mark came back), once, and the call ends with the right reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import callbridge
from callbridge import Agent, EndReason, end_call, memory_socket_pair, run_call, transfer_call
from callbridge import events as ev
from callbridge.local import LocalRealtimeServer, Reply, ToolCall, scripted_brain
from callbridge.local._audio import tone
from callbridge.testing import LocalTwilio, SimulatedCall, TwilioCaller, Utterance
from callbridge.twilio_rest import TwilioCredentials, TwilioRest


class Operator:
    """Twilio's REST API as the call sees it: records each request, with the time,
    and ends the caller's stream as Twilio would."""

    def __init__(self, caller: TwilioCaller, *, fail: Exception | None = None) -> None:
        self.caller, self.fail = caller, fail
        self.requests: list[tuple[float, str, str | None]] = []

    async def hang_up(self, call_sid: str) -> bool:
        return await self._act("hang_up", call_sid, None)

    async def update_call(self, call_sid: str, *, twiml: str | None = None) -> Mapping[str, Any]:
        await self._act("update", call_sid, twiml)
        return {"sid": call_sid, "status": "in-progress"}

    async def _act(self, what: str, call_sid: str, twiml: str | None) -> bool:
        assert call_sid == self.caller.call_sid
        self.requests.append((trio.current_time(), what, twiml))
        if self.fail is not None:
            raise self.fail
        self.caller.hangup_at = 0.0  # Twilio stops the stream: `stop`, then close
        return True


async def simulate(agent: Agent, script: list[Any], *, operator: bool = True,
                   fail: Exception | None = None, hangup_at: float = 30.0,
                   utterances: list[Utterance] | None = None,
                   act: Any = None) -> tuple[SimulatedCall, Operator | None]:
    model = LocalRealtimeServer(scripted_brain(script))
    caller = TwilioCaller(utterances=utterances or [], hangup_at=hangup_at)
    rest = Operator(caller, fail=fail) if operator else None
    events: list[callbridge.CallEvent] = []
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        call = await nursery.start(lambda task_status: run_call(
            bridge_end, agent=agent, backend=model, on_event=events.append, twilio=rest,
            service_url="https://bridge.example.com", task_status=task_status))
        if act is not None:
            await act(call)
        result = await call.wait_ended()
    return SimulatedCall(result=result, caller=caller, model=model, events=events), rest


def last_heard(run: SimulatedCall) -> float:
    """When the caller's phone finished playing the last audio it played."""
    return max(h.end if h.cut_at is None else h.cut_at for h in run.caller.heard)


GOODBYE = Reply(audio=tone(2000), transcript="Thanks for calling, goodbye!",
                tool_calls=[ToolCall("end_call", {})])


async def test_end_call_hangs_up_only_after_the_goodbye_was_heard_in_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run, rest = await simulate(Agent(greeting="Say goodbye.", tools=[end_call]), [GOODBYE])
    assert rest is not None
    run.check_protocols()
    [(asked_at, what, _)] = rest.requests
    assert what == "hang_up"
    goodbye = run.session.responses[0].outputs[0].item_id
    assert run.caller.heard_audio() == bytes(run.session.produced[goodbye])  # all of it
    assert asked_at >= last_heard(run)  # not one frame before it had played
    assert asked_at - last_heard(run) < 0.1  # and promptly after the last mark came back
    assert run.result.reason is EndReason.HUNG_UP
    # the tool's output went in, and no reply was asked for after it
    creates = [json.loads(t) for t in run.session.received
               if json.loads(t)["type"] == "response.create"]
    assert len(creates) == 1
    [action] = [e for e in run.events if isinstance(e, ev.TwilioAction)]
    assert action.action == "hang_up" and action.ok


async def test_without_rest_credentials_the_stream_closes_after_the_goodbye(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run, _ = await simulate(Agent(greeting="Bye.", tools=[end_call]), [GOODBYE], operator=False)
    run.check_protocols()
    assert run.result.reason is EndReason.HUNG_UP
    assert run.caller.closed_by_server  # nothing after </Connect>: Twilio ends the call
    goodbye = run.session.responses[0].outputs[0].item_id
    assert run.caller.heard_audio() == bytes(run.session.produced[goodbye])


async def test_a_second_hang_up_is_a_no_op_and_a_failing_rest_api_still_ends_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def twice(call: callbridge.Call) -> None:
        await trio.sleep(3.0)
        call.hang_up()
        call.hang_up()

    run, rest = await simulate(Agent(greeting="Hello."), [Reply(audio=tone(1000))],
                               fail=RuntimeError("HTTP 503 from Twilio"), act=twice)
    assert rest is not None and len(rest.requests) == 1
    assert run.result.reason is EndReason.HUNG_UP
    assert run.caller.closed_by_server  # the request failed: the stream closed instead
    [action] = [e for e in run.events if isinstance(e, ev.TwilioAction)]
    assert not action.ok


async def test_transfer_after_the_agents_line_with_dial_twiml(
    autojump_clock: trio.testing.MockClock,
) -> None:
    desk = transfer_call({"sales": "+14155550100", "support": "sip:desk@pbx.example.com"},
                         caller_id="+14155550199", timeout=20,
                         failure_line="Sorry, nobody is free.")
    line = Reply(audio=tone(1500), transcript="Let me put you through to sales.",
                 tool_calls=[ToolCall("transfer_call", {"to": "sales"})])
    run, rest = await simulate(Agent(greeting="Transfer.", tools=[desk]), [line])
    assert rest is not None
    run.check_protocols()
    [(asked_at, what, twiml)] = rest.requests
    assert what == "update" and asked_at >= last_heard(run)
    assert twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="https://bridge.example'
        '.com/dial-action?line=Sorry%2C+nobody+is+free." callerId="+14155550199" timeout="20">'
        "<Number>+14155550100</Number></Dial></Response>")
    assert run.result.reason is EndReason.TRANSFERRED


async def test_a_transfer_while_the_caller_talks_waits_for_the_agent_not_the_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def transfer_soon(call: callbridge.Call) -> None:
        await trio.sleep(2.0)  # the caller has been talking since 1.0 s, until 6.0 s
        call.transfer("+14155550100")

    run, rest = await simulate(Agent(greeting="Hi."), [Reply(audio=tone(500))],
                               utterances=[Utterance(at=1.0, duration=5.0)],
                               act=transfer_soon)
    assert rest is not None
    [(asked_at, what, _)] = rest.requests
    assert what == "update" and asked_at < run.caller.t0 + 2.5  # at once: nothing playing


async def test_without_rest_a_transfer_cannot_happen_and_the_model_is_told(
    autojump_clock: trio.testing.MockClock,
) -> None:
    line = Reply(audio=tone(500), transcript="Transferring.",
                 tool_calls=[ToolCall("transfer_call", {})])
    run, _ = await simulate(Agent(greeting="T.", tools=[transfer_call("+14155550100")]),
                            [line, Reply(audio=tone(500), transcript="Sorry, I can't.")],
                            operator=False, hangup_at=6.0)
    run.check_protocols()
    assert "TWILIO_ACCOUNT_SID" in json.loads(next(iter(run.session.function_outputs.values()))
                                              )["error"]
    assert run.result.reason is EndReason.CALLER_HANGUP  # the call went on


# --- through the local Twilio platform, over its REST API -----------------------------


class Timed(httpx.AsyncBaseTransport):
    """The platform's REST transport, noting when each request was made."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.times = inner, []  # type: list[float]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.times.append(trio.current_time())
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("action", ["hang_up", "transfer"])
async def test_through_the_local_twilio_after_the_last_words(
    autojump_clock: trio.testing.MockClock, action: str,
) -> None:
    tools = [end_call] if action == "hang_up" else [transfer_call("sip:desk@pbx.example.com")]
    last = Reply(audio=tone(2000), transcript="One moment." if action == "transfer" else "Bye!",
                 tool_calls=[ToolCall(tools[0].name, {})])
    model = LocalRealtimeServer(scripted_brain([last]))
    caller = TwilioCaller(hangup_at=30.0)
    events: list[callbridge.CallEvent] = []
    async with LocalTwilio(dial_outcome="completed", dial_duration_s=1.0) as twilio:
        timed = Timed(twilio.transport)
        credentials = TwilioCredentials(account_sid=twilio.account_sid,
                                        username=twilio.account_sid,
                                        password=twilio.auth_token)
        async with TwilioRest(credentials, transport=timed) as rest, trio.open_nursery() as n:
            twilio.attach(caller)
            twilio_end, bridge_end = memory_socket_pair()
            n.start_soon(caller.run, twilio_end)
            result = await run_call(bridge_end, agent=Agent(greeting="Go.", tools=tools),
                                    backend=model, on_event=events.append, twilio=rest)
    run = SimulatedCall(result=result, caller=caller, model=model, events=events)
    run.check_protocols()
    [asked_at] = timed.times
    goodbye = run.session.responses[0].outputs[0].item_id
    assert run.caller.heard_audio() == bytes(run.session.produced[goodbye])
    assert last_heard(run) <= asked_at < last_heard(run) + 0.1
    if action == "hang_up":
        assert twilio.hangups == [caller.call_sid] and result.reason is EndReason.HUNG_UP
    else:
        [transfer] = twilio.transfers
        assert transfer.targets == ("sip:desk@pbx.example.com",) and transfer.kind == "sip"
        assert result.reason is EndReason.TRANSFERRED
    assert caller.finished.is_set()  # Twilio's `stop`, then its close


async def test_hang_up_with_a_line_says_it_in_full_then_hangs_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def shut_down(call: callbridge.Call) -> None:
        await trio.sleep(0.5)  # the greeting is still playing
        call.hang_up(say="We are restarting: please call back. Goodbye.")

    script = [Reply(audio=tone(2000), transcript="Hello and welcome!"),
              lambda turn: Reply(audio=tone(1500), transcript=turn.instructions or "")]
    run, rest = await simulate(Agent(greeting="Hi."), script, act=shut_down)
    assert rest is not None
    run.check_protocols()
    greeting, line = run.session.responses
    assert line.transcript == "Say exactly this: We are restarting: please call back. Goodbye."
    assert line.outputs[0].item_id in run.session.produced  # said after the greeting ended
    heard = run.caller.heard_audio()
    assert heard == b"".join(bytes(run.session.produced[r.outputs[0].item_id])
                             for r in (greeting, line))  # both in full, in order
    [(asked_at, what, _)] = rest.requests
    assert what == "hang_up" and asked_at >= last_heard(run)


async def test_at_the_time_limit_the_agent_says_so_in_full_then_hangs_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = [Reply(audio=tone(1000), transcript="Hello!"),
              lambda turn: Reply(audio=tone(1500), transcript=turn.instructions or "")]
    model = LocalRealtimeServer(scripted_brain(script))
    caller = TwilioCaller(hangup_at=60.0)
    rest = Operator(caller)
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(bridge_end, agent=Agent(greeting="Hi.", idle_timeout=None,
                                                        time_limit_line="Time is up. Bye."),
                                backend=model, twilio=rest, limits=callbridge.CallLimits(
                                    max_call_s=5.0))
    assert result.reason is EndReason.TIME_LIMIT
    said = [r.transcript for r in model.sessions[0].responses]
    assert said == ["Hello!", "Say exactly this: Time is up. Bye."]
    [(asked_at, what, _)] = rest.requests
    assert what == "hang_up" and 5.0 + 1.5 <= asked_at - caller.t0 < 5.0 + 1.5 + 0.2


class Muted:
    """Twilio's side of the socket goes quiet at `at` (the TCP connection stays up)."""

    def __init__(self, inner: Any, at: float) -> None:
        self.inner, self.at = inner, at

    async def send(self, text: str) -> None:
        await self.inner.send(text)

    async def receive(self) -> str | None:
        if trio.current_time() >= self.at:
            await trio.sleep_forever()
        return await self.inner.receive()

    async def aclose(self, code: int = 1000) -> None:
        await self.inner.aclose(code)


async def test_a_stream_gone_quiet_is_dead_after_media_idle_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    caller = TwilioCaller(hangup_at=60.0)
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        start = trio.current_time()
        result = await run_call(Muted(bridge_end, start + 2.0),
                                backend=LocalRealtimeServer(), agent=Agent(idle_timeout=None),
                                limits=callbridge.CallLimits(media_idle_s=3.0))
        caller.hang_up()
    assert result.reason is EndReason.MEDIA_TIMEOUT
    assert 2.0 + 3.0 <= trio.current_time() - start < 2.0 + 3.0 + 5.5  # + close_wait
