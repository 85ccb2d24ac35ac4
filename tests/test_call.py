"""Whole calls on virtual time: synthetic Twilio caller <-> run_call <-> local realtime model.

Every check compares the bridge with the peers' ground truth: what the caller's
phone actually played (and when), and what the model actually received and produced.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from _schema import validate_client_event

import callbridge
from callbridge import Agent, CallEvent, CallLimits, events, memory_socket_pair, run_call
from callbridge import realtime as rt
from callbridge import twilio as tw
from callbridge.backend import ModelConnectError, RealtimeConnection
from callbridge.local import LocalRealtimeServer, ServerSession
from callbridge.testing import SimulatedCall, TwilioCaller, Utterance

FRAME = 160


class Run(SimulatedCall):
    """`SimulatedCall`, whose protocol check also holds every event the bridge sent the
    model to the openai SDK's schema."""

    def check_protocols(self) -> None:
        super().check_protocols()
        for text in self.session.received:
            validate_client_event(text)


async def call(
    caller: TwilioCaller,
    model: Any,
    *,
    agent: Agent | callbridge.AgentFactory | None = None,
    limits: CallLimits | None = None,
    wrap_socket: Callable[[Any], Any] = lambda s: s,
    **more: Any,
) -> Run:
    """One whole call; `more` goes to `run_call` (e.g. `on_raw`)."""
    events: list[CallEvent] = []
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(wrap_socket(bridge_end), agent=agent or Agent(), backend=model,
                                limits=limits, on_event=events.append, **more)
    return Run(result=result, caller=caller, model=model, events=events)


