"""LocalTwilio, the fake Twilio platform, driven by the real `twilio` SDK: it accepts
what the SDK sends and answers what the SDK parses, ends and redirects the synthetic
caller's stream as Twilio does, and places calls with signed webhooks, status and
AMD callbacks (checked with the SDK's `RequestValidator`).

In memory on `MockClock` unless a test says loopback; loopback tests run on the real
clock, bounded by `fail_after`, and check what happened, never how long it took.
"""

from __future__ import annotations

import base64
import gc
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import trio
from twilio.base.exceptions import TwilioRestException  # type: ignore[import-untyped]
from twilio.http import HttpClient  # type: ignore[import-untyped]
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from callbridge import run_call, twiml
from callbridge._sockets import MessageSocket, TrioWebSocket
from callbridge.app import create_app
from callbridge.config import Settings
from callbridge.testing import (
    LocalRealtimeServer,
    LocalTwilio,
    OutboundCall,
    TwilioCaller,
    Utterance,
    answering_machine,
    asgi_stream,
    memory_socket_pair,
    memory_stream,
    simulate_call,
)

ACCOUNT = "AC" + "0" * 32
TOKEN = "local-twilio-token"
VALIDATOR = RequestValidator(TOKEN)
STREAM_URL = "wss://bridge.example.com/media-stream"
APP = "https://app.example.com"


class InMemoryHttpClient(HttpClient):  # type: ignore[misc]
    """The SDK's requests, handed to the fake synchronously (no socket, so MockClock
    works): the form and Basic auth exactly as `TwilioHttpClient` would send them."""

    def __init__(self, platform: LocalTwilio) -> None:
        super().__init__(logging.getLogger("twilio.in_memory"), is_async=False)
        self.platform = platform

    def request(self, method: str, url: str, params: Any = None, data: Any = None,
                headers: Any = None, auth: Any = None, timeout: Any = None,
                allow_redirects: bool = False) -> Response:
        request = httpx.Request(method, url, params=params, data=data, headers=headers)
        if auth:
            request.headers["Authorization"] = "Basic " + base64.b64encode(
                f"{auth[0]}:{auth[1]}".encode()).decode()
        answer = self.platform.handle(method, request.url.path, dict(request.headers),
                                      request.read())
        return Response(answer.status, answer.body.decode(), dict(answer.headers))


def sdk(platform: LocalTwilio, user: str = ACCOUNT, password: str = TOKEN,
        account: str = ACCOUNT) -> Any:
    return Client(user, password, account_sid=account, http_client=InMemoryHttpClient(platform))


class App:
    """The application's side of the callbacks, in memory: records every request
    and answers TwiML by path."""

    def __init__(self, pages: dict[str, str] | None = None) -> None:
        self.pages = pages or {}
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        page = self.pages.get(request.url.path)
        if page is None:
            return httpx.Response(204)
        return httpx.Response(200, text=page, headers={"Content-Type": "text/xml"})


def signed(callback: Any) -> bool:
    return bool(VALIDATOR.validate(callback.url, callback.form, callback.signature))


def call_later(seconds: float, function: Callable[[], Any], into: list[Any]) -> Any:
    async def run() -> None:
        await trio.sleep(seconds)
        into.append(function())
    return run


# --- the caller's side ---------------------------------------------------------------


async def test_hang_up_sends_stop_at_the_next_frame_then_closes(autojump_clock: Any) -> None:
    caller = TwilioCaller(hangup_at=30.0)
    twilio_end, bridge_end = memory_socket_pair()
    received = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        await trio.sleep(1.0)
        hung_up_at = trio.current_time()
        caller.hang_up()
        while (text := await bridge_end.receive()) is not None:
            assert isinstance(text, str)
            received.append((trio.current_time(), json.loads(text)["event"]))
    assert received[-1][1] == "stop" and received[-1][0] <= hung_up_at + 0.02
    assert caller.finished.is_set() and not caller.closed_by_server
    caller.hang_up()  # once over, nothing happens


# --- REST on a running inbound call ----------------------------------------------------


