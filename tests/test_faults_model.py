"""Faults of the model's side, whole calls: what callbridge does when the realtime model
refuses, drops mid-response, stalls, talks garbage, expires the session, or when the
call is cancelled while the model connects. The rows of docs/faults.md.

Virtual time (`autojump_clock`) wherever no real socket is involved; the few real
sockets are on loopback, bounded by `fail_after`, and nothing asserts how long
anything took on the real clock.
"""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from _schema import validate_client_event
from test_model_faults import DropsOnce

from callbridge import Agent, CallLimits, EndReason, memory_socket_pair, run_call
from callbridge import events as ev
from callbridge import realtime as rt
from callbridge.backend import EventConnection, OpenAIRealtime, RealtimeConnection
from callbridge.local import LocalRealtimeServer, Reply, scripted_brain
from callbridge.local._audio import tone
from callbridge.testing import SimulatedCall, TwilioCaller, Utterance

FRAME = 160
GREETER = Agent(greeting="Greet the caller.", idle_timeout=None)


async def simulate(model: Any, caller: TwilioCaller, *, agent: Agent = GREETER,
                   **options: Any) -> SimulatedCall:
    """One whole call over in-memory sockets; `options` go to `run_call`."""
    events: list[ev.CallEvent] = []
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(bridge_end, agent=agent, backend=model,
                                on_event=events.append, **options)
    return SimulatedCall(result=result, caller=caller, model=model, events=events)


def sent_types(session: Any) -> list[str]:
    """The types of what the bridge sent one model session, each checked against the
    openai SDK's schema of client events."""
    for text in session.received:
        validate_client_event(text)
    return [json.loads(text)["type"] for text in session.received]


def model_errors(session: Any) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, session.sent) if e["type"] == "error"]


def produced(session: Any) -> bytes:
    return b"".join(bytes(audio) for audio in session.produced.values())


Script = Callable[[Any], Awaitable[None]]


class Scripted:
    """The local model behind an in-memory socket on whose server end `script` may also
    write, and which it may close, as the real API's socket would be: on the
    connections numbered in `scripted` (from 1)."""

    def __init__(self, inner: LocalRealtimeServer, script: Script,
                 scripted: tuple[int, ...] = (1,)) -> None:
        self.inner, self.script, self.scripted = inner, script, scripted
        self.sessions = inner.sessions
        self.connections = 0
        #: the close code the bridge's end of each connection saw
        self.close_codes: list[int | None] = []

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        self.connections += 1
        client, server_end = memory_socket_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(self.inner.serve, server_end, model=model))
            if self.connections in self.scripted:
                nursery.start_soon(self.script, server_end)
            try:
                yield EventConnection(client)
            finally:
                self.close_codes.append(client.close_code)
                await client.aclose()
                nursery.cancel_scope.cancel()


# --- refused: HTTP 401 at the upgrade (real sockets) -----------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_model_refusing_with_401_ends_the_call_at_once() -> None:
    """The upgrade answered `401 Unauthorized` (a revoked key): no retry would fare
    better, so the call ends at once as `model_error` (with the apology, when Twilio's
    REST API is configured) and the Twilio socket is closed; the key is in no detail."""
    from trio_websocket import WebSocketRequest, serve_websocket

    attempts: list[str] = []

    async def refuse(request: WebSocketRequest) -> None:
        attempts.append(request.path)
        await request.reject(401, body=b'{"error": {"code": "invalid_api_key"}}')

    caller = TwilioCaller(hangup_at=60.0)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(partial(serve_websocket, refuse, "127.0.0.1", 0,
                                                   None))
            backend = OpenAIRealtime(api_key="sk-revoked-key",
                                     base_url=f"http://127.0.0.1:{listener.port}/v1")
            run = await simulate(backend, caller,
                                 limits=CallLimits(model_connect_budget=2.0))
            nursery.cancel_scope.cancel()
    gc.collect()  # trio-websocket's refused sockets, while the filters apply
    assert run.result.reason is EndReason.MODEL_ERROR
    assert "HTTP 401" in run.result.detail
    assert len(attempts) == 1  # not retried
    assert set(attempts) == {"/v1/realtime?model=gpt-realtime"}
    assert run.result.stats.model_connections == 0
    assert caller.closed_by_server  # so Twilio runs the TwiML after <Connect>
    assert "sk-revoked" not in run.result.detail


# --- drops mid-response --------------------------------------------------------------


