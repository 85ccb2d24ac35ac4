"""Turning calls away: `CALLBRIDGE_MAX_CALLS` per worker, and a drain (`app.drain()`).

The service as an ASGI app, in memory on `MockClock`, behind the local Twilio: calls
are placed through its REST API, which POSTs the service's signed webhook
(`httpx.ASGITransport`) and opens the signed media stream (`asgi_stream`); the
agent talks through the local model. What must hold: a call over the limit hears
the busy line and is hung up (the TwiML byte for byte the twilio SDK's), a stream
over the limit is closed with 1013 before any model session opens and Twilio goes
on without an error, and a drain lets the live calls go on, then ends the ones left
with the drain line heard in full. The real process on SIGTERM: test_service_drain.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from callbridge import twiml
from callbridge.app import CallbridgeApp, create_app
from callbridge.config import DEFAULT_BUSY_LINE, DEFAULT_DRAIN_LINE, ConfigError, Settings
from callbridge.outbound import place_call
from callbridge.testing import (
    LocalRealtimeServer,
    LocalTwilio,
    OutboundCall,
    PlatformCall,
    Reply,
    Turn,
    TwilioCaller,
    asgi_stream,
)
from callbridge.twilio_rest import TwilioCredentials, TwilioRest

PUBLIC = "https://bridge.example.com"
STREAM_URL = "wss://bridge.example.com/media-stream"
BUSY = "All our agents are busy. Please call back later."
LINE = "We are closing this line now. Please call back. Goodbye."
KEY = {"OPENAI_API_KEY": "sk-test"}
TOKEN = "local-twilio-token"


def busy_twiml(line: str) -> str:
    expected = VoiceResponse()
    expected.say(line)
    expected.hangup()
    return str(expected)


def brain() -> Callable[[Turn], Reply]:
    """A greeting, then whatever the agent is told to say: audio no other reply
    shares (noise seeded by the reply's number), so what a caller heard is found."""
    count = itertools.count()

    def reply(turn: Turn) -> Reply:
        n = next(count)
        return Reply(audio=random.Random(n).randbytes(1500 * 8),
                     transcript=turn.instructions or "")

    return reply


# --- settings ---------------------------------------------------------------------------


def test_the_settings_and_their_defaults() -> None:
    s = Settings.from_env(KEY)
    assert (s.max_calls, s.busy_line, s.drain_s, s.drain_line) == (
        None, DEFAULT_BUSY_LINE, 20.0, DEFAULT_DRAIN_LINE)
    s = Settings.from_env(KEY | {"CALLBRIDGE_MAX_CALLS": " 25 ", "CALLBRIDGE_DRAIN_S": "2.5",
                                 "CALLBRIDGE_BUSY_LINE": BUSY, "CALLBRIDGE_DRAIN_LINE": LINE})
    assert (s.max_calls, s.busy_line, s.drain_s, s.drain_line) == (25, BUSY, 2.5, LINE)
    assert Settings.from_env(KEY | {"CALLBRIDGE_MAX_CALLS": "", "CALLBRIDGE_DRAIN_S": "0",
                                    "CALLBRIDGE_BUSY_LINE": " "}) == Settings.from_env(
        KEY | {"CALLBRIDGE_DRAIN_S": "0"})


@pytest.mark.parametrize(("name", "value"), [
    ("CALLBRIDGE_MAX_CALLS", "0"), ("CALLBRIDGE_MAX_CALLS", "-3"),
    ("CALLBRIDGE_MAX_CALLS", "1.5"), ("CALLBRIDGE_MAX_CALLS", "ten"),
    ("CALLBRIDGE_MAX_CALLS", "²"),
    ("CALLBRIDGE_DRAIN_S", "-1"), ("CALLBRIDGE_DRAIN_S", "nan"), ("CALLBRIDGE_DRAIN_S", "inf"),
    ("CALLBRIDGE_DRAIN_S", "a minute"),
    ("CALLBRIDGE_BUSY_LINE", "beep \x07"), ("CALLBRIDGE_DRAIN_LINE", "bye \x00"),
])
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}"):
        Settings.from_env(KEY | {name: value})


# --- the platform, in memory ------------------------------------------------------------


@attrs.define
class Platform:
    twilio: LocalTwilio
    service: CallbridgeApp
    model: LocalRealtimeServer
    rest: TwilioRest
    #: the far end of each placed call, in order
    callees: list[TwilioCaller]

    async def call(self, to: str) -> PlatformCall:
        """Place a call to the service and return it once it was answered and its
        TwiML fetched (it is on its stream, or over)."""
        placed = await place_call(self.rest, to=to, from_="+15550100", service_url=PUBLIC)
        call = self.twilio.calls[placed.sid]
        await self.twilio.wait_for(lambda: any(
            c.kind == "voice" and c.form.get("CallSid") == call.sid
            for c in self.twilio.callbacks))
        return call

    async def live(self, count: int) -> None:
        """Wait until the service runs `count` calls (virtual time: no flake)."""
        while True:
            if self.service.active_calls == count:
                return
            await trio.sleep(0.05)

    def webhook(self, call: PlatformCall) -> str:
        [answer] = [c for c in self.twilio.callbacks
                    if c.kind == "voice" and c.form.get("CallSid") == call.sid]
        assert answer.status == 200
        return answer.body