async def test_status_completed_ends_an_attached_call_with_stop(autojump_clock: Any) -> None:
    async with LocalTwilio() as platform:
        caller = TwilioCaller(hangup_at=30.0)
        call = platform.attach(caller)
        client = sdk(platform)
        updated: list[Any] = []
        started_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_later(2.0, lambda: client.calls(caller.call_sid).update(
                status="completed"), updated))
            simulated = await simulate_call(caller)
            ended_at = trio.current_time()
        await call.ended.wait()
        with pytest.raises(TwilioRestException) as again:
            client.calls(caller.call_sid).update(status="completed")
    assert simulated.result.reason == "caller_hangup"  # Twilio's `stop` reached the bridge
    assert ended_at - started_at < 3.0 and not caller.closed_by_server
    assert updated[0].status == "completed" and updated[0].sid == caller.call_sid
    assert platform.hangups == [caller.call_sid] and call.statuses == ["in-progress", "completed"]
    request = platform.requests[0]
    assert (request.method, request.path, request.form, request.user, request.status) == (
        "POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{caller.call_sid}.json",
        (("Status", "completed"),), ACCOUNT, 200)
    assert (again.value.status, again.value.code) == (400, 21220)


@pytest.mark.parametrize("outcome", ["completed", "busy", "no-answer"])
async def test_a_dial_redirect_ends_the_stream_and_records_the_transfer(
        autojump_clock: Any, outcome: Any) -> None:
    app = App({"/after-dial": "<Response><Say>Goodbye.</Say></Response>"})
    dial = (f'<Response><Dial action="{APP}/after-dial" callerId="+15550100" timeout="20">'
            '<Number>+15550142</Number></Dial></Response>')
    service_twiml = twiml.connect_stream(STREAM_URL).replace(
        "</Response>", f'<Redirect>{APP}/start</Redirect></Response>')
    async with LocalTwilio(webhook_transport=app.transport, dial_outcome=outcome) as platform:
        caller = TwilioCaller(hangup_at=30.0)
        call = platform.attach(caller, twiml=service_twiml)
        client = sdk(platform)
        updated: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_later(1.0, lambda: client.calls(caller.call_sid).update(
                twiml=dial), updated))
            simulated = await simulate_call(caller)
        await call.ended.wait()
    assert simulated.result.reason == "caller_hangup" and updated[0].status == "in-progress"
    [transfer] = platform.transfers
    assert (transfer.call_sid, transfer.twiml, transfer.kind, transfer.targets) == (
        caller.call_sid, dial, "number", ("+15550142",))
    assert (transfer.action, transfer.caller_id, transfer.timeout, transfer.outcome) == (
        f"{APP}/after-dial", "+15550100", 20, outcome)
    [action] = platform.callbacks
    assert action.kind == "dial-action" and action.url == f"{APP}/after-dial"
    assert action.form["DialCallStatus"] == outcome and action.form["CallSid"] == call.sid
    assert ("DialCallDuration" in action.form) == (outcome == "completed") and signed(action)
    assert call.said == ["Goodbye."] and call.status == "completed" and platform.hangups == []
    assert [r.url.path for r in app.requests] == ["/after-dial"]  # never /start: redirected


async def test_a_url_redirect_fetches_signed_twiml_and_runs_it(autojump_clock: Any) -> None:
    app = App({"/transfer": "<Response><Dial><Sip>sip:desk@pbx.example.com</Sip></Dial>"
                            "</Response>"})
    async with LocalTwilio(webhook_transport=app.transport, dial_duration_s=3.0) as platform:
        caller = TwilioCaller(hangup_at=30.0)
        call = platform.attach(caller, from_="+15550111", to="+15550122")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_later(1.0, lambda: sdk(platform).calls(
                caller.call_sid).update(url=f"{APP}/transfer", method="POST"), []))
            simulated = await simulate_call(caller)
        await call.ended.wait()
    assert simulated.result.reason == "caller_hangup"
    [fetch] = platform.callbacks
    assert (fetch.kind, fetch.method, fetch.status) == ("voice", "POST", 200) and signed(fetch)
    assert {k: fetch.form[k] for k in ("CallSid", "From", "To", "Direction", "CallStatus")} == {
        "CallSid": call.sid, "From": "+15550111", "To": "+15550122", "Direction": "inbound",
        "CallStatus": "in-progress"}
    assert app.requests[0].headers["X-Twilio-Signature"] == fetch.signature
    assert [(t.kind, t.targets, t.outcome) for t in platform.transfers] == [
        ("sip", ("sip:desk@pbx.example.com",), "completed")]
    assert call.status == "completed" and call.notices == []


