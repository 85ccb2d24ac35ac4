"""Only Twilio gets in, through a real hypercorn server on loopback: signed webhooks,
signed stream upgrades, the stream token, the message size cap, and no secret in
any log, error or TwiML. Signatures come from the twilio SDK's `RequestValidator`."""

from __future__ import annotations

import gc
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import trio
from test_service import Caller, Service, http, running
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callbridge.streamtoken import PARAMETER
from callbridge.testing import LocalRealtimeServer, TwilioCaller, Utterance, dial_twilio_stream

# trio-websocket's client leaves its socket to the garbage collector when the server
# refuses or closes first, which these tests make it do on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.filterwarnings("ignore::ResourceWarning")]


@pytest.fixture(autouse=True)
def _collect_stray_sockets() -> Iterator[None]:
    yield
    gc.collect()  # while the filters above still apply


TOKEN = "f3c1a9e2b7d84c6a9e0b1c2d3e4f5a6b"
API_KEY = "sk-test-not-a-key"
PUBLIC = "https://bridge.example.com"
SDK = RequestValidator(TOKEN)
CALL_SID = "CA" + "a1" * 16
FORM = {"CallSid": CALL_SID, "AccountSid": "AC" + "b2" * 16, "From": "+15550100",
        "To": "+15550199", "CallStatus": "ringing"}
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
STREAM_SIGNATURE = SDK.compute_signature("wss://bridge.example.com/media-stream", {})


def guarded(model: LocalRealtimeServer, front_door: bool, **settings: object) -> object:
    return running(model, front_door=front_door, twilio_auth_token=TOKEN, public_url=PUBLIC,
                   **settings)