class SlowToConnect:
    """A backend that takes `delay` seconds to open, like a far-away model."""

    def __init__(self, inner: LocalRealtimeServer, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.sessions = inner.sessions

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        await trio.sleep(self.delay)
        async with self.inner.connect(model) as connection:
            yield connection


GREETER = Agent(greeting="Greet the caller.")


async def test_audio_is_bit_exact_both_ways_even_before_the_model_is_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = LocalRealtimeServer(default_reply_ms=1500)
    caller = TwilioCaller(utterances=[Utterance(at=0.2, duration=0.6)], hangup_at=4.0)
    run = await call(caller, SlowToConnect(model, 0.7), agent=GREETER)

    assert run.result.reason == "caller_hangup"
    run.check_protocols()
    session = run.session
    # caller -> model: every frame, in order, including the 35 sent while connecting
    assert bytes(session.input_audio) == bytes(caller.sent_audio)
    assert len(caller.sent_audio) == 4.0 * 8000
    assert json.loads(session.received[0])["type"] == "session.update"
    assert not session.appends_before_session_update
    # model -> caller: what the model produced is exactly what the phone played
    produced = b"".join(bytes(a) for a in session.produced.values())
    assert produced and caller.heard_audio() == produced
    assert run.result.stats.frames_dropped == 0


async def test_nothing_is_sent_to_twilio_before_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = LocalRealtimeServer(default_reply_ms=500)
    caller = TwilioCaller(start_delay=1.0, hangup_at=2.0)
    run = await call(caller, model, agent=GREETER)
    run.check_protocols()  # the caller flags anything received before `start`
    first_media = min(t for t, m in caller.received if isinstance(m, tw.Media))
    assert first_media >= caller.t0
    assert caller.heard_audio() == b"".join(bytes(a) for a in run.session.produced.values())


@pytest.mark.parametrize(("chunk_ms", "mark_ms"), [(100, 100), (20, 100), (20, 0)],
                         ids=["100ms-deltas", "20ms-deltas", "mark-every-delta"])
@pytest.mark.parametrize("speedup", [10.0, 1.25], ids=["generation-finished", "still-generating"])
@pytest.mark.parametrize("barge_in_at", [0.37, 1.0, 1.61, 2.5])
async def test_barge_in_clears_at_once_and_truncates_at_what_was_heard(
    autojump_clock: trio.testing.MockClock, barge_in_at: float, speedup: float,
    chunk_ms: int, mark_ms: int,
) -> None:
    model = LocalRealtimeServer(default_reply_ms=3000, speedup=speedup, chunk_ms=chunk_ms)
    caller = TwilioCaller(utterances=[Utterance(at=barge_in_at, duration=0.5)], hangup_at=6.0)
    run = await call(caller, model, agent=GREETER, limits=CallLimits(mark_ms=mark_ms))
    run.check_protocols()
    session = run.session

    [speech_started] = run.times("speech_started")
    [cleared] = caller.clears
    assert cleared == speech_started  # same virtual instant: no queueing behind audio

    [(item_id, audio_end_ms)] = session.truncations
    first_item = next(iter(session.produced))
    assert item_id == first_item
    heard = caller.heard_audio(cleared)
    produced = bytes(session.produced[item_id])
    assert heard == produced[: len(heard)]  # bit-exact, and nothing else was played
    # never beyond what was heard or produced, and within one frame of the truth
    assert audio_end_ms * 8 <= len(heard) <= len(produced)
    assert len(heard) - audio_end_ms * 8 < FRAME

    # nothing of the interrupted response reached the caller after `clear`
    after = caller.heard_audio()[len(heard):]
    later = b"".join(bytes(a) for i, a in session.produced.items() if i != item_id)
    assert after == later[: len(after)]
    first = session.responses[0]
    if speedup < 2 and barge_in_at < 2:  # 3 s of audio take 2.4 s to generate
        assert (first.status, first.reason) == ("cancelled", "turn_detected")
    else:
        assert first.status == "completed"


async def test_barge_in_before_any_audio_sends_no_clear_or_truncate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = LocalRealtimeServer(default_reply_ms=3000, speedup=10)
    caller = TwilioCaller(utterances=[Utterance(at=0.0, duration=0.5)], hangup_at=3.0)
    run = await call(caller, SlowToConnect(model, 0.05), agent=Agent())
    run.check_protocols()
    assert caller.clears == []
    assert run.session.truncations == []


async def test_without_auto_cancel_the_bridge_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    vad = attrs_replace(GREETER.turn_detection, interrupt_response=False)
    agent = attrs_replace(GREETER, turn_detection=vad)
    model = LocalRealtimeServer(default_reply_ms=4000, speedup=1.25)
    caller = TwilioCaller(utterances=[Utterance(at=1.0, duration=0.5)], hangup_at=4.0)
    run = await call(caller, model, agent=agent)
    run.check_protocols()
    cancels = [json.loads(t) for t in run.session.received
               if json.loads(t)["type"] == "response.cancel"]
    assert cancels == [{"type": "response.cancel", "response_id": run.session.responses[0].id}]
    assert run.session.responses[0].reason == "client_cancelled"
    assert len(caller.clears) == 1


def attrs_replace(obj: Any, **changes: Any) -> Any:
    import attrs

    return attrs.evolve(obj, **changes)


async def test_truncation_is_checked_by_the_models_own_rule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Twilio echoes marks late (a slow network): the estimate must still stay within
    # what was produced, or the API answers "Audio content of Xms is already shorter".
    model = LocalRealtimeServer(default_reply_ms=800, speedup=10)
    caller = TwilioCaller(utterances=[Utterance(at=2.0, duration=0.5)], hangup_at=4.0)
    run = await call(caller, model, agent=GREETER)
    run.check_protocols()  # includes: the model sent no `error`
    assert caller.clears == []  # all 800 ms had played: nothing to clear or cut
    assert run.session.truncations == []


# --- ends of calls -------------------------------------------------------------------


async def test_stop_closes_the_model_promptly(autojump_clock: trio.testing.MockClock) -> None:
    model = LocalRealtimeServer(default_reply_ms=10_000, speedup=1.0)
    caller = TwilioCaller(hangup_at=1.0)
    run = await call(caller, model, agent=GREETER)
    assert run.result.reason == "caller_hangup"
    assert run.session.closed
    assert not caller.closed_by_server  # we waited for Twilio's close instead of racing it
    assert run.times("end")[0] - (caller.t0 + 1.0) < 0.01


async def test_socket_closed_without_stop(autojump_clock: trio.testing.MockClock) -> None:
    run = await call(TwilioCaller(hangup_at=1.0, send_stop=False), LocalRealtimeServer())
    assert run.result.reason == "twilio_closed"
    assert run.session.closed


class ClosesAfter:
    """A model that hangs up on us after `delay` seconds, and then stays away."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.connections = 0

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        self.connections += 1
        if self.connections > 1:
            raise ModelConnectError("refused")
        client, server = memory_socket_pair()

        async def close_later() -> None:
            await trio.sleep(self.delay)
            await server.aclose(1011)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_later)
            from callbridge.backend import EventConnection

            yield EventConnection(client)
            nursery.cancel_scope.cancel()


async def test_a_model_gone_for_good_ends_the_call_after_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    caller = TwilioCaller(hangup_at=30.0)
    model = ClosesAfter(2.0)
    run = await call(caller, model)
    assert run.result.reason == "model_unavailable"
    assert model.connections > 2  # it tried again, with backoff, for the budget (5 s)
    [ended] = [e for e in run.events if isinstance(e, events.End)]
    assert 2.0 + 5.0 <= ended.at - caller.t0 < 2.0 + 5.0 + 0.5
    assert caller.closed_by_server  # so Twilio runs the next TwiML verb


class Unreachable:
    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        await trio.sleep(1.0)
        raise ModelConnectError("cannot connect to wss://example.invalid: OSError")
        yield  # pragma: no cover


async def test_model_unreachable_ends_the_call_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    caller = TwilioCaller(hangup_at=30.0)
    run = await call(caller, Unreachable())
    assert (run.result.reason, run.result.detail) == (
        "model_unavailable", "no model connection for 5 s")  # retried meanwhile
    assert run.times("end")[0] - caller.t0 == pytest.approx(5.0, abs=0.1)
    assert caller.closed_by_server


async def test_no_start(autojump_clock: trio.testing.MockClock) -> None:
    caller = TwilioCaller(send_start=False, hangup_at=60.0)
    run = await call(caller, LocalRealtimeServer(), limits=CallLimits(start_timeout=3.0))
    assert run.result.reason == "no_start"
    assert caller.closed_by_server


async def test_hang_up_before_start_ends_at_once(autojump_clock: trio.testing.MockClock) -> None:
    caller = TwilioCaller(send_start=False, hangup_at=1.0)
    run = await call(caller, LocalRealtimeServer(), limits=CallLimits(start_timeout=15.0))
    assert run.result.reason == "caller_hangup"
    assert run.times("end")[0] - caller.t0 < 1.1  # not after the 15 s start timeout


# --- stalls and bad input ----------------------------------------------------------------


class Stalled:
    """A model that accepts the connection, then never reads or writes again."""

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        class Connection:
            async def send(self, event: rt.ClientEvent) -> None:
                await trio.sleep_forever()

            async def receive(self) -> rt.ServerEvent | None:
                await trio.sleep_forever()
                raise AssertionError  # pragma: no cover

        yield Connection()


async def test_stalled_model_keeps_memory_bounded_and_stop_still_works(
    autojump_clock: trio.testing.MockClock,
) -> None:
    caller = TwilioCaller(hangup_at=20.0)
    limits = CallLimits(caller_buffer_frames=100)
    run = await call(caller, Stalled(), limits=limits)
    stats = run.result.stats
    assert run.result.reason == "caller_hangup"
    assert stats.frames_in == 1000
    assert stats.frames_to_model == 0
    # the buffer held its 100 newest frames; the rest were dropped and counted
    assert stats.frames_dropped == 1000 - 100


class StopsReading:
    """The local model behind a small pipe that stops reading client frames after
    `after` of them (it still finishes what it is saying): a model side that stalls."""

    def __init__(self, inner: LocalRealtimeServer, after: int) -> None:
        self.inner, self.after, self.sessions = inner, after, inner.sessions

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        from callbridge.backend import EventConnection

        client, server = memory_socket_pair(buffer=4)
        after = self.after

        class Deaf:
            n = 0

            async def send(self, text: str) -> None:
                await server.send(text)

            async def receive(self) -> str | bytes | None:
                self.n += 1
                if self.n > after:
                    await trio.sleep_forever()
                return await server.receive()

            async def aclose(self, code: int = 1000, reason: str = "") -> None:
                await server.aclose(code, reason)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.inner.serve, Deaf())
            try:
                yield EventConnection(client)
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()


async def test_marks_and_stop_are_handled_while_the_model_side_stalls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = StopsReading(LocalRealtimeServer(default_reply_ms=2000, speedup=10), after=30)
    caller = TwilioCaller(hangup_at=10.0)
    run = await call(caller, model, agent=GREETER, limits=CallLimits(caller_buffer_frames=50))
    stats = run.result.stats
    assert run.result.reason == "caller_hangup"
    # the whole 2 s greeting played and every mark came back and was counted
    assert caller.heard_audio() == bytes(next(iter(run.session.produced.values())))
    assert stats.marks_played == stats.chunks_out == 20
    # while caller audio beyond the bounded buffer was dropped, and counted
    assert stats.frames_dropped > 400 and stats.frames_to_model < 60


class SlowTwilio:
    """The bridge's end of a Twilio socket that stops taking writes after `after` sends."""

    def __init__(self, inner: Any, after: int) -> None:
        self.inner, self.after, self.sends = inner, after, 0

    async def send(self, text: str) -> None:
        self.sends += 1
        if self.sends > self.after:
            await trio.sleep_forever()
        await self.inner.send(text)

    async def receive(self) -> str | bytes | None:
        return await self.inner.receive()  # type: ignore[no-any-return]

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)