@asynccontextmanager
async def platform(**settings: Any) -> AsyncIterator[Platform]:
    """The service behind the local Twilio, in memory; the calls still live at the
    end are hung up (Twilio's REST API), and everything waited for."""
    model = LocalRealtimeServer(brain())
    callees: list[TwilioCaller] = []

    def answer(call: OutboundCall) -> TwilioCaller:
        callees.append(TwilioCaller(hangup_at=600.0, call_sid=call.sid))
        return callees[-1]

    service = create_app(
        Settings(openai_api_key="sk-test-not-a-key", twilio_auth_token=TOKEN,
                 public_url=PUBLIC, greeting="Say hello.", **settings), backend=model)
    twilio = LocalTwilio(auth_token=TOKEN, answer=answer, ring_s=0.5,
                         webhook_transport=httpx.ASGITransport(app=service),  # type: ignore[arg-type]
                         connect_stream=asgi_stream(service))
    credentials = TwilioCredentials(account_sid=twilio.account_sid,
                                    username=twilio.account_sid, password=TOKEN)
    # the service hangs up through the platform's REST API
    service.twilio_rest = TwilioRest(credentials, transport=twilio.transport)
    async with service.test_app(), twilio:
        async with TwilioRest(credentials, transport=twilio.transport) as rest:
            yield Platform(twilio, service, model, rest, callees)
            for callee in callees:
                callee.hang_up()


async def get(service: CallbridgeApp, path: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service),  # type: ignore[arg-type]
                                 base_url=PUBLIC) as client:
        response = await client.get(path)
    return response.status_code, response.json()


async def open_stream(service: CallbridgeApp) -> list[dict[str, Any]]:
    """A signed stream upgrade to the service, as Twilio makes one, then `connected`
    and `start` without a stream token: the ASGI messages the service sent."""
    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "scheme": "wss", "server": ("bridge.example.com", 443), "client": ("127.0.0.1", 0),
        "root_path": "", "subprotocols": [], "path": "/media-stream",
        "raw_path": b"/media-stream", "query_string": b"", "extensions": {},
        "headers": [(b"host", b"bridge.example.com"), (b"x-twilio-signature",
                    RequestValidator(TOKEN).compute_signature(STREAM_URL, {}).encode())],
    }
    inbox, outbox = trio.open_memory_channel[Any](math.inf)
    for message in ({"type": "websocket.connect"},
                    {"type": "websocket.receive", "text": '{"event": "connected"}'}):
        inbox.send_nowait(message)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            inbox.send_nowait({"type": "websocket.disconnect", "code": message["code"]})

    await service(scope, outbox.receive, send)
    return sent


# --- the limit ---------------------------------------------------------------------------


async def test_over_the_limit_a_call_hears_the_busy_line_and_a_stream_is_refused(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callbridge")
    async with platform(max_calls=2, busy_line=BUSY) as p:
        first, second = await p.call("+15550001"), await p.call("+15550002")
        await p.live(2)
        third = await p.call("+15550003")
        await third.ended.wait()
        # the stream of a call whose webhook came before the limit was reached
        raced = await p.rest.create_call(
            to="+15550004", from_="+15550100",
            twiml=twiml.connect_stream(STREAM_URL, parameters={"from": "+15550100"}))
        await p.twilio.calls[raced["sid"]].ended.wait()
        sent = await open_stream(p.service)
        sessions = len(p.model.sessions)
        # a call ends: there is room again
        p.callees[0].hang_up()
        await p.live(1)
        fifth = await p.call("+15550005")
        await p.live(2)
    assert "<Connect>" in p.webhook(first) and "<Connect>" in p.webhook(second)
    assert p.webhook(third) == busy_twiml(BUSY)  # byte for byte the SDK's
    assert third.said == [BUSY] and third.streams == [] and third.status == "completed"
    assert "<Connect>" in p.webhook(fifth)
    # refused at once, before any model session: accepted and closed with 1013, which
    # Twilio takes as the end of `<Connect>` (nothing after it: the call hangs up),
    # with no error (a refused upgrade is 31920)
    call = p.twilio.calls[raced["sid"]]
    [stream] = call.streams
    assert stream.error is None and call.notices == [] and call.status == "completed"
    assert stream.caller.closed_by_server and stream.caller.received == []
    assert sent == [{"type": "websocket.accept"},
                    {"type": "websocket.close", "code": 1013, "reason": "try again later"}]
    assert sessions == 2 and len(p.model.sessions) == 3  # the two, then the fifth
    refused = ("refused a media stream: live calls: 2 (CALLBRIDGE_MAX_CALLS=2) (closed 1013 "
               "before any model session)")
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()
            or "turned away" in r.getMessage()] == [  # one line per refusal
        f"turned away call {third.sid} at the webhook: live calls: 2 (CALLBRIDGE_MAX_CALLS=2)",
        refused, refused]


