"""Only Twilio gets in: `TwilioGuard`'s checks, and `run_call`'s `authorize` hook.

Signatures are made with the twilio SDK's `RequestValidator`, the reference peer.
"""

from __future__ import annotations

import pytest
import trio
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callbridge import Agent, CallEvent, CallRefused, memory_socket_pair, run_call
from callbridge import twilio as tw
from callbridge._guard import TwilioGuard
from callbridge.streamtoken import PARAMETER
from callbridge.testing import LocalRealtimeServer, TwilioCaller, Utterance

TOKEN = "0123456789abcdef0123456789abcdef"
SDK = RequestValidator(TOKEN)
WEBHOOK = "https://bridge.example.com/incoming-call"
STREAM = "wss://bridge.example.com/media-stream"
FORM = {"CallSid": "CA1", "From": "+15550100", "To": "+15550199", "AccountSid": "AC1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def start(call_sid: str = "CA1", **parameters: str) -> tw.Start:
    return tw.Start(stream_sid="MZ1", account_sid="AC1", call_sid=call_sid,
                    custom_parameters=parameters)


def test_webhook_signatures() -> None:
    guard = TwilioGuard(TOKEN)
    good = SDK.compute_signature(WEBHOOK, FORM)
    form = {k: [v] for k, v in FORM.items()}
    assert guard.webhook_ok(WEBHOOK, good, form=form)
    assert guard.webhook_ok(WEBHOOK.replace(".com/", ".com:443/"), good, form=form)
    assert not guard.webhook_ok(WEBHOOK, None, form=form)
    assert not guard.webhook_ok(WEBHOOK, "", form=form)
    assert not guard.webhook_ok(WEBHOOK, good, form=form | {"To": ["+15550000"]})
    assert not guard.webhook_ok("http://bridge.example.com/incoming-call", good, form=form)
    assert not TwilioGuard("another-token-another-token").webhook_ok(WEBHOOK, good, form=form)


def test_json_webhook_signature_covers_the_body() -> None:
    import hashlib

    body = b'{"CallSid": "CA1"}'
    url = f"{WEBHOOK}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    good = SDK.compute_signature(url, {})
    guard = TwilioGuard(TOKEN)
    assert guard.webhook_ok(url, good, body=body)
    assert not guard.webhook_ok(url, good, body=body + b" ")


@pytest.mark.parametrize("allow_unsigned", [False, True])
def test_upgrade_signatures(allow_unsigned: bool) -> None:
    guard = TwilioGuard(TOKEN, allow_unsigned_streams=allow_unsigned)
    good = SDK.compute_signature(STREAM, {})
    assert guard.upgrade_ok(STREAM, good)
    assert guard.upgrade_ok("https://bridge.example.com/media-stream", good)  # as a proxy says
    assert not guard.upgrade_ok(STREAM, SDK.compute_signature(WEBHOOK, {}))
    assert not guard.upgrade_ok(STREAM, "")
    # only the header's absence is negotiable
    assert guard.upgrade_ok(STREAM, None) is allow_unsigned


def test_stream_token_round_trip_replay_and_expiry() -> None:
    clock = Clock()
    guard = TwilioGuard(TOKEN, clock=clock)
    token = guard.stream_token("CA1")
    assert TOKEN not in token
    guard.authorize(start(**{PARAMETER: token}))
    with pytest.raises(CallRefused, match="replayed"):
        guard.authorize(start(**{PARAMETER: token}))
    with pytest.raises(CallRefused, match="bad signature"):
        guard.authorize(start("CA2", **{PARAMETER: guard.stream_token("CA1")}))
    with pytest.raises(CallRefused, match="missing"):
        guard.authorize(start())
    late = guard.stream_token("CA1")
    clock.now += 121
    with pytest.raises(CallRefused, match="expired"):
        guard.authorize(start(**{PARAMETER: late}))
    # another worker (another guard, same auth token) accepts a token it did not issue
    TwilioGuard(TOKEN, clock=clock).authorize(start(**{PARAMETER: guard.stream_token("CA1")}))


def test_the_guard_never_shows_the_token() -> None:
    guard = TwilioGuard(TOKEN)
    assert TOKEN not in repr(guard)


async def test_a_refused_stream_never_opens_a_model_session(autojump_clock: object) -> None:
    def refuse(message: tw.Start) -> None:
        raise CallRefused(f"no ticket for {message.call_sid}")

    model = LocalRealtimeServer()
    caller = TwilioCaller(utterances=[Utterance(at=0.0, duration=1.0)], hangup_at=3)
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(bridge_end, agent=Agent(greeting="Hi."), backend=model,
                                authorize=refuse)
    assert result.reason == "refused"
    assert result.detail == f"no ticket for {caller.call_sid}"
    assert model.sessions == []
    assert caller.closed_by_server and twilio_end.close_code == 1008
    assert caller.received == []


async def test_an_authorized_stream_connects_after_start(autojump_clock: object) -> None:
    seen: list[float] = []
    model = LocalRealtimeServer()
    caller = TwilioCaller(start_delay=1.0, hangup_at=2)
    twilio_end, bridge_end = memory_socket_pair()
    events: list[CallEvent] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(bridge_end, agent=Agent(greeting="Hi."), backend=model,
                                authorize=lambda m: seen.append(trio.current_time()),
                                on_event=events.append)
    assert result.reason == "caller_hangup" and len(model.sessions) == 1
    [connected] = [e.at for e in events if e.kind == "model_connected"]
    assert seen == [1.0] and connected >= 1.0
    assert caller.heard_audio()