class BoundedPipe:
    """The local model behind a socket with a small buffer, like TCP: a client that
    stops reading stops the server's writes."""

    def __init__(self, inner: LocalRealtimeServer) -> None:
        self.inner, self.sessions = inner, inner.sessions

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        from callbridge.backend import EventConnection

        client, server = memory_socket_pair(buffer=4)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.inner.serve, server)
            try:
                yield EventConnection(client)
            finally:
                await client.aclose()  # never blocks: memory channels close at once


async def test_stalled_twilio_socket_bounds_playout_and_ends_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = BoundedPipe(LocalRealtimeServer(default_reply_ms=60_000, chunk_ms=20, speedup=50))
    caller = TwilioCaller(hangup_at=60.0)
    # a mark after every chunk: the 10 sends that get through are 5 chunks
    limits = CallLimits(playout_buffer_chunks=16, send_timeout=5.0, mark_ms=0)
    run = await call(caller, model, agent=GREETER, limits=limits,
                     wrap_socket=lambda s: SlowTwilio(s, after=10))
    assert run.result.reason == "twilio_stalled"
    # the model was read no faster than the playout took audio: 5 chunks sent, 16
    # queued, a few in hand and in the pipe: a few dozen, not the 3000 of the reply
    produced = len(model.sessions[0].produced[next(iter(model.sessions[0].produced))])
    assert run.result.stats.chunks_out == 5
    assert produced <= 32 * FRAME