async def test_a_drop_mid_response_reconnects_and_the_caller_hears_no_stale_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # a 3 s greeting, generated at 1.25x real time: 1 s in, it is still streaming
    local = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(3000), transcript="Welcome to Pizza Co."),
        Reply(audio=tone(800, hz=600), transcript="Sure.")]), speedup=1.25)
    caller = TwilioCaller(utterances=[Utterance(at=5.0, duration=0.6)], hangup_at=9.0)
    run = await simulate(DropsOnce(local, at=1.0), caller)
    assert run.result.reason is EndReason.CALLER_HANGUP  # the call went on
    first, second = local.sessions
    assert first.responses[0].status == "in_progress"  # cut off mid-response
    greeting, answer = produced(first), produced(second)
    assert 0 < len(greeting) < 3000 * 8
    # what the phone played: the greeting up to some point, then the new session's
    # answer, whole; nothing of the dead response after the reconnect's `clear`
    heard = run.caller.heard_audio()
    cut = len(heard) - len(answer)
    assert heard[cut:] == answer and heard[:cut] == greeting[:cut] and cut < len(greeting)
    assert len(caller.clears) == 1
    # the new session: its session.update first, no second greeting, the caller's
    # question answered; nothing it was sent names the old session's items
    types = sent_types(second)
    assert types[0] == "session.update" and "response.create" not in types
    assert "conversation.item.truncate" not in types
    assert model_errors(second) == []
    assert [r.transcript for r in second.responses] == ["Sure."]
    # the caller's audio: every frame reached one session or the other, in order
    assert bytes(first.input_audio) + bytes(second.input_audio) == bytes(caller.sent_audio)


# --- stalls: the connection stays open, nothing moves ----------------------------------


class Stalling:
    """A model connection that neither reads nor writes from `start` to `end` seconds
    after it opened (its socket stays open), then carries on as if nothing happened.
    Like the real client's socket it tells when it last heard the server
    (`last_heard`) and answers pings, except while it stalls: callbridge's liveness
    check (`CallLimits.model_ping_s`) runs on it."""

    def __init__(self, inner: RealtimeConnection, start: float, end: float) -> None:
        now = trio.current_time()
        self.inner, self.start, self.end = inner, now + start, now + end
        self.last_heard = now

    def _stalled(self) -> bool:
        return self.start <= trio.current_time() < self.end

    async def send(self, event: rt.ClientEvent) -> None:
        if self._stalled():
            await trio.sleep_until(self.end)
        await self.inner.send(event)

    async def receive(self) -> rt.ServerEvent | None:
        event = await self.inner.receive()
        if self._stalled():
            await trio.sleep_until(self.end)
        self.last_heard = trio.current_time()
        return event

    async def ping(self) -> None:
        if not self._stalled():
            self.last_heard = trio.current_time()  # the pong


class Stalls:
    def __init__(self, inner: LocalRealtimeServer, start: float, end: float) -> None:
        self.inner, self.start, self.end, self.sessions = inner, start, end, inner.sessions

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        async with self.inner.connect(model) as connection:
            yield Stalling(connection, self.start, self.end)


@pytest.mark.parametrize(("stall_s", "ping_s"), [(10.0, 10.0), (20.0, 30.0)])
async def test_a_stalled_model_is_waited_for_with_the_callers_audio_bounded(
    autojump_clock: trio.testing.MockClock, stall_s: float, ping_s: float,
) -> None:
    """A model that goes silent with its socket open (no events, no pongs) for less
    than two `model_ping_s` is waited for: no reconnect, the call stays up, the caller
    hears nothing new, and the caller's audio is kept meanwhile in
    `caller_buffer_frames` (500: 10 s), the oldest dropped and counted beyond that.
    When the model comes back it gets what was kept, in order, and the call carries
    on. (Longer, it is dropped and reopened: tests/test_model_faults.py.)"""
    local = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(1000), transcript="Hello."),
        Reply(audio=tone(600, hz=600), transcript="I heard you.")]))
    # the caller speaks 2 s into the stall, which begins 2 s into the call
    hangup = 2.0 + stall_s + 4.0
    caller = TwilioCaller(utterances=[Utterance(at=4.0, duration=0.6)], hangup_at=hangup)
    limits = CallLimits(model_ping_s=ping_s)
    run = await simulate(Stalls(local, 2.0, 2.0 + stall_s), caller, limits=limits)
    [session] = local.sessions  # no reconnect: the socket never closed
    stats = run.result.stats
    assert run.result.reason is EndReason.CALLER_HANGUP
    assert stats.frames_in == hangup * 50
    # the bound: what the stall brought beyond `caller_buffer_frames` was dropped,
    # less the frames the model writer had in hand (at most `coalesce_ms` of them)
    beyond = stall_s * 50 - limits.caller_buffer_frames
    in_hand = limits.coalesce_ms // 20
    assert max(0.0, beyond - in_hand) <= stats.frames_dropped <= max(0.0, beyond + 1)
    # what the model got: all the caller said, but one run of the oldest frames
    # waiting when the buffer was full; in order either side of it
    sent, got = bytes(caller.sent_audio), bytes(session.input_audio)
    assert len(sent) - len(got) == stats.frames_dropped * FRAME
    head = next((i for i in range(0, len(got), FRAME) if got[i:i + FRAME] != sent[i:i + FRAME]),
                len(got))
    assert got[head:] == sent[len(sent) - (len(got) - head):]
    said = [r.transcript for r in session.responses]
    if stall_s <= 10.0:  # the words said in the stall were kept, and answered late
        assert said == ["Hello.", "I heard you."]
        [answered] = [e.at for e in run.events if isinstance(e, ev.ResponseCreated)][1:]
        assert answered - caller.t0 >= 2.0 + stall_s
    else:  # they were among the oldest frames, dropped: the model never heard them
        assert said == ["Hello."]
    assert model_errors(session) == [] and caller.violations == []