async def test_without_a_limit_every_call_is_let_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with platform() as p:
        calls = [await p.call(f"+1555000{i}") for i in range(5)]
        await p.live(5)
    assert all("<Connect>" in p.webhook(call) for call in calls)
    assert await get(p.service, "/ready") == (200, {"ready": True})


# --- the drain, in memory -----------------------------------------------------------------


async def test_a_drain_turns_calls_away_lets_the_live_ones_go_on_then_says_goodbye(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callbridge")
    async with platform(busy_line=BUSY, drain_s=5.0, drain_line=LINE) as p:
        leaving, staying = await p.call("+15550001"), await p.call("+15550002")
        await p.live(2)
        assert await get(p.service, "/ready") == (200, {"ready": True})
        late: list[PlatformCall] = []
        left_at: list[float] = []

        async def leave() -> None:  # a live call goes on, and ends as callers end calls
            await trio.sleep(1.0)
            p.callees[0].hang_up()
            await p.live(1)
            left_at.append(trio.current_time())

        async def call_late() -> None:
            late.append(await p.call("+15550003"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.service.drain, "a test")
            await trio.testing.wait_all_tasks_blocked()
            assert p.service.draining
            began = trio.current_time()
            ready, health = await get(p.service, "/ready"), await get(p.service, "/")
            sent = await open_stream(p.service)
            nursery.start_soon(leave)
            nursery.start_soon(call_late)
        drained_at = trio.current_time()
        assert await get(p.service, "/ready") == (503, {"ready": False, "draining": True})
        await late[0].ended.wait()
    assert ready == (503, {"ready": False, "draining": True})
    assert health == (200, {"status": "ok", "active_calls": 2, "draining": True})
    assert p.webhook(late[0]) == busy_twiml(BUSY) and late[0].said == [BUSY]
    assert sent[-1] == {"type": "websocket.close", "code": 1013, "reason": "try again later"}
    assert len(p.model.sessions) == 2
    assert left_at[0] - began < 5.0 <= drained_at - began  # (virtual time)
    # the caller who left heard no goodbye; the other one heard it in full, after the
    # greeting, and then Twilio was told to hang up
    by_callee = {c.call_sid: c for c in p.callees}
    quiet, told = (session_of(p.model, by_callee[c.sid]) for c in (leaving, staying))
    assert [r.transcript for r in quiet.responses] == ["Say hello."]
    assert [r.transcript for r in told.responses] == ["Say hello.", f"Say exactly this: {LINE}"]
    heard = by_callee[staying.sid].heard_audio()
    assert heard == b"".join(bytes(told.produced[str(r.item_id)]) for r in told.responses)
    assert p.twilio.hangups == [staying.sid] and staying.status == "completed"
    assert by_callee[staying.sid].finished.is_set()  # `stop`, then the close
    steps = [r.getMessage() for r in caplog.records if r.name == "callbridge.app"]
    steps = [s for s in steps if s.startswith(("drain", "call CA")) and "ended:" not in s
             and not s.endswith(("initiated", "ringing", "in-progress", "completed"))]
    assert steps[:-1] == [
        "draining (a test): live calls: 2; new calls are turned away, GET /ready answers 503; "
        "the live calls may go on for 5 s",
        "drain: 5 s passed, live calls left: 1; the agent says goodbye to each, then it "
        "hangs up",
        f"call {staying.sid}: the drain ends it with its goodbye",
    ]
    assert steps[-1].startswith("drained in ") and steps[-1].endswith(" s: no call is live")


def session_of(model: LocalRealtimeServer, callee: TwilioCaller) -> Any:
    """The model session whose audio this callee heard."""
    heard = callee.heard_audio()
    [session] = [s for s in model.sessions
                 if heard.startswith(bytes(next(iter(s.produced.values()))))]
    return session


async def test_a_drain_with_no_call_is_over_at_once_and_a_second_one_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with platform(drain_s=30.0) as p:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.service.drain, "first")
            nursery.start_soon(p.service.drain, "second")
        assert p.service.draining and trio.current_time() < 30.0
        status, health = await get(p.service, "/")
    assert (status, health) == (200, {"status": "ok", "active_calls": 0, "draining": True})


async def test_the_health_check_counts_the_live_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with platform(max_calls=1) as p:
        assert await get(p.service, "/") == (200, {"status": "ok", "active_calls": 0})
        await p.call("+15550001")
        await p.live(1)
        assert await get(p.service, "/") == (200, {"status": "ok", "active_calls": 1})


async def test_the_health_check_says_nothing_of_draining_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = create_app(Settings(openai_api_key="sk-test"))
    async with service.test_app():
        assert await get(service, "/") == (200, {"status": "ok", "active_calls": 0})
        assert json.dumps((await get(service, "/ready"))[1]) == '{"ready": true}'


async def test_a_stream_let_in_counts_at_once_before_its_upgrade_is_answered() -> None:
    """Two upgrades at the limit, the second checked while the first is still being
    answered (an await away from its call): the second is turned away."""
    app = create_app(Settings(openai_api_key="sk-test", max_calls=1))
    assert app.refuse_stream("", {}) is None  # let in: counted now, not once it runs
    assert app.refuse_stream("", {}) == 1013