class Garbage:
    """Interleaves malformed frames with Twilio's real ones."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.n = inner, 0

    async def send(self, text: str) -> None:
        await self.inner.send(text)

    async def receive(self) -> str | bytes | None:
        self.n += 1
        if self.n % 25 == 0:
            bad = [b"\x00\x01", "not json", "[]", '{"event": "media"}', '{"event": "bogus"}',
                   '{"event":"mark","streamSid":"x","mark":{"name":"3:160:nope"}}']
            return bad[self.n // 25 % 6]
        return await self.inner.receive()  # type: ignore[no-any-return]

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)


async def test_malformed_frames_are_reported_and_lose_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = LocalRealtimeServer(default_reply_ms=1000)
    caller = TwilioCaller(utterances=[Utterance(at=1.0, duration=0.4)], hangup_at=3.0)
    run = await call(caller, model, agent=GREETER, wrap_socket=Garbage)
    assert run.result.reason == "caller_hangup"
    assert run.result.stats.protocol_errors >= 5
    assert bytes(run.session.input_audio) == bytes(caller.sent_audio)


async def test_dtmf_and_custom_parameters_reach_the_observer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    caller = TwilioCaller(hangup_at=2.0, dtmf=[(0.5, "4"), (1.0, "#")],
                          custom_parameters={"tenant": "acme"})
    run = await call(caller, LocalRealtimeServer())
    assert [e.digit for e in run.events if isinstance(e, events.Dtmf)] == ["4", "#"]
    assert run.result.custom_parameters == {"tenant": "acme"}
    assert run.result.call_sid == caller.call_sid


async def test_many_calls_are_isolated(autojump_clock: trio.testing.MockClock) -> None:
    """25 concurrent calls, one with a model that dies: the others are untouched."""
    runs: list[Run] = []

    async def one(i: int) -> None:
        model: Any = ClosesAfter(1.0) if i == 7 else LocalRealtimeServer(default_reply_ms=2000)
        caller = TwilioCaller(utterances=[Utterance(at=0.5 + i * 0.05, duration=0.4)],
                              hangup_at=4.0, stream_sid=f"MZ{i:032x}")
        runs.append(await call(caller, model, agent=GREETER,
                               limits=CallLimits(model_connect_budget=1.0)))

    async with trio.open_nursery() as nursery:
        for i in range(25):
            nursery.start_soon(one, i)
    reasons = sorted(r.result.reason for r in runs)
    assert reasons == ["caller_hangup"] * 24 + ["model_unavailable"]
    for run in runs:
        if run.result.reason == "caller_hangup":
            run.check_protocols()
            assert bytes(run.session.input_audio) == bytes(run.caller.sent_audio)
            assert len(run.session.truncations) == 1


# --- catching up: coalescing only when behind -------------------------------------------


class SlowSends:
    """A text socket whose every send takes `delay` seconds: a peer that reads slowly."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay

    async def send(self, text: str) -> None:
        await trio.sleep(self.delay)
        await self.inner.send(text)

    async def receive(self) -> str | bytes | None:
        return await self.inner.receive()  # type: ignore[no-any-return]

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)


class SlowModel:
    """The local model behind a connection whose sends each take `delay` seconds."""

    def __init__(self, inner: LocalRealtimeServer, delay: float) -> None:
        self.inner, self.delay, self.sessions = inner, delay, inner.sessions

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        async with self.inner.connect(model) as connection:
            delay = self.delay

            class Slow:
                async def send(self, event: rt.ClientEvent) -> None:
                    await trio.sleep(delay)
                    await connection.send(event)

                async def receive(self) -> rt.ServerEvent | None:
                    return await connection.receive()

            yield Slow()


def _appends(session: ServerSession) -> list[bytes]:
    import base64

    return [base64.b64decode(e["audio"]) for e in map(json.loads, session.received)
            if e["type"] == "input_audio_buffer.append"]


async def test_idle_calls_send_one_append_per_frame(autojump_clock: trio.testing.MockClock) -> None:
    run = await call(TwilioCaller(utterances=[Utterance(at=0.5, duration=1.0)], hangup_at=3),
                     LocalRealtimeServer())
    assert {len(a) for a in _appends(run.session)} == {FRAME}  # nothing waits to be batched