class Mute:
    """A model connection that goes on reading but sends nothing after `after` seconds
    (its events are swallowed): a model that stopped answering, its socket open and
    answering pings, as a live socket does (`last_heard`, `ping`)."""

    def __init__(self, inner: RealtimeConnection, after: float) -> None:
        self.inner, self.after = inner, trio.current_time() + after
        self.last_heard = trio.current_time()

    async def send(self, event: rt.ClientEvent) -> None:
        await self.inner.send(event)

    async def receive(self) -> rt.ServerEvent | None:
        while True:
            event = await self.inner.receive()
            if event is None or trio.current_time() < self.after:
                self.last_heard = trio.current_time()
                return event

    async def ping(self) -> None:
        self.last_heard = trio.current_time()  # the pong


class GoesMute:
    def __init__(self, inner: LocalRealtimeServer, after: float) -> None:
        self.inner, self.after, self.sessions = inner, after, inner.sessions

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        async with self.inner.connect(model) as connection:
            yield Mute(connection, self.after)


async def test_a_model_that_stops_answering_is_waited_for_as_long_as_the_caller_stays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The model keeps reading but answers nothing after its greeting: the liveness
    check hears the socket's pongs and is satisfied, and nothing else watches for
    a model that does not answer. The caller's audio goes on to it, whole; the caller's
    question gets no answer; the idle prompt (8 s after the greeting) is sent once and
    never answered, so it never escalates to the goodbye; the call lasts until the
    caller hangs up (or `max_call_s`, 2 h)."""
    local = LocalRealtimeServer(default_reply_ms=1000)
    caller = TwilioCaller(utterances=[Utterance(at=20.0, duration=0.6)], hangup_at=120.0)
    run = await simulate(GoesMute(local, 2.0), caller, agent=Agent(greeting="Hi."))
    [session] = local.sessions
    assert run.result.reason is EndReason.CALLER_HANGUP
    [end] = [e for e in run.events if isinstance(e, ev.End)]
    assert end.at - caller.t0 == pytest.approx(120.0)
    assert bytes(session.input_audio) == bytes(caller.sent_audio)
    assert len(session.responses) == 3  # the greeting, the idle prompt, the question
    assert run.caller.heard_audio() == produced(session)[:1000 * 8]  # the greeting only
    assert [e.count for e in run.events if isinstance(e, ev.IdlePrompt)] == [1]
    assert run.result.stats.model_connections == 1


# --- garbage from the model ------------------------------------------------------------

#: undecodable: each counts as one protocol error and is dropped
UNDECODABLE: list[str | bytes] = [
    "not json",
    b"\x00\x9f binary frame",
    "[]",
    '{"type": "response.output_audio.delta"}',  # a known event without its fields
    '{"type": "response.output_audio.delta", "response_id": "r", "item_id": "i",'
    ' "output_index": 0, "content_index": 0, "delta": null}',
    '{"type": "input_audio_buffer.speech_started", "audio_start_ms": "soon", "item_id": "x"}',
    '{"type": "error", "error": {"type": "server_error"}}',  # no message
    '{"type": "x", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}",
]
#: decodable, and nothing callbridge acts on: ignored, not counted
IGNORED = [
    '{"type": "response.future_event", "event_id": "event_9", "whatever": {"a": 1}}',
    '{"type": "rate_limits.updated", "event_id": "event_8", "rate_limits": []}',
]


async def test_garbage_from_the_model_is_counted_dropped_and_the_call_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def garbage(server_end: Any) -> None:
        for at in (0.3, 2.0):  # mid-greeting (still streaming), and in a quiet moment
            await trio.sleep_until(start + at)
            for frame in [*UNDECODABLE, *IGNORED]:
                await server_end.send(frame)

    start = trio.current_time()
    local = LocalRealtimeServer(default_reply_ms=1500, speedup=1.25)
    model = Scripted(local, garbage)
    caller = TwilioCaller(utterances=[Utterance(at=3.0, duration=0.6)], hangup_at=7.0)
    run = await simulate(model, caller)
    stats = run.result.stats
    assert run.result.reason is EndReason.CALLER_HANGUP
    assert stats.model_connections == 1  # garbage is no reason to reconnect
    assert stats.protocol_errors == 2 * len(UNDECODABLE)
    assert stats.model_errors == 0  # the `error` without a message is not an error event
    details = [e.detail for e in run.events if isinstance(e, ev.ProtocolError)]
    assert len(details) == 2 * len(UNDECODABLE)
    assert all(e.source == "model" for e in run.events if isinstance(e, ev.ProtocolError))
    # audio both ways, bit-exact: the greeting and the answer, all of it
    [session] = local.sessions
    assert len(session.responses) == 2
    assert run.caller.heard_audio() == produced(session)
    assert bytes(session.input_audio) == bytes(caller.sent_audio)
    assert model_errors(session) == [] and caller.violations == []


async def test_audio_of_a_response_never_announced_is_played_as_it_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Well-formed deltas naming a response and item the model never opened (no
    `response.created`): the model is trusted on its ids, so they are played like
    any other audio. Only deltas of a response the caller interrupted are dropped
    (stale)."""
    bogus = json.dumps({"type": "response.output_audio.delta", "event_id": "event_x",
                        "response_id": "resp_bogus", "item_id": "item_bogus",
                        "output_index": 0, "content_index": 0, "delta": "AAAAAAAA"})

    async def stray(server_end: Any) -> None:
        for at in (0.05, 2.5):
            await trio.sleep_until(start + at)
            for _ in range(5):
                await server_end.send(bogus)

    start = trio.current_time()
    local = LocalRealtimeServer(default_reply_ms=1000)
    run = await simulate(Scripted(local, stray), TwilioCaller(hangup_at=4.0))
    assert run.result.reason is EndReason.CALLER_HANGUP
    stats = run.result.stats
    assert (stats.stale_deltas, stats.protocol_errors) == (0, 0)
    heard = run.caller.heard_audio()
    assert len(heard) == len(produced(local.sessions[0])) + 10 * 6  # 6 bytes each
    assert heard.endswith(b"\x00" * 5 * 6)  # the second five, alone after the greeting