# --- placing calls -------------------------------------------------------------------------


async def test_an_outbound_call_runs_the_bridge_with_callbacks_in_order(
        autojump_clock: Any) -> None:
    model = LocalRealtimeServer()
    results = []

    async def bridge(socket: MessageSocket) -> None:
        results.append(await run_call(socket, backend=model))

    answered: list[OutboundCall] = []

    def answer(call: OutboundCall) -> TwilioCaller:
        answered.append(call)
        return TwilioCaller(utterances=[Utterance(at=0.5, duration=0.8)], hangup_at=6.0)

    app = App()
    document = twiml.connect_stream(STREAM_URL, parameters={"campaign": "spring"})
    async with LocalTwilio(answer=answer, webhook_transport=app.transport,
                           connect_stream=memory_stream(bridge)) as platform:
        client = sdk(platform)
        created = client.calls.create(
            to="+15550142", from_="+15550100", twiml=document,
            status_callback=f"{APP}/status",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            machine_detection="Enable", async_amd="true",
            async_amd_status_callback=f"{APP}/amd")
        assert created.sid.startswith("CA") and len(created.sid) == 34
        assert (created.status, created.direction, created.to, created._from) == (
            "queued", "outbound-api", "+15550142", "+15550100")
        call = platform.calls[created.sid]
        await call.ended.wait()
        fetched = client.calls(created.sid).fetch()
    assert results[0].reason == "caller_hangup" and len(model.sessions) == 1
    [stream] = call.streams
    assert stream.parameters == {"campaign": "spring"} and stream.url == STREAM_URL
    assert stream.caller.custom_parameters == {"campaign": "spring"}
    assert stream.caller.call_sid == call.sid and stream.caller.stream_sid.startswith("MZ")
    assert VALIDATOR.validate(STREAM_URL, {}, stream.headers["X-Twilio-Signature"])
    assert answered[0].sid == call.sid and answered[0].machine_detection == "Enable"
    statuses = [c for c in platform.callbacks if c.kind == "status"]
    assert [c.form["CallStatus"] for c in statuses] == [
        "initiated", "ringing", "in-progress", "completed"]
    assert [c.form["SequenceNumber"] for c in statuses] == ["0", "1", "2", "3"]
    assert all(signed(c) and c.form["CallbackSource"] == "call-progress-events"
               and c.form["Direction"] == "outbound-api" and c.form["AccountSid"] == ACCOUNT
               for c in statuses)
    assert statuses[-1].form["CallDuration"] == "6"
    [amd] = [c for c in platform.callbacks if c.kind == "amd"]
    # 0.8 s of speech (under the 2.4 s threshold), then 1.2 s of silence: a human
    assert amd.form == {"AccountSid": ACCOUNT, "CallSid": call.sid, "AnsweredBy": "human",
                        "MachineDetectionDuration": "2500"} and signed(amd)
    assert (fetched.status, fetched.duration, fetched.answered_by) == ("completed", "6", "human")
    assert call.statuses == ["queued", "ringing", "in-progress", "completed"]


@pytest.mark.parametrize(("mode", "verdict", "after_ms"), [
    ("DetectMessageEnd", "machine_end_beep", "3500"),
    ("Enable", "machine_start", "2400"),
])
async def test_an_answering_machine_is_detected(autojump_clock: Any, mode: str, verdict: str,
                                               after_ms: str) -> None:
    async def listen(socket: MessageSocket) -> None:
        while await socket.receive() is not None:
            pass

    app = App()
    machines = []

    def answer(call: OutboundCall) -> TwilioCaller:
        machines.append(answering_machine(greeting_s=3.0, beep_s=0.5, message_s=2.0))
        return machines[-1]

    async with LocalTwilio(answer=answer, webhook_transport=app.transport,
                           connect_stream=memory_stream(listen)) as platform:
        created = sdk(platform).calls.create(
            to="+15550142", from_="+15550100", twiml=twiml.connect_stream(STREAM_URL),
            machine_detection=mode, async_amd="true", async_amd_status_callback=f"{APP}/amd")
        await platform.calls[created.sid].ended.wait()
    [amd] = platform.callbacks  # no StatusCallback: nothing else
    assert amd.kind == "amd" and signed(amd)
    assert (amd.form["AnsweredBy"], amd.form["MachineDetectionDuration"]) == (verdict, after_ms)
    assert platform.calls[created.sid].answered_by == verdict
    assert machines[0].beep_end == 3.5 and machines[0].message() == b""