async def test_a_slow_model_socket_gets_caller_audio_in_fewer_appends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = LocalRealtimeServer()
    caller = TwilioCaller(utterances=[Utterance(at=0.5, duration=1.0)], hangup_at=4)
    run = await call(caller, SlowModel(model, delay=0.05))  # 2.5 frames per send
    run.check_protocols()
    appends = _appends(run.session)
    assert 1 < max(map(len, appends)) <= 100 * 8 + FRAME
    assert len(appends) < run.result.stats.frames_to_model
    # the same audio, in order, up to what was still queued at the hang-up
    received = b"".join(appends)
    assert bytes(caller.sent_audio).startswith(received) and len(received) > 3.5 * 8000
    assert run.result.stats.frames_to_model * FRAME == len(received)
    assert run.session.turns  # VAD still heard the turn


async def test_a_slow_twilio_socket_gets_model_audio_in_fewer_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    import base64

    # 20 ms deltas ten times faster than real time, to a socket that takes 30 ms a send
    model = LocalRealtimeServer(chunk_ms=20, speedup=10, default_reply_ms=3000)
    caller = TwilioCaller(utterances=[Utterance(at=1.5, duration=0.5)], hangup_at=4)
    run = await call(caller, model, agent=Agent(greeting="Talk."),
                     wrap_socket=lambda s: SlowSends(s, 0.03))
    run.check_protocols()
    sizes = [len(base64.b64decode(m.payload)) for _, m in caller.received
             if isinstance(m, tw.Media)]
    assert max(sizes) > FRAME and max(sizes) <= 100 * 8
    [(item_id, audio_end_ms)] = run.session.truncations
    [cleared] = caller.clears
    heard = caller.heard_audio(cleared)
    produced = bytes(run.session.produced[item_id])
    assert heard == produced[: len(heard)]  # bit-exact, in order
    # never beyond what was heard; short of it by at most what played while `clear`
    # went through the slow socket: behind the media + mark in flight, then its own
    # send (3 x 30 ms)
    assert 0 <= len(heard) - audio_end_ms * 8 <= 3 * 0.03 * 8000
    deltas = [e for e in map(json.loads, run.session.sent)
              if e["type"] == "response.output_audio.delta"]
    assert len(sizes) < len(deltas) / 2  # far fewer messages than the model sent deltas


class Scripted:
    """A model that hands the bridge a burst of deltas and then `speech_started`, all
    without a checkpoint in between: playout wakes with audio the barge-in makes stale."""

    def __init__(self, deltas: int) -> None:
        self.deltas, self.sessions = deltas, []

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        import base64

        chunk = base64.b64encode(bytes(range(160))).decode()
        events: list[rt.ServerEvent] = [rt.ResponseCreated(response={"id": "r1"})]
        events += [rt.OutputAudioDelta(response_id="r1", item_id="i1", delta=chunk)
                   for _ in range(self.deltas)]
        events += [rt.SpeechStarted(audio_start_ms=0, item_id="u1")]

        class Connection:
            async def send(self, event: rt.ClientEvent) -> None:
                await trio.lowlevel.checkpoint()

            async def receive(self) -> rt.ServerEvent | None:
                if events:
                    return events.pop(0)  # no checkpoint: the burst arrives at once
                await trio.sleep_forever()
                raise AssertionError  # pragma: no cover

        yield Connection()


@pytest.mark.parametrize("deltas", [1, 5, 11])
async def test_audio_queued_when_the_caller_speaks_is_never_sent(
    autojump_clock: trio.testing.MockClock, deltas: int,
) -> None:
    # The burst and the barge-in reach the bridge before the Twilio writer runs: the
    # barge-in drops the queued audio at once, so none of it (and no `clear`, as
    # nothing was sent) reaches Twilio. Table tests in test_bridge.py cover the
    # orders in which some of it was sent first.
    caller = TwilioCaller(hangup_at=1.0)
    run = await call(caller, Scripted(deltas), agent=Agent(greeting="Hi."))
    assert run.result.reason == "caller_hangup"
    assert [m for _, m in caller.received if isinstance(m, tw.Media | tw.Mark | tw.Clear)] == []
    assert run.result.stats.chunks_out == 0 and caller.violations == []


class Timed:
    """A model that plays a script of (delay before, event), then stays quiet."""

    def __init__(self, script: list[tuple[float, rt.ServerEvent]]) -> None:
        self.script, self.sessions = script, []

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        script = list(self.script)

        class Connection:
            async def send(self, event: rt.ClientEvent) -> None:
                await trio.lowlevel.checkpoint()

            async def receive(self) -> rt.ServerEvent | None:
                if script:
                    delay, event = script.pop(0)
                    await trio.sleep(delay)
                    return event
                await trio.sleep_forever()
                raise AssertionError  # pragma: no cover

        yield Connection()