# --- the session expires: `error` session_expired, then close 1001 ----------------------

SESSION_EXPIRED = json.dumps({
    "type": "error", "event_id": "event_CxQ1",
    "error": {"type": "invalid_request_error", "code": "session_expired",
              "message": "Your session hit the maximum duration of 60 minutes.",
              "param": None, "event_id": None}})


async def test_session_expired_then_close_1001_reconnects_and_the_call_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What the API does at its 60-minute limit, here 6 s in (after the greeting):
    the error is counted, the close reconnects at once (the session was healthy),
    the new session gets the conversation so far, and the caller's next question
    is answered there."""

    async def expire(server_end: Any) -> None:
        await trio.sleep_until(start + 6.0)
        await server_end.send(SESSION_EXPIRED)
        await server_end.aclose(1001, "going away")

    def remembers(turn: Any) -> Reply:
        said = [text for role, text in turn.messages if role == "assistant"]
        return Reply(audio=tone(600, hz=600), transcript=f"As I said: {said[-1]}")

    start = trio.current_time()
    local = LocalRealtimeServer(scripted_brain([
        Reply(audio=tone(1000), transcript="Your order number is 4417."), remembers]))
    model = Scripted(local, expire)
    caller = TwilioCaller(utterances=[Utterance(at=8.0, duration=0.6)], hangup_at=11.0)
    run = await simulate(model, caller)
    assert run.result.reason is EndReason.CALLER_HANGUP
    assert model.close_codes[0] == 1001
    [error] = [e for e in run.events if isinstance(e, ev.ModelError)]
    assert (error.code, error.message) == (
        "session_expired", "Your session hit the maximum duration of 60 minutes.")
    assert run.result.stats.model_errors == 1
    connected = [e.at - start for e in run.events if isinstance(e, ev.ModelConnected)]
    assert connected[0] == 0.0 and connected[1] == pytest.approx(6.0)  # at once
    first, second = local.sessions
    types = sent_types(second)
    assert types[:2] == ["session.update", "conversation.item.create"]
    assert "response.create" not in types  # no second greeting
    restored = json.loads(second.received[1])["item"]
    assert restored["content"] == [{"type": "output_text", "text": "Your order number is 4417."}]
    assert [r.transcript for r in second.responses] == ["As I said: Your order number is 4417."]
    assert bytes(first.input_audio) + bytes(second.input_audio) == bytes(caller.sent_audio)
    assert caller.violations == [] and not caller.closed_by_server


# --- a fatal error mid-call -----------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(rt.FATAL_ERRORS))
async def test_a_fatal_error_mid_call_ends_it_without_a_reconnect(
    autojump_clock: trio.testing.MockClock, code: str,
) -> None:
    async def fatal(server_end: Any) -> None:
        await trio.sleep_until(start + 2.0)
        await server_end.send(json.dumps({
            "type": "error", "event_id": "event_1",
            "error": {"type": "insufficient_quota" if code == "insufficient_quota"
                      else "invalid_request_error", "code": code, "message": "No."}}))

    start = trio.current_time()
    local = LocalRealtimeServer(default_reply_ms=1000)
    caller = TwilioCaller(hangup_at=30.0)
    run = await simulate(Scripted(local, fatal), caller)
    assert (run.result.reason, run.result.detail) == (EndReason.MODEL_ERROR, f"{code}: No.")
    [end] = [e for e in run.events if isinstance(e, ev.End)]
    assert end.at - start < 2.1  # at once, not after any retry
    assert [s.closed for s in local.sessions] == [True]  # one session, closed
    assert caller.closed_by_server  # without REST credentials: the stream closes


# --- cancelled while the model connects ----------------------------------------------------


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in `exc`, out of any exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


async def test_cancelling_run_call_during_the_model_connect_leaks_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The application cancels the call while the model's connect is under way:
    `run_call` raises Cancelled (in an exception group; the canceller's scope catches
    it) and nothing else,
    the backend's connect is unwound, and the live `Call` says it has no result. The
    Twilio socket is its owner's (hypercorn closes it when the handler returns)."""
    unwound: list[str] = []

    class Connecting:
        @asynccontextmanager
        async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
            try:
                await trio.sleep_forever()
            finally:
                unwound.append("connect")
            yield  # unreachable: the connect never completes

    caller = TwilioCaller(hangup_at=60.0)
    twilio_end, bridge_end = memory_socket_pair()
    raised: list[BaseException] = []

    async def the_call(task_status: trio.TaskStatus[Any]) -> None:
        try:
            await run_call(bridge_end, backend=Connecting(), agent=GREETER,
                           task_status=task_status)
        except BaseException as exc:
            raised.append(exc)
            raise

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        with trio.move_on_after(2.0) as scope:
            async with trio.open_nursery() as inner:
                live = await inner.start(the_call)
        assert bridge_end.close_code is None  # not closed by run_call: its owner's to close
        caller.hang_up()
    assert scope.cancelled_caught
    # Cancelled, and only that (grouped, as a cancelled nursery raises it)
    [exc] = raised
    assert leaves(exc) and all(type(e) is trio.Cancelled for e in leaves(exc))
    assert unwound == ["connect"]
    assert live.result is None
    with pytest.raises(RuntimeError, match="the call failed"):
        await live.wait_ended()