async def webhook(svc: Service, form: dict[str, str], signature: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    status, body = await http(svc.http.removeprefix("http://"), "POST", "/incoming-call",
                              urlencode(form).encode(), headers)
    return status, body.decode()


def stream_parameters(twiml: str) -> dict[str, str]:
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://bridge.example.com/media-stream"
    return {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}


def caller_for(parameters: dict[str, str], call_sid: str = CALL_SID) -> TwilioCaller:
    # hangs up once the agent has been heard, however long that takes (on a loaded
    # machine, long): hangup_at only bounds a call that never gets an answer
    return TwilioCaller(utterances=[Utterance(at=0.2, duration=0.4)], hangup_at=20.0,
                        hangup_after_audio=0.2, call_sid=call_sid, custom_parameters=parameters)


async def test_signed_webhook_and_stream_get_a_call(caplog: pytest.LogCaptureFixture,
                                                    front_door: bool) -> None:
    caplog.set_level(logging.DEBUG)
    model = LocalRealtimeServer()
    with trio.fail_after(30):
        async with guarded(model, front_door, greeting="Hello.") as svc:
            status, twiml = await webhook(svc, FORM, SDK.compute_signature(
                f"{PUBLIC}/incoming-call", FORM))
            assert status == 200, twiml
            parameters = stream_parameters(twiml)
            caller = caller_for(parameters)
            await dial_twilio_stream(caller, svc.ws, X_Twilio_Signature=STREAM_SIGNATURE)
            await model.wait_for_sessions(lambda sessions: bool(sessions) and sessions[0].closed)
    assert set(parameters) == {"from", "to", "call_sid", PARAMETER}
    assert len(svc.handshakes) == 1 and caller.heard_audio() and caller.violations == []
    for secret in (TOKEN, API_KEY):
        assert secret not in twiml and secret not in caplog.text


async def test_unsigned_or_wrongly_signed_webhooks_get_403(
        caplog: pytest.LogCaptureFixture, front_door: bool) -> None:
    good = SDK.compute_signature(f"{PUBLIC}/incoming-call", FORM)
    cases = [
        (None, FORM),
        ("", FORM),
        (good, FORM | {"To": "+15559999"}),  # a parameter changed in flight
        (SDK.compute_signature("http://127.0.0.1/incoming-call", FORM), FORM),  # wrong URL
        (RequestValidator("wrong-token").compute_signature(f"{PUBLIC}/incoming-call", FORM),
         FORM),
    ]
    with trio.fail_after(30):
        async with guarded(LocalRealtimeServer(), front_door) as svc:
            for signature, form in cases:
                status, body = await webhook(svc, form, signature)
                assert (status, body) == (403, "invalid Twilio signature\n"), signature
    assert "refused a webhook" in caplog.text and TOKEN not in caplog.text


async def test_unsigned_or_wrongly_signed_upgrades_get_403_and_no_model(front_door: bool) -> None:
    wrong = SDK.compute_signature("wss://evil.example.com/media-stream", {})
    model = LocalRealtimeServer()
    with trio.fail_after(30):
        async with guarded(model, front_door) as svc:
            host = svc.http.removeprefix("http://")
            for extra in [{}, {"X-Twilio-Signature": wrong},
                          {"X-Twilio-Signature": "not base64"}]:
                status, _ = await http(host, "GET", "/media-stream", b"", UPGRADE | extra)
                assert status == 403, extra
            status, _ = await http(host, "GET", "/", b"")
            assert status == 200  # the server carries on
    assert svc.handshakes == [] and model.sessions == []


async def test_without_the_stream_token_no_model_session_is_opened(front_door: bool) -> None:
    model = LocalRealtimeServer()
    with trio.fail_after(30):
        async with guarded(model, front_door) as svc:
            _, twiml = await webhook(svc, FORM, SDK.compute_signature(
                f"{PUBLIC}/incoming-call", FORM))
            token = stream_parameters(twiml)[PARAMETER]
            refused = [
                caller_for({}),  # no token
                caller_for({PARAMETER: token[:-2] + "AA"}),  # tampered
                caller_for({PARAMETER: token}, call_sid="CA" + "c3" * 16),  # another call
            ]
            for caller in refused:
                await dial_twilio_stream(caller, svc.ws, X_Twilio_Signature=STREAM_SIGNATURE)
            first = caller_for({PARAMETER: token})
            await dial_twilio_stream(first, svc.ws, X_Twilio_Signature=STREAM_SIGNATURE)
            replay = caller_for({PARAMETER: token})
            await dial_twilio_stream(replay, svc.ws, X_Twilio_Signature=STREAM_SIGNATURE)
    for caller in [*refused, replay]:
        assert caller.closed_by_server and caller.received == []
    assert first.heard_audio() and not first.closed_by_server
    assert len(svc.handshakes) == 1 and len(model.sessions) == 1  # only the first call's


async def test_allowing_unsigned_upgrades_still_needs_the_token(front_door: bool) -> None:
    model = LocalRealtimeServer()
    with trio.fail_after(30):
        async with guarded(model, front_door, allow_unsigned_streams=True) as svc:
            host = svc.http.removeprefix("http://")
            wrong = SDK.compute_signature("wss://evil.example.com/media-stream", {})
            status, _ = await http(host, "GET", "/media-stream", b"",
                                   UPGRADE | {"X-Twilio-Signature": wrong})
            assert status == 403  # a wrong signature is refused either way
            stranger = caller_for({})
            await dial_twilio_stream(stranger, svc.ws)  # no header: let in, then refused
            _, twiml = await webhook(svc, FORM, SDK.compute_signature(
                f"{PUBLIC}/incoming-call", FORM))
            caller = caller_for(stream_parameters(twiml))
            await dial_twilio_stream(caller, svc.ws)
    assert stranger.closed_by_server and stranger.received == []
    assert caller.heard_audio() and len(model.sessions) == 1


async def test_an_oversized_frame_closes_that_call_with_1009_only(front_door: bool) -> None:
    from trio_websocket import open_websocket_url

    model = LocalRealtimeServer()
    with trio.fail_after(30):
        async with guarded(model, front_door, allow_unsigned_streams=True) as svc:
            tokens = []
            for _ in range(2):
                _, twiml = await webhook(svc, FORM, SDK.compute_signature(
                    f"{PUBLIC}/incoming-call", FORM))
                tokens.append(stream_parameters(twiml)[PARAMETER])
            other_closed = trio.Event()

            class Bystander(Caller):  # on the line until the other call is closed
                def done(self) -> bool:
                    return other_closed.is_set() and bool(self.heard)

            bystander = Bystander(custom_parameters={PARAMETER: tokens[0]}, call_sid=CALL_SID)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dial_twilio_stream, bystander, svc.ws)
                await model.wait_for_sessions(bool)  # the bystander's call is up
                async with open_websocket_url(svc.ws, connect_timeout=5,
                                              disconnect_timeout=2) as ws:
                    start = {"event": "start", "sequenceNumber": "1", "streamSid": "MZ9",
                             "start": {"streamSid": "MZ9", "accountSid": "AC1",
                                       "callSid": CALL_SID, "tracks": ["inbound"],
                                       "customParameters": {PARAMETER: tokens[1]},
                                       "mediaFormat": {"encoding": "audio/x-mulaw",
                                                       "sampleRate": 8000, "channels": 1}}}
                    await ws.send_message(json.dumps(start))
                    await ws.send_message("x" * (1024 * 1024))
                    while not ws.closed:
                        try:
                            await ws.get_message()
                        except Exception:
                            break
                    assert ws.closed is not None and ws.closed.code == 1009
                other_closed.set()
    assert bystander.heard_audio() and not bystander.closed_by_server
