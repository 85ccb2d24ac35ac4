"""The model connection's faults, on virtual time: a drop mid-call, a session rotation,
a model that never answers, fatal errors.

The caller stays on the line through a drop or a rotation: their audio keeps flowing
to whichever session is open (buffered while none is), and the new session gets the
agent's `session.update` and the conversation so far, so its next answer can refer to
what was said before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import trio
import trio.testing
from _schema import validate_client_event

from callbridge import Agent, CallLimits, EndReason, SocketClosed, memory_socket_pair, run_call
from callbridge import events as ev
from callbridge import realtime as rt
from callbridge.backend import RealtimeConnection
from callbridge.local import LocalRealtimeServer, Reply, Turn, scripted_brain
from callbridge.local._audio import tone
from callbridge.testing import SimulatedCall, TwilioCaller, Utterance


class Dropping:
    """A connection that dies `at` seconds after it opened: reads end, sends fail."""

    def __init__(self, inner: RealtimeConnection, at: float) -> None:
        self.inner, self.at = inner, trio.current_time() + at

    async def send(self, event: rt.ClientEvent) -> None:
        if trio.current_time() >= self.at:
            raise SocketClosed("the model's socket was reset")
        await self.inner.send(event)

    async def receive(self) -> rt.ServerEvent | None:
        with trio.move_on_at(self.at):
            return await self.inner.receive()
        return None


class DropsOnce:
    """The local model, whose first connection drops at `at` seconds."""

    def __init__(self, inner: LocalRealtimeServer, at: float) -> None:
        self.inner, self.at = inner, at
        self.sessions = inner.sessions
        self.connections = 0

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        self.connections += 1
        async with self.inner.connect(model) as connection:
            yield Dropping(connection, self.at) if self.connections == 1 else connection


def remembers(turn: Turn) -> Reply:
    """The second session's answer: what it was told of the conversation so far."""
    said = [text for role, text in turn.messages if role == "assistant"]
    return Reply(audio=tone(600), transcript=f"As I said: {said[-1] if said else '?'}")


async def simulate(model: Any, caller: TwilioCaller, **options: Any) -> SimulatedCall:
    events: list[ev.CallEvent] = []
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(bridge_end, backend=model, on_event=events.append, **options)
    return SimulatedCall(result=result, caller=caller, model=model, events=events)


def client_events(session: Any) -> list[dict[str, Any]]:
    received = [json.loads(text) for text in session.received]
    for event in received:
        validate_client_event(event)
    return received


async def test_a_drop_mid_call_reconnects_restores_and_keeps_the_callers_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    local = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(1000), transcript="Your order number is 4417."), remembers]))
    model = DropsOnce(local, at=3.0)
    caller = TwilioCaller(utterances=[Utterance(at=5.0, duration=0.6)], hangup_at=9.0)
    run = await simulate(model, caller, agent=Agent(greeting="Greet.", idle_timeout=None))
    assert run.result.reason is EndReason.CALLER_HANGUP  # the caller stayed on the line
    first, second = local.sessions
    # the new session: the agent's session.update, then the conversation so far
    update, restored, *rest = client_events(second)
    assert update["type"] == "session.update"
    assert restored["item"] == {"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": "Your order number is 4417."}]}
    assert not [e for e in rest if e["type"] == "response.create"]  # no second greeting
    # the caller's audio went on: every frame reached one session or the other, in order
    assert bytes(first.input_audio) + bytes(second.input_audio) == bytes(caller.sent_audio)
    # and the next answer came from a session that knew what was said before
    assert second.responses[-1].transcript == "As I said: Your order number is 4417."
    assert [e.connection for e in run.events if isinstance(e, ev.ModelConnected)] == [1, 2]
    errors = [json.loads(t) for s in local.sessions for t in s.sent
              if json.loads(t)["type"] == "error"]
    assert errors == []


async def test_a_session_is_rotated_at_a_turn_boundary_and_carries_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    local = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(3000), transcript="Welcome to Pizza Co."), remembers]))
    caller = TwilioCaller(utterances=[Utterance(at=8.0, duration=0.6)], hangup_at=12.0)
    run = await simulate(local, caller, agent=Agent(greeting="Greet.", idle_timeout=None),
                         limits=CallLimits(session_max_s=2.0))
    assert run.result.reason is EndReason.CALLER_HANGUP
    # due at 2.0 s while the 3 s greeting still played: the switch waited for its end
    switches = [e.at for e in run.events if isinstance(e, ev.ModelConnected)][1:]
    greeting_played = max(h.end for h in run.caller.heard if h.start < caller.t0 + 8.0)
    assert greeting_played - caller.t0 > 2.9
    assert switches and switches[0] >= greeting_played
    assert not run.caller.clears  # nothing the caller was hearing was cut
    assert b"".join(bytes(s.input_audio) for s in local.sessions) == bytes(caller.sent_audio)
    for session in local.sessions[1:]:  # each new session was told the conversation
        _, restored, *_ = client_events(session)
        assert restored["item"]["content"][0]["text"] == "Welcome to Pizza Co."
    # the caller's question, after the rotations, got an answer that knew the greeting
    said = [r.transcript for session in local.sessions for r in session.responses]
    assert said == ["Welcome to Pizza Co.", "As I said: Welcome to Pizza Co."]