@pytest.mark.parametrize("mark_ms", [0, 100])
async def test_audio_in_flight_at_a_barge_in_is_cleared_and_not_counted_as_playing(
    autojump_clock: trio.testing.MockClock, mark_ms: int,
) -> None:
    import base64

    chunk = base64.b64encode(bytes(160)).decode()
    model = Timed([
        (0.2, rt.ResponseCreated(response={"id": "r1"})),  # after `start`
        (0.0, rt.OutputAudioDelta(response_id="r1", item_id="i1", delta=chunk)),
        (0.01, rt.SpeechStarted(audio_start_ms=0, item_id="u1")),  # during that send
        (0.5, rt.SpeechStarted(audio_start_ms=500, item_id="u2")),
    ])
    caller = TwilioCaller(hangup_at=1.0)
    # every send to Twilio takes 50 ms: the first barge-in lands while the chunk is in
    # flight; the chunk must not enter the new generation's playback (the second
    # barge-in would then try to truncate an item of the old one)
    run = await call(caller, model, limits=CallLimits(mark_ms=mark_ms),
                     wrap_socket=lambda s: SlowSends(s, 0.05))
    assert run.result.reason == "caller_hangup"
    assert run.times("clear") and len(run.times("clear")) == 1  # nothing left to clear later
    assert run.times("truncate") == []


@pytest.mark.parametrize("mark_ms", [0, 100, 250])
async def test_marks_follow_every_mark_ms_of_audio_and_the_end_of_each_response(
    autojump_clock: trio.testing.MockClock, mark_ms: int,
) -> None:
    model = LocalRealtimeServer(default_reply_ms=1010, chunk_ms=20, speedup=1)
    caller = TwilioCaller(utterances=[Utterance(at=2.0, duration=0.4)], hangup_at=5.0)
    run = await call(caller, model, agent=GREETER, limits=CallLimits(mark_ms=mark_ms))
    run.check_protocols()
    assert len(run.session.responses) == 2  # the greeting, and the reply after the turn
    audio_ms = 0
    for _, message in caller.received:
        if isinstance(message, tw.Media):
            audio_ms += len(message.payload) * 3 // 4 // 8
            assert audio_ms - 20 < max(mark_ms, 1)  # else the chunk before owed a mark
        elif isinstance(message, tw.Mark):
            assert audio_ms > 0  # never two marks in a row
            audio_ms = 0
    assert audio_ms == 0  # every response's audio ends with a mark
    stats = run.result.stats
    assert stats.marks_played == len(caller.echoes) > 0
    assert stats.marks_played <= 2 * (1 + 1010 // max(mark_ms, 20))


# --- bad audio and other streams' frames (regressions from a fault run) -----------------


class Rewrites:
    """Passes Twilio's frames through `rewrite` (JSON in, JSON text out, or None to
    pass the frame as it is)."""

    def __init__(self, inner: Any, rewrite: Callable[[dict[str, Any]], str | None]) -> None:
        self.inner, self.rewrite = inner, rewrite

    async def send(self, text: str) -> None:
        await self.inner.send(text)

    async def receive(self) -> str | bytes | None:
        text = await self.inner.receive()
        if isinstance(text, str):
            return self.rewrite(json.loads(text)) or text
        return text  # type: ignore[no-any-return]

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)


@pytest.mark.parametrize("slow_model", [False, True], ids=["one-by-one", "merged"])
async def test_caller_audio_that_is_not_base64_is_silence_and_never_ends_the_call(
    autojump_clock: trio.testing.MockClock, slow_model: bool,
) -> None:
    expected = bytearray()

    def corrupt(raw: dict[str, Any]) -> str | None:
        if raw["event"] != "media":
            return None
        payload = raw["media"]["payload"]
        n = len(expected) // FRAME
        if n % 10 == 3:  # every tenth frame arrives garbled, same length
            raw["media"]["payload"] = "*" * len(payload)
            expected.extend(b"\xff" * FRAME)
            return json.dumps(raw)
        expected.extend(__import__("base64").b64decode(payload))
        return None

    model = LocalRealtimeServer()
    backend: Any = SlowModel(model, delay=0.05) if slow_model else model
    caller = TwilioCaller(utterances=[Utterance(at=0.5, duration=1.0)], hangup_at=3.0)
    run = await call(caller, backend, wrap_socket=lambda s: Rewrites(s, corrupt))
    assert run.result.reason == "caller_hangup"
    stats = run.result.stats
    assert stats.bad_audio == stats.protocol_errors == 15
    received = bytes(run.session.input_audio)
    assert received == bytes(expected[: len(received)])  # in order, the model's clock true
    assert len(received) == stats.frames_to_model * FRAME
    run.check_protocols()