async def test_the_answer_side_chooses_the_verdict_and_busy_ends_the_call(
        autojump_clock: Any) -> None:
    def answer(call: OutboundCall) -> Any:
        if call.to == "+15550199":
            return "busy"
        call.answered_by, call.amd_after = "fax", 1.5
        return TwilioCaller(hangup_at=3.0)

    app = App()
    async with LocalTwilio(answer=answer, webhook_transport=app.transport,
                           connect_stream=memory_stream(
                               lambda s: run_call(s, backend=LocalRealtimeServer()))) as platform:
        client = sdk(platform)
        fax = client.calls.create(to="+15550142", from_="+15550100", machine_detection="Enable",
                                  async_amd="true", async_amd_status_callback=f"{APP}/amd",
                                  twiml=twiml.connect_stream(STREAM_URL))
        busy = client.calls.create(to="+15550199", from_="+15550100",
                                   status_callback=f"{APP}/status", twiml="<Response/>")
        await platform.wait_for(lambda: all(c.ended.is_set() for c in platform.calls.values()))
    [amd] = [c for c in platform.callbacks if c.kind == "amd"]
    assert (amd.form["AnsweredBy"], amd.form["MachineDetectionDuration"]) == ("fax", "1500")
    [status] = [c for c in platform.callbacks if c.kind == "status"]
    assert status.form["CallStatus"] == "busy" and status.form["CallDuration"] == "0"
    assert platform.calls[busy.sid].statuses == ["queued", "ringing", "busy"]
    assert platform.calls[fax.sid].streams[0].caller.finished.is_set()


async def test_a_call_canceled_while_ringing_is_never_answered(autojump_clock: Any) -> None:
    answered = []
    app = App()
    async with LocalTwilio(ring_s=5.0, answer=answered.append,  # type: ignore[arg-type]
                           webhook_transport=app.transport) as platform:
        client = sdk(platform)
        created = client.calls.create(to="+15550142", from_="+15550100", url=f"{APP}/voice",
                                      status_callback=f"{APP}/status")
        await trio.sleep(1.0)
        canceled = client.calls(created.sid).update(status="canceled")
        await platform.calls[created.sid].ended.wait()
    assert canceled.status == "canceled" and answered == []
    assert [c.form["CallStatus"] for c in platform.callbacks] == ["canceled"]


async def test_an_outbound_call_through_the_service_in_memory(autojump_clock: Any) -> None:
    """The real service as an ASGI app: its webhook through `httpx.ASGITransport` (which
    runs under trio), its media stream through `asgi_stream`: signature and stream
    token checks included, all on MockClock."""
    model = LocalRealtimeServer()
    service = create_app(Settings(openai_api_key="sk-test-not-a-key", twilio_auth_token=TOKEN,
                                  public_url="https://bridge.example.com"), backend=model)
    async with service.test_app():
        callee = TwilioCaller(utterances=[Utterance(at=0.5, duration=0.6)], hangup_at=4.0)
        async with LocalTwilio(answer=lambda call: callee,
                               webhook_transport=httpx.ASGITransport(app=service),
                               connect_stream=asgi_stream(service)) as platform:
            created = sdk(platform).calls.create(
                to="+15550142", from_="+15550100",
                url="https://bridge.example.com/incoming-call")
            call = platform.calls[created.sid]
            await call.ended.wait()
    [webhook] = platform.callbacks
    assert webhook.kind == "voice" and webhook.status == 200 and "<Connect>" in webhook.body
    [stream] = call.streams
    assert stream.error is None and stream.url == STREAM_URL
    assert stream.parameters["call_sid"] == call.sid and "callbridge_token" in stream.parameters
    assert len(model.sessions) == 1 and callee.violations == []
    assert call.status == "completed" and call.notices == []