async def test_a_model_that_never_answers_gets_the_apology_through_twilio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Silent:
        sessions: ClassVar[list[Any]] = []

        @asynccontextmanager
        async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
            await trio.sleep_forever()
            yield None  # type: ignore[misc]  # unreachable: the connect never completes

    class Operator:
        twiml: ClassVar[list[str]] = []

        async def hang_up(self, call_sid: str) -> bool:
            raise AssertionError("not a hang-up")

        async def update_call(self, call_sid: str, *, twiml: str | None = None) -> Any:
            assert twiml is not None
            self.twiml.append(twiml)
            caller.hangup_at = 0.0
            return {}

    caller = TwilioCaller(hangup_at=30.0)
    agent = Agent(apology="Sorry, try again later.")
    run = await simulate(Silent(), caller, agent=agent, twilio=Operator())
    assert run.result.reason is EndReason.MODEL_UNAVAILABLE
    assert Operator.twiml == ['<?xml version="1.0" encoding="UTF-8"?><Response>'
                              "<Say>Sorry, try again later.</Say><Hangup /></Response>"]
    [end] = [e for e in run.events if isinstance(e, ev.End)]
    assert 5.0 <= end.at - caller.t0 < 5.2  # the budget, not the backend's own timeout


async def test_a_fatal_model_error_ends_the_call(autojump_clock: trio.testing.MockClock) -> None:
    class Refusing:
        sessions: ClassVar[list[Any]] = []

        @asynccontextmanager
        async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
            client, server = memory_socket_pair()
            from callbridge.backend import EventConnection
            from callbridge.codec import encode

            await server.send(encode(rt.ErrorEvent(error=rt.ErrorInfo(
                type="insufficient_quota", code="insufficient_quota",
                message="You exceeded your current quota."))))
            yield EventConnection(client)

    caller = TwilioCaller(hangup_at=30.0)
    run = await simulate(Refusing(), caller, agent=Agent())
    assert run.result.reason is EndReason.MODEL_ERROR
    assert "insufficient_quota" in run.result.detail


class Stalling:
    """A connection that goes silent `at` seconds after it opened, while staying open:
    no events, no pongs."""

    def __init__(self, inner: RealtimeConnection, at: float) -> None:
        self.inner, self.at = inner, trio.current_time() + at
        self.last_heard = trio.current_time()
        self.pings = 0

    async def send(self, event: rt.ClientEvent) -> None:
        await self.inner.send(event)

    async def receive(self) -> rt.ServerEvent | None:
        with trio.move_on_at(self.at):
            event = await self.inner.receive()
            self.last_heard = trio.current_time()
            return event
        await trio.sleep_forever()
        return None

    async def ping(self) -> None:
        self.pings += 1
        if trio.current_time() < self.at:
            self.last_heard = trio.current_time()  # the pong


class StallsOnce(DropsOnce):
    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        self.connections += 1
        async with self.inner.connect(model) as connection:
            yield Stalling(connection, self.at) if self.connections == 1 else connection


async def test_a_stalled_model_is_noticed_by_its_silence_and_reopened(
    autojump_clock: trio.testing.MockClock,
) -> None:
    local = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(800), transcript="Hello, how can I help?"), remembers]))
    model = StallsOnce(local, at=3.0)
    caller = TwilioCaller(utterances=[Utterance(at=40.0, duration=0.6)], hangup_at=45.0)
    run = await simulate(model, caller, agent=Agent(greeting="Greet.", idle_timeout=None),
                         limits=CallLimits(model_ping_s=5.0))
    assert run.result.reason is EndReason.CALLER_HANGUP
    connected = [e.at - caller.t0 for e in run.events if isinstance(e, ev.ModelConnected)]
    assert len(connected) == 2 and 3.0 + 10.0 <= connected[1] <= 3.0 + 15.1
    # nothing the caller said was lost: the stalled session, then the new one
    assert b"".join(bytes(s.input_audio) for s in local.sessions) == bytes(caller.sent_audio)
    said = [r.transcript for s in local.sessions for r in s.responses]
    assert said == ["Hello, how can I help?", "As I said: Hello, how can I help?"]