async def test_frames_of_another_stream_are_counted_and_not_forwarded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def stray(raw: dict[str, Any]) -> str | None:
        if raw["event"] == "media" and raw["media"].get("chunk") in ("5", "6", "7"):
            raw["streamSid"] = "MZ" + "f" * 32  # frames of a stream this call is not
            return json.dumps(raw)
        return None

    caller = TwilioCaller(hangup_at=2.0)
    run = await call(caller, LocalRealtimeServer(), wrap_socket=lambda s: Rewrites(s, stray))
    assert run.result.reason == "caller_hangup"
    assert run.result.stats.protocol_errors == 3
    sent = bytes(caller.sent_audio)
    # not forwarded; in their place, as for frames lost on the line, silence of their
    # length, so the model's input clock stays the caller's
    assert bytes(run.session.input_audio) == (
        sent[: 4 * FRAME] + b"\xff" * 3 * FRAME + sent[7 * FRAME:])
    assert run.result.stats.gap_filled_ms == 60


# --- the live call: a handle, and a model connection that can be replaced -----------------


async def start_call(nursery: trio.Nursery, caller: TwilioCaller, model: Any,
                     **kwargs: Any) -> tuple[callbridge.Call, list[CallEvent]]:
    events: list[CallEvent] = []
    twilio_end, bridge_end = memory_socket_pair()
    nursery.start_soon(caller.run, twilio_end)
    live: callbridge.Call = await nursery.start(functools.partial(
        run_call, bridge_end, backend=model, on_event=events.append, **kwargs))
    return live, events


async def test_a_second_model_connection_takes_over_a_live_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = LocalRealtimeServer(default_reply_ms=1000)
    caller = TwilioCaller(utterances=[Utterance(at=0.3, duration=0.4),
                                      Utterance(at=3.0, duration=0.4)], hangup_at=5.0)
    async with trio.open_nursery() as nursery:
        live, seen = await start_call(nursery, caller, model, agent=GREETER)
        await trio.sleep(2.5)  # the greeting and the first reply have played
        live._replace_model()
        result = await live.wait_ended()
    assert result.reason == "caller_hangup"
    first, second = model.sessions
    assert first.closed and second.closed
    # the new session got the agent's session.update first, and no second greeting
    received = [json.loads(t)["type"] for t in second.received]
    assert received[0] == "session.update" and "response.create" not in received
    # the caller's audio went on to the new session, none twice, none lost
    assert bytes(first.input_audio) + bytes(second.input_audio) == bytes(caller.sent_audio)
    # and the new session heard the second turn and answered it
    assert len(second.responses) == 1 and second.produced
    heard = caller.heard_audio()
    assert heard.endswith(bytes(next(iter(second.produced.values()))))
    assert [e.connection for e in seen if isinstance(e, events.ModelConnected)] == [1, 2]
    assert result.stats.model_connections == 2


async def test_the_handle_ends_the_call_and_talks_to_the_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = LocalRealtimeServer()
    caller = TwilioCaller(hangup_at=60.0)
    async with trio.open_nursery() as nursery:
        live, _ = await start_call(nursery, caller, model)
        assert live.result is None
        await trio.sleep(1.0)
        assert (live.stream_sid, live.call_sid) == (caller.stream_sid, caller.call_sid)
        assert live.stats.frames_in == 50
        item = rt.ConversationItemCreate(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "The caller is a VIP."}]})
        live.send_to_model(item)
        await trio.sleep(0.5)
        live.end("done here")
        result = await live.wait_ended()
    assert (result.reason, result.detail) == (callbridge.EndReason.ENDED, "done here")
    assert live.result is result
    assert caller.closed_by_server  # so Twilio goes on with the TwiML after <Connect>
    session = model.sessions[0]
    assert session.closed
    sent = [json.loads(t) for t in session.received]
    assert {"type": "conversation.item.create", "item": item.item} in sent
    validate_client_event(json.dumps(sent[-1]))


async def test_live_calls_are_found_by_call_sid_while_they_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = callbridge.LiveCalls()
    async with trio.open_nursery() as nursery:
        lives = []
        for i in range(3):
            caller = TwilioCaller(hangup_at=2.0 + i, call_sid=f"CA{i:032x}",
                                  stream_sid=f"MZ{i:032x}")
            live, _ = await start_call(nursery, caller, LocalRealtimeServer())
            calls.add(live)
            lives.append(live)
        await trio.sleep(1.0)
        assert len(calls) == 3
        assert calls.by_call_sid(f"CA{1:032x}") is lives[1]
        assert calls.by_call_sid("CA-nope") is None
        await lives[0].wait_ended()
        calls.discard(lives[0])
        assert list(calls) == lives[1:] or set(calls) == set(lives[1:])


# --- the agent knows the call --------------------------------------------------------------


def _instructions(session: ServerSession) -> str:
    [update] = [json.loads(t) for t in session.received
                if json.loads(t)["type"] == "session.update"]
    return str(update["session"]["instructions"])