async def test_a_refused_stream_is_a_notice_and_the_document_goes_on(
        autojump_clock: Any) -> None:
    service = create_app(Settings(openai_api_key="sk-test-not-a-key",
                                  twilio_auth_token="another-token",
                                  public_url="https://bridge.example.com"),
                         backend=LocalRealtimeServer())
    document = twiml.connect_stream(STREAM_URL, after="Sorry.")
    async with service.test_app():
        async with LocalTwilio(connect_stream=asgi_stream(service)) as platform:
            created = sdk(platform).calls.create(to="+15550142", from_="+15550100",
                                                 twiml=document)
            await platform.calls[created.sid].ended.wait()
    call = platform.calls[created.sid]
    assert call.streams[0].error is not None and call.notices[0].startswith("31920")
    assert call.said == ["Sorry."] and call.status == "completed"


# --- errors, as Twilio answers them ------------------------------------------------------


def _create(**fields: Any) -> Callable[[Any], Any]:
    return lambda client: client.calls.create(**({"to": "+15550142", "from_": "+15550100",
                                                   "url": f"{APP}/voice"} | fields))


@pytest.mark.parametrize(("client_args", "operation", "status", "code"), [
    ({"password": "wrong"}, _create(), 401, 20003),
    ({"account": "AC" + "1" * 32}, _create(), 404, 20404),
    ({}, lambda client: client.calls("CA" + "f" * 32).update(status="completed"), 404, 20404),
    ({}, _create(to=""), 400, 21201),
    ({}, _create(from_=""), 400, 21213),
    ({}, _create(to="555-0142"), 400, 21211),
    ({}, _create(url=None), 400, 21205),
    ({}, _create(twiml="<Response/>"), 400, 21205),  # both Url and Twiml
    ({}, _create(twiml="<Respond/>", url=None), 400, 12100),
    ({}, _create(status_callback_event=["hungup"]), 400, 20001),
    ({}, _create(machine_detection="Yes"), 400, 20001),
])
async def test_refusals_come_in_twilios_shape(
        autojump_clock: Any, client_args: dict[str, str], operation: Callable[[Any], Any],
        status: int, code: int) -> None:
    async with LocalTwilio() as platform:
        with pytest.raises(TwilioRestException) as refused:
            operation(sdk(platform, **client_args))
    assert (refused.value.status, refused.value.code) == (status, code)
    assert platform.calls == {} and platform.requests[0].code == code


async def test_an_update_is_checked_before_it_acts(autojump_clock: Any) -> None:
    async with LocalTwilio() as platform:
        caller = TwilioCaller(hangup_at=30.0)
        call = platform.attach(caller)
        client = sdk(platform)
        for fields in ({"status": "paused"}, {"status": "completed", "twiml": "<Response/>"},
                       {"url": "ftp://app.example.com/x"}, {"twiml": "<Response><Bogus/>"
                                                                     "</Response>"}):
            with pytest.raises(TwilioRestException) as refused:
                client.calls(caller.call_sid).update(**fields)
            assert refused.value.status == 400, fields
        assert call.live and platform.hangups == []
        client.calls(caller.call_sid).update(status="completed")  # (the caller never ran)


async def test_error_bodies_are_twilios_json(autojump_clock: Any) -> None:
    async with LocalTwilio(api_keys={"SK" + "2" * 32: "key-secret"}) as platform:
        async with httpx.AsyncClient(transport=platform.transport,
                                     base_url="https://api.twilio.com") as rest:
            path = f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
            refused = await rest.post(path, data={"To": "+15550142"})
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
            assert refused.json() == {"code": 20003, "message": "Authenticate",
                                      "more_info": "https://www.twilio.com/docs/errors/20003",
                                      "status": 401}
            key = httpx.BasicAuth("SK" + "2" * 32, "key-secret")
            missing = await rest.post(f"{path[:-5]}/CA{'e' * 32}.json", auth=key,
                                      data={"Status": "completed"})
            assert missing.status_code == 404 and missing.json() == {
                "code": 20404, "more_info": "https://www.twilio.com/docs/errors/20404",
                "message": f"The requested resource {path[:-5]}/CA{'e' * 32}.json was not found",
                "status": 404}
            typo = await rest.post(path, auth=key, data={
                "To": "+15550142", "From": "+15550100", "Twiml": "<Response/>",
                "StatusCallbackEvents": "answered"})
            assert (typo.status_code, typo.json()["code"]) == (400, 20001)
            listed = await rest.get(path, auth=key)
            assert listed.status_code == 200 and listed.json()["calls"] == []
    assert [r.user for r in platform.requests] == [None, "SK" + "2" * 32, "SK" + "2" * 32,
                                                   "SK" + "2" * 32]