async def test_cancelling_run_call_mid_handshake_closes_the_model_socket() -> None:
    """The same over a real socket: the model's endpoint took the upgrade request and
    has not answered; cancelling the call closes the connection (the endpoint reads
    its end), and no socket is left for the garbage collector."""
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        got_request = trio.Event()
        after_request: list[bytes] = []

        async def endpoint() -> None:
            conn, _ = await listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += await conn.recv(4096)
                got_request.set()
                while chunk := await conn.recv(4096):  # never answers; reads to the end
                    after_request.append(chunk)
                after_request.append(b"<eof>")

        backend = OpenAIRealtime(api_key="sk-test-not-a-key", connect_timeout=60,
                                 base_url=f"http://127.0.0.1:{port}/v1")
        caller = TwilioCaller(hangup_at=120.0)
        twilio_end, bridge_end = memory_socket_pair()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(endpoint)
                nursery.start_soon(caller.run, twilio_end)
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as call:
                        call.start_soon(partial(run_call, bridge_end, backend=backend,
                                                agent=GREETER))
                        await got_request.wait()
                        scope.cancel()
                caller.hang_up()
    gc.collect()  # a socket left open would warn here, an error under filterwarnings
    assert scope.cancelled_caught
    assert after_request == [b"<eof>"]