async def test_instructions_can_be_a_function_of_the_calls_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[callbridge.CallContext] = []

    def instructions(context: callbridge.CallContext) -> str:
        seen.append(context)
        return f"The caller's number is {context.from_number}; tenant {context.parameters['t']}."

    model = LocalRealtimeServer()
    caller = TwilioCaller(hangup_at=2.0, start_delay=0.5,
                          custom_parameters={"from": "+15551230000", "to": "+15559870000",
                                             "t": "acme"})
    run = await call(caller, model, agent=Agent(instructions=instructions))
    run.check_protocols()
    assert _instructions(run.session) == "The caller's number is +15551230000; tenant acme."
    [context] = seen
    assert (context.call_sid, context.stream_sid, context.to_number) == (
        caller.call_sid, caller.stream_sid, "+15559870000")
    # the model connected once `start` brought the context, and lost no caller audio
    [started] = run.times("start")
    assert run.times("model_connected")[0] >= started
    assert bytes(run.session.input_audio) == bytes(caller.sent_audio)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_the_agent_can_be_chosen_per_call(
    autojump_clock: trio.testing.MockClock, asynchronous: bool,
) -> None:
    desks = {"+15550000001": Agent(instructions="Sales desk.", voice="cedar"),
             "+15550000002": Agent(instructions="Support desk.", greeting="Hello!")}

    def choose(context: callbridge.CallContext) -> Agent:
        assert context.to_number is not None
        return desks[context.to_number]

    async def choose_later(context: callbridge.CallContext) -> Agent:
        await trio.sleep(0.1)  # e.g. a database look-up
        return choose(context)

    for number, agent in desks.items():
        model = LocalRealtimeServer(default_reply_ms=500)
        caller = TwilioCaller(hangup_at=2.0, custom_parameters={"to": number})
        run = await call(caller, model, agent=choose_later if asynchronous else choose)
        run.check_protocols()
        assert _instructions(run.session) == agent.instructions
        assert bool(run.session.responses) is (agent.greeting is not None)
        assert bytes(run.session.input_audio) == bytes(caller.sent_audio)


async def test_an_agent_factory_that_returns_something_else_fails_the_call_loudly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(ExceptionGroup) as caught:
        await call(TwilioCaller(hangup_at=2.0), LocalRealtimeServer(),
                   agent=lambda context: "not an agent")  # type: ignore[arg-type,return-value]
    assert caught.group_contains(TypeError, match="returned str, not an Agent")


# --- keypresses reach the agent -----------------------------------------------------------


@pytest.mark.parametrize(("keys", "entry"), [
    ([(1.0, "1"), (1.3, "2"), (1.5, "#")], "1 2 #"),  # the terminator ends the entry
    ([(1.0, "4"), (2.5, "2")], "4 2"),  # a 2 s pause ends it
])
async def test_keypresses_reach_the_model_as_a_message_and_get_an_answer(
    autojump_clock: trio.testing.MockClock, keys: list[tuple[float, str]], entry: str,
) -> None:
    # the greeting is still speaking when the keys come: the answer waits for it
    model = LocalRealtimeServer(default_reply_ms=3000, speedup=1.25)
    caller = TwilioCaller(hangup_at=9.0, dtmf=keys)
    run = await call(caller, model, agent=GREETER)
    run.check_protocols()  # no conversation_already_has_active_response, nothing malformed
    sent = [json.loads(t) for t in run.session.received]
    [message] = [e for e in sent if e["type"] == "conversation.item.create"]
    assert message["item"]["content"] == [
        {"type": "input_text", "text": f"The caller pressed {entry}."}]
    creates = [i for i, e in enumerate(sent) if e["type"] == "response.create"]
    assert len(creates) == 2 and creates[1] > sent.index(message)  # greeting, then the answer
    assert len(run.session.responses) == 2
    for event in sent:
        validate_client_event(json.dumps(event))


async def test_on_raw_sees_every_frame_and_event_without_changing_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    raws: list[events.Raw] = []
    model = LocalRealtimeServer(default_reply_ms=500)
    caller = TwilioCaller(utterances=[Utterance(at=0.5, duration=0.4)], hangup_at=3.0)
    result = (await call(caller, model, agent=GREETER, on_raw=raws.append)).result
    assert result.reason == "caller_hangup"
    twilio = [r.message for r in raws if r.source == "twilio"]
    sent_by_caller = [json.loads(t)["event"] for t in twilio if isinstance(t, str)]
    assert sent_by_caller.count("media") == result.stats.frames_in == 150
    assert sent_by_caller[:2] == ["connected", "start"] and sent_by_caller[-1] == "stop"
    model_events = [type(r.message) for r in raws if r.source == "model"]
    assert model_events.count(rt.OutputAudioDelta) == sum(
        len(a) for a in model.sessions[0].produced.values()) // 800  # 100 ms deltas
    assert rt.SessionCreated in model_events and rt.ResponseDone in model_events
    assert [r.at for r in raws] == sorted(r.at for r in raws)