# --- on loopback ------------------------------------------------------------------------------


@pytest.fixture
def _collect_stray_sockets() -> Iterator[None]:
    yield
    gc.collect()  # trio-websocket leaves a refused socket to the collector


class LoopbackHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The SDK's own `requests`-based client, pointed at `LocalTwilio.serve`."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        return super().request(method, url.replace("https://api.twilio.com", self.base_url),
                               *args, **kwargs)


@pytest.mark.slow
@pytest.mark.usefixtures("_collect_stray_sockets")
async def test_on_loopback_a_placed_call_reaches_a_websocket_server() -> None:
    from trio_websocket import WebSocketRequest, serve_websocket

    upgrades: list[tuple[str, dict[str, str]]] = []
    starts: list[dict[str, Any]] = []

    async def media_server(request: WebSocketRequest) -> None:
        upgrades.append((request.path, {k.decode(): v.decode() for k, v in request.headers}))
        socket = TrioWebSocket(await request.accept())
        while (text := await socket.receive()) is not None:
            message = json.loads(text)
            if message["event"] == "start":
                starts.append(message["start"])

    app = App()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(serve_websocket, media_server, "127.0.0.1", 0, None)
            stream_url = f"wss://127.0.0.1:{listener.port}/media-stream"
            async with LocalTwilio(
                    ring_s=0.0, webhook_transport=app.transport,
                    answer=lambda call: answering_machine(greeting_s=0.6, beep_s=0.2,
                                                          message_s=0.4)) as platform:
                base_url = await nursery.start(platform.serve)
                client = Client(ACCOUNT, TOKEN, http_client=LoopbackHttpClient(base_url))
                created = await trio.to_thread.run_sync(lambda: client.calls.create(
                    to="+15550142", from_="+15550100",
                    twiml=twiml.connect_stream(stream_url, parameters={"lead": "42"}),
                    status_callback=f"{APP}/status",
                    status_callback_event=["initiated", "answered", "completed"],
                    machine_detection="DetectMessageEnd", async_amd="true",
                    async_amd_status_callback=f"{APP}/amd"))
                await platform.calls[created.sid].ended.wait()
                # the SDK over HTTP: a refusal in Twilio's shape
                with pytest.raises(TwilioRestException) as refused:
                    await trio.to_thread.run_sync(
                        lambda: client.calls(created.sid).update(status="completed"))
            nursery.cancel_scope.cancel()
    assert (refused.value.status, refused.value.code) == (400, 21220)
    assert created.status == "queued" and platform.requests[0].user == ACCOUNT
    [(path, headers)] = upgrades
    assert path == "/media-stream"
    assert VALIDATOR.validate(stream_url, {}, headers["x-twilio-signature"])
    assert starts[0]["customParameters"] == {"lead": "42"}
    assert starts[0]["callSid"] == created.sid and starts[0]["accountSid"] == ACCOUNT
    statuses = [c for c in platform.callbacks if c.kind == "status"]
    assert [(c.form["CallStatus"], c.form["SequenceNumber"]) for c in statuses] == [
        ("initiated", "0"), ("in-progress", "1"), ("completed", "2")]
    assert all(signed(c) for c in platform.callbacks)
    [amd] = [c for c in platform.callbacks if c.kind == "amd"]
    assert amd.form["AnsweredBy"] == "machine_end_beep"
    assert [dict(parse_qsl(r.content.decode()))["CallSid"] for r in app.requests] == [
        created.sid] * 4
    assert {urlsplit(str(r.url)).path for r in app.requests} == {"/status", "/amd"}
