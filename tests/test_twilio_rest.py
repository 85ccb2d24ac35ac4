"""The Twilio REST client: request shapes held to the `twilio` SDK's, retries on virtual time.

Every operation is done twice, once by the SDK (9.x) through a recording HTTP client
and once by `TwilioRest` against `httpx.MockTransport`, and the two requests must
agree on method, URL, form body (as a multimap: repeated fields count) and the
Authorization header. The SDK's request is prepared with `requests` exactly as its
own `TwilioHttpClient` prepares it, so the comparison is of the bytes each would send.
Retries run on `MockClock` (pytest-trio's `autojump_clock`): backoff is instant and
the waits are checked to the second.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import attrs
import httpx
import pytest
import requests
import trio
from twilio.http import HttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response as SDKResponse  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from callbridge import __version__
from callbridge.config import ConfigError
from callbridge.twilio_rest import (
    MAX_RETRY_DELAY,
    TwilioCredentials,
    TwilioRest,
    TwilioRestError,
    TwilioTransportError,
)

ACCOUNT = "AC" + "0123456789abcdef" * 2
CALL = "CA" + "fedcba9876543210" * 2
TOKEN = "tok-5ecret-0f-the-account"
KEY = "SK" + "1234abcd" * 4
SECRET = "key-5ecret-never-logged"
BY_TOKEN = TwilioCredentials(account_sid=ACCOUNT, username=ACCOUNT, password=TOKEN)
BY_KEY = TwilioCredentials(account_sid=ACCOUNT, username=KEY, password=SECRET)

TWIML = '<Response><Say language="fr-FR">Café &amp; croissants, 100% 😀</Say><Hangup/></Response>'
CALL_JSON = {
    "sid": CALL, "account_sid": ACCOUNT, "status": "in-progress", "to": "+15558675310",
    "from": "+15017122661", "direction": "outbound-api", "api_version": "2010-04-01",
    "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json",
}


def twilio_error(status: int, code: int, message: str, *,
                 headers: dict[str, str] | None = None, **more: Any) -> httpx.Response:
    """A response with the body Twilio sends for an error."""
    return httpx.Response(status, headers=headers, json={
        "code": code, "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status} | more)


E20404 = functools.partial(
    twilio_error, 404, 20404,
    f"The requested resource /2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json was not found")
E21220 = functools.partial(twilio_error, 400, 21220, "Call is not in-progress. Cannot redirect.")
E20503 = functools.partial(twilio_error, 503, 20503, "Service Unavailable")
E20429 = functools.partial(twilio_error, 429, 20429, "Too Many Requests")


# -- the SDK, recorded ------------------------------------------------------------

class Recorder(HttpClient):  # type: ignore[misc]
    """The SDK's pluggable HTTP client: keeps each request as `requests` would send
    it and answers with a canned response."""

    def __init__(self, status: int = 200, body: str = json.dumps(CALL_JSON)) -> None:
        super().__init__(logging.getLogger("tests.twilio_sdk"), is_async=False)
        self.status, self.body = status, body
        self.sent: list[requests.PreparedRequest] = []

    def request(self, method: str, uri: str, params: Any = None, data: Any = None,
                headers: Any = None, auth: Any = None, timeout: Any = None,
                allow_redirects: bool = False) -> SDKResponse:
        self.sent.append(requests.Request(method, uri, params=params, data=data,
                                          headers=headers, auth=auth).prepare())
        return SDKResponse(self.status, self.body)


@attrs.frozen
class Wire:
    """What matters of a request on the wire."""

    method: str
    url: str
    form: list[tuple[str, str]]  # sorted: field order carries no meaning to Twilio
    authorization: str
    content_type: str
    accept: str


def sdk_wire(prepared: requests.PreparedRequest) -> Wire:
    body = prepared.body.decode() if isinstance(prepared.body, bytes) else prepared.body or ""
    return Wire(prepared.method or "", prepared.url or "",
                sorted(parse_qsl(body, keep_blank_values=True, strict_parsing=True)),
                prepared.headers["Authorization"], prepared.headers["Content-Type"],
                prepared.headers["Accept"])


def our_wire(request: httpx.Request) -> Wire:
    return Wire(request.method, str(request.url),
                sorted(parse_qsl(request.content.decode("ascii"), keep_blank_values=True,
                                 strict_parsing=True)),
                request.headers["Authorization"], request.headers["Content-Type"],
                request.headers["Accept"])


def basic_user(authorization: str) -> str:
    scheme, _, encoded = authorization.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(encoded).decode().partition(":")[0]


# -- our client, scripted ---------------------------------------------------------

Step = httpx.Response | Exception


class Script:
    """An `httpx.MockTransport` that answers with `steps` in turn (the last one
    repeats) and keeps every request; an exception step is raised instead."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps or (httpx.Response(200, json=CALL_JSON),)
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, Exception):
            raise step
        return step

    def rest(self, credentials: TwilioCredentials = BY_TOKEN, **options: Any) -> TwilioRest:
        return TwilioRest(credentials, transport=self.transport, **options)


# -- request shapes: the SDK's, field for field -------------------------------------

SDKOperation = Callable[[Client], object]
OurOperation = Callable[[TwilioRest], Any]

OPERATIONS: dict[str, tuple[SDKOperation, OurOperation]] = {
    "hang up": (
        lambda c: c.calls(CALL).update(status="completed"),
        lambda r: r.hang_up(CALL)),
    "cancel": (
        lambda c: c.calls(CALL).update(status="canceled"),
        lambda r: r.update_call(CALL, status="canceled")),
    "redirect with TwiML": (
        lambda c: c.calls(CALL).update(twiml=TWIML),
        lambda r: r.update_call(CALL, twiml=TWIML)),
    "redirect with URL": (
        lambda c: c.calls(CALL).update(url="https://bridge.example.com/next?step=2&x=a b",
                                       method="GET"),
        lambda r: r.update_call(CALL, url="https://bridge.example.com/next?step=2&x=a b",
                                method="GET")),
    "create with TwiML, status callbacks and AMD": (
        lambda c: c.calls.create(
            to="+15558675310", from_="+15017122661", twiml=TWIML,
            status_callback="https://bridge.example.com/status?call=1",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            status_callback_method="POST", machine_detection="DetectMessageEnd",
            async_amd="true", async_amd_status_callback="https://bridge.example.com/amd",
            async_amd_status_callback_method="POST", timeout=25),
        lambda r: r.create_call(
            to="+15558675310", from_="+15017122661", twiml=TWIML,
            status_callback="https://bridge.example.com/status?call=1",
            status_callback_events=("initiated", "ringing", "answered", "completed"),
            status_callback_method="POST", machine_detection="DetectMessageEnd",
            async_amd=True, async_amd_status_callback="https://bridge.example.com/amd",
            async_amd_status_callback_method="POST", ring_timeout=25)),
    "create with URL": (
        lambda c: c.calls.create(to="sip:agent@example.com", from_="+15017122661",
                                 url="https://bridge.example.com/voice", method="GET",
                                 machine_detection="Enable"),
        lambda r: r.create_call(to="sip:agent@example.com", from_="+15017122661",
                                url="https://bridge.example.com/voice", method="GET",
                                machine_detection="Enable")),
}


@pytest.mark.parametrize("credentials", [BY_TOKEN, BY_KEY], ids=["auth token", "API key"])
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_requests_match_the_sdk(operation: str, credentials: TwilioCredentials) -> None:
    sdk_operation, our_operation = OPERATIONS[operation]
    recorder = Recorder()
    sdk_operation(Client(credentials.username, credentials.password, credentials.account_sid,
                         http_client=recorder))
    script = Script()
    async with script.rest(credentials) as rest:
        result = await our_operation(rest)
    assert result in (True, CALL_JSON)
    [sdk_request], [our_request] = recorder.sent, script.requests
    assert our_wire(our_request) == sdk_wire(sdk_request)
    assert basic_user(our_request.headers["Authorization"]) == credentials.username


def test_the_create_comparison_covers_every_field() -> None:
    # the parity test above is only as good as what it sends: every create field
    # this client knows is in it, the repeated one repeated
    recorder = Recorder()
    OPERATIONS["create with TwiML, status callbacks and AMD"][0](
        Client(ACCOUNT, TOKEN, http_client=recorder))
    body = recorder.sent[0].body
    assert isinstance(body, str)
    form = parse_qsl(body)
    names = [name for name, _ in form]
    assert names.count("StatusCallbackEvent") == 4
    assert set(names) == {
        "To", "From", "Twiml", "StatusCallback", "StatusCallbackEvent", "StatusCallbackMethod",
        "MachineDetection", "AsyncAmd", "AsyncAmdStatusCallback",
        "AsyncAmdStatusCallbackMethod", "Timeout"}
    assert ("AsyncAmd", "true") in form and ("Timeout", "25") in form


async def test_our_own_headers() -> None:
    script = Script()
    async with script.rest() as rest:
        await rest.hang_up(CALL)
    headers = script.requests[0].headers
    assert headers["User-Agent"] == f"callbridge/{__version__}"
    assert headers["Accept"] == "application/json"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert str(script.requests[0].url) == (
        f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json")


async def test_a_base_url_override_keeps_its_path() -> None:
    script = Script()
    async with script.rest(base_url="http://127.0.0.1:8080/twilio/") as rest:
        await rest.hang_up(CALL)
    assert str(script.requests[0].url) == (
        f"http://127.0.0.1:8080/twilio/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json")


# -- retries --------------------------------------------------------------------

async def test_503_is_retried_with_exponential_backoff(
        autojump_clock: trio.testing.MockClock) -> None:
    script = Script(E20503(), E20503(), E20503(), httpx.Response(200, json=CALL_JSON))
    start = trio.current_time()
    async with script.rest() as rest:
        assert await rest.update_call(CALL, twiml=TWIML) == CALL_JSON
    assert len(script.requests) == 4
    assert trio.current_time() - start == pytest.approx(0.5 + 1.0 + 2.0)
    # every attempt is the same request
    assert len({r.content for r in script.requests}) == 1


async def test_429_honours_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    script = Script(E20429(headers={"Retry-After": "7"}), httpx.Response(200, json=CALL_JSON))
    start = trio.current_time()
    async with script.rest() as rest:
        assert await rest.hang_up(CALL) is True
    assert len(script.requests) == 2
    assert trio.current_time() - start == pytest.approx(7.0)


@pytest.mark.parametrize("retry_after", [
    "86400",
    format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True),
], ids=["seconds", "http-date"])  # fixed ids: xdist workers must collect the same names
async def test_retry_after_is_bounded(autojump_clock: trio.testing.MockClock,
                                      retry_after: str) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": retry_after}),
                    httpx.Response(200, json=CALL_JSON))
    start = trio.current_time()
    async with script.rest() as rest:
        await rest.hang_up(CALL)
    assert trio.current_time() - start == pytest.approx(MAX_RETRY_DELAY)


@pytest.mark.parametrize("retry_after", ["soon", "-3", "nan",
                                         "Thu, 01 Jan 1970 00:00:00 GMT"])
async def test_an_unusable_or_past_retry_after(autojump_clock: trio.testing.MockClock,
                                               retry_after: str) -> None:
    script = Script(httpx.Response(503, headers={"Retry-After": retry_after}),
                    httpx.Response(200, json=CALL_JSON))
    start = trio.current_time()
    async with script.rest() as rest:
        await rest.hang_up(CALL)
    elapsed = trio.current_time() - start
    # unreadable: the backoff (0.5 s); a date in the past: no wait
    assert elapsed == pytest.approx(0.0 if "1970" in retry_after else 0.5)


@pytest.mark.parametrize(("response", "code", "message"), [
    (twilio_error(400, 21205, "Url is not a valid URL: notaurl"), 21205,
     "Url is not a valid URL: notaurl"),
    # Twilio's answer to a wrong auth token (its `detail` is not the message)
    (twilio_error(401, 20003, "Authenticate",
                  detail="Your AccountSid or AuthToken was incorrect."), 20003, "Authenticate"),
    (twilio_error(403, 20403, "Forbidden"), 20403, "Forbidden"),
])
async def test_other_4xx_raise_at_once_with_twilios_fields(
        autojump_clock: trio.testing.MockClock, response: httpx.Response, code: int,
        message: str) -> None:
    script = Script(response)
    start = trio.current_time()
    async with script.rest() as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.update_call(CALL, url="notaurl")
    assert len(script.requests) == 1 and trio.current_time() == start
    error = caught.value
    assert (error.status, error.code, error.message, error.more_info) == (
        response.status_code, code, message, f"https://www.twilio.com/docs/errors/{code}")
    assert str(error) == (f"update {CALL}: HTTP {response.status_code}, Twilio error {code}: "
                          f"{message} (https://www.twilio.com/docs/errors/{code})")
    # the SDK reads the same code from the same body
    recorder = Recorder(response.status_code, response.text)
    with pytest.raises(Exception) as sdk_caught:  # noqa: PT011 - the SDK's own class
        Client(ACCOUNT, TOKEN, http_client=recorder).calls(CALL).update(url="notaurl")
    assert (sdk_caught.value.status, sdk_caught.value.code) == (response.status_code, code)


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_gives_up_after_retries_with_the_last_error(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
        retries: int) -> None:
    script = Script(*[E20503()] * retries, httpx.Response(502, text="<html>Bad gateway</html>"))
    async with script.rest(retries=retries) as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.hang_up(CALL)
    assert len(script.requests) == retries + 1
    # the last attempt's error, readable although its body is not JSON
    assert (caught.value.status, caught.value.code) == (502, None)
    assert str(caught.value) == f"hang up {CALL}: HTTP 502, Bad Gateway: <html>Bad gateway</html>"
    warnings = [r for r in caplog.records if r.name == "callbridge.twilio_rest"]
    assert len(warnings) == retries
    assert all(r.levelno == logging.WARNING and "retrying" in r.getMessage() for r in warnings)


async def test_transport_errors_are_retried_then_raised(
        autojump_clock: trio.testing.MockClock) -> None:
    script = Script(httpx.ConnectError("[Errno 111] Connection refused"),
                    httpx.ReadTimeout("timed out"), httpx.Response(200, json=CALL_JSON))
    async with script.rest() as rest:
        assert await rest.hang_up(CALL) is True
    assert len(script.requests) == 3

    failing = httpx.ConnectError("[Errno 111] Connection refused")
    script = Script(failing)
    async with script.rest(retries=2) as rest:
        with pytest.raises(TwilioTransportError) as caught:
            await rest.hang_up(CALL)
    assert len(script.requests) == 3
    assert isinstance(caught.value, TwilioRestError)
    assert caught.value.status is None and caught.value.__cause__ is failing
    assert str(caught.value) == f"hang up {CALL}: ConnectError: [Errno 111] Connection refused"


@pytest.mark.parametrize(("failure", "retried"), [
    (lambda: E20429(), True),
    (lambda: E20503(), True),
    (lambda: httpx.ConnectError("refused"), True),
    (lambda: httpx.ConnectTimeout("timed out"), True),
    # these may have reached Twilio and placed the call: retrying could ring twice
    (lambda: twilio_error(500, 20500, "Internal Server Error"), False),
    (lambda: httpx.Response(504, text="Gateway Timeout"), False),
    (lambda: httpx.ReadTimeout("timed out"), False),
    (lambda: httpx.RemoteProtocolError("Server disconnected"), False),
])
async def test_creating_a_call_retries_only_what_cannot_have_placed_it(
        autojump_clock: trio.testing.MockClock, failure: Callable[[], Step],
        retried: bool) -> None:
    script = Script(failure(), httpx.Response(201, json=CALL_JSON))
    async with script.rest() as rest:
        create = functools.partial(rest.create_call, to="+15558675310", from_="+15017122661",
                                   url="https://bridge.example.com/voice")
        if retried:
            assert await create() == CALL_JSON
        else:
            with pytest.raises(TwilioRestError):
                await create()
    assert len(script.requests) == (2 if retried else 1)


# -- hanging up a call that already ended ------------------------------------------

@pytest.mark.parametrize("response", [E20404(), E21220()], ids=["20404", "21220"])
async def test_hang_up_tolerates_a_call_that_already_ended(
        caplog: pytest.LogCaptureFixture, response: httpx.Response) -> None:
    caplog.set_level(logging.INFO, logger="callbridge.twilio_rest")
    script = Script(response)
    async with script.rest() as rest:
        assert await rest.hang_up(CALL) is False
    assert len(script.requests) == 1
    [record] = caplog.records
    assert record.levelno == logging.INFO and "already ended" in record.getMessage()
    assert CALL in record.getMessage()


async def test_an_ended_call_is_an_error_for_other_updates() -> None:
    script = Script(E21220())
    async with script.rest() as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.update_call(CALL, twiml=TWIML)
    assert caught.value.code == 21220


@pytest.mark.parametrize("response", [
    httpx.Response(404, text="<html><body>Not Found</body></html>"),  # not Twilio: a wrong URL?
    twilio_error(400, 21201, "No 'To' number is specified"),
])
async def test_hang_up_raises_other_errors(response: httpx.Response) -> None:
    script = Script(response)
    async with script.rest() as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.hang_up(CALL)
    assert caught.value.status == response.status_code


async def test_a_success_without_a_json_object_is_an_error() -> None:
    script = Script(httpx.Response(200, text="OK"))
    async with script.rest() as rest:
        with pytest.raises(TwilioRestError, match="not a JSON object"):
            await rest.update_call(CALL, twiml=TWIML)


async def test_rfc9457_error_bodies_are_read_too() -> None:
    script = Script(httpx.Response(400, json={
        "type": "https://www.twilio.com/docs/errors/21220", "title": "Invalid call state",
        "status": 400, "code": 21220, "detail": "Call is not in-progress."}))
    async with script.rest() as rest:
        assert await rest.hang_up(CALL) is False
        with pytest.raises(TwilioRestError) as caught:
            await rest.update_call(CALL, twiml=TWIML)
    assert (caught.value.code, caught.value.message, caught.value.more_info) == (
        21220, "Call is not in-progress.", "https://www.twilio.com/docs/errors/21220")


# -- arguments that cannot make a valid request -----------------------------------

@pytest.mark.parametrize("bad_call", [
    lambda r: r.update_call(CALL),
    lambda r: r.update_call(CALL, twiml=TWIML, url="https://x.example.com/"),
    lambda r: r.update_call(CALL, twiml=TWIML, method="GET"),
    lambda r: r.hang_up("CA123/../../Messages"),
    lambda r: r.create_call(to="+1", from_="+2"),
    lambda r: r.create_call(to="+1", from_="+2", twiml=TWIML, url="https://x.example.com/"),
    lambda r: r.create_call(to="+1", from_="+2", twiml=TWIML, status_callback="https://x/",
                            status_callback_events=["answred"]),
    lambda r: r.create_call(to="+1", from_="+2", twiml=TWIML, status_callback_events=["ringing"]),
    lambda r: r.create_call(to="+1", from_="+2", twiml=TWIML, status_callback="https://x/",
                            status_callback_events="ringing"),
    lambda r: r.create_call(to="+1", from_="+2", twiml=TWIML, machine_detection="yes"),
    lambda r: r.create_call(to="+1", from_="+2", twiml=TWIML, async_amd=True),
])
async def test_bad_arguments_raise_before_any_request(bad_call: OurOperation) -> None:
    script = Script()
    async with script.rest() as rest:
        with pytest.raises((ValueError, TypeError)):
            await bad_call(rest)
    assert script.requests == []


async def test_a_closed_client_sends_nothing() -> None:
    script = Script()
    rest = script.rest()
    async with rest:
        pass
    with pytest.raises(RuntimeError):
        await rest.hang_up(CALL)
    assert script.requests == []


# -- configuration from the environment ------------------------------------------

@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    # the token alone configures signature checks (Settings), not the REST client
    ({"TWILIO_AUTH_TOKEN": TOKEN}, None),
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN}, BY_TOKEN),
    ({"TWILIO_ACCOUNT_SID": f" {ACCOUNT}\n", "TWILIO_AUTH_TOKEN": f"{TOKEN} "}, BY_TOKEN),
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_API_KEY": KEY, "TWILIO_API_SECRET": SECRET}, BY_KEY),
    # both: the API key wins (the token still checks signatures)
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_API_KEY": KEY,
      "TWILIO_API_SECRET": SECRET}, BY_KEY),
])
def test_credentials_from_env(env: dict[str, str],
                              expected: TwilioCredentials | None) -> None:
    assert TwilioCredentials.from_env(env) == expected


@pytest.mark.parametrize(("env", "name"), [
    ({"TWILIO_API_KEY": KEY, "TWILIO_API_SECRET": SECRET}, "TWILIO_ACCOUNT_SID"),
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_API_KEY": KEY}, "TWILIO_API_SECRET"),
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_API_SECRET": SECRET}, "TWILIO_API_KEY"),
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_API_KEY": KEY},
     "TWILIO_API_SECRET"),
    ({"TWILIO_ACCOUNT_SID": ACCOUNT}, "TWILIO_AUTH_TOKEN"),
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_API_KEY": " ", "TWILIO_API_SECRET": SECRET},
     "TWILIO_API_KEY"),
    # a secret where the key SID goes: named, and not echoed
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_API_KEY": SECRET, "TWILIO_API_SECRET": KEY},
     "TWILIO_API_KEY"),
    ({"TWILIO_ACCOUNT_SID": KEY, "TWILIO_AUTH_TOKEN": TOKEN}, "TWILIO_ACCOUNT_SID"),
    ({"TWILIO_ACCOUNT_SID": "AC1/../x", "TWILIO_AUTH_TOKEN": TOKEN}, "TWILIO_ACCOUNT_SID"),
])
def test_half_configured_credentials_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        TwilioCredentials.from_env(env)
    assert TOKEN not in str(caught.value) and SECRET not in str(caught.value)


async def test_client_from_env() -> None:
    script = Script()
    assert TwilioRest.from_env({}, transport=script.transport) is None
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_API_KEY": KEY, "TWILIO_API_SECRET": SECRET}
    rest = TwilioRest.from_env(env, transport=script.transport)
    assert rest is not None
    async with rest:
        assert rest.base_url == "https://api.twilio.com"
    rest = TwilioRest.from_env(env | {"CALLBRIDGE_TWILIO_API_URL": "http://localhost:4010/"},
                               transport=script.transport)
    assert rest is not None
    async with rest:
        await rest.hang_up(CALL)
    assert str(script.requests[0].url).startswith("http://localhost:4010/2010-04-01/Accounts/")
    assert basic_user(script.requests[0].headers["Authorization"]) == KEY


@pytest.mark.parametrize("url", ["api.twilio.com", "ftp://api.twilio.com",
                                 "https://api.twilio.com/?x=1", "https://"])
def test_a_bad_api_url_names_the_variable(url: str) -> None:
    # checked even without credentials: a typo shows at startup, not on first use
    for env in ({}, {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN}):
        with pytest.raises(ConfigError, match="CALLBRIDGE_TWILIO_API_URL"):
            TwilioRest.from_env(env | {"CALLBRIDGE_TWILIO_API_URL": url})


# -- secrets stay secret -----------------------------------------------------------

@pytest.mark.parametrize("credentials", [BY_TOKEN, BY_KEY], ids=["auth token", "API key"])
async def test_secrets_are_in_no_repr_message_or_log(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
        credentials: TwilioCredentials) -> None:
    caplog.set_level(logging.DEBUG)  # everything, httpx's own log lines included
    secret = credentials.password
    basic = base64.b64encode(f"{credentials.username}:{secret}".encode()).decode()
    script = Script(E20503(), httpx.ConnectError("refused"), E20404(),
                    twilio_error(401, 20003, "Authenticate"))
    texts: list[str] = [repr(credentials), str(credentials)]
    async with script.rest(credentials) as rest:
        texts += [repr(rest), str(rest)]
        assert await rest.hang_up(CALL) is False
        with pytest.raises(TwilioRestError) as caught:
            await rest.update_call(CALL, twiml=TWIML)
    texts += [str(caught.value), repr(caught.value), caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    # the secret did go out, in the header, so its absence elsewhere means something
    assert all(r.headers["Authorization"] == f"Basic {basic}" for r in script.requests)
    assert len(caplog.records) >= 3
    for text in texts:
        assert secret not in text and basic not in text


# -- the real transport, on trio ---------------------------------------------------

@pytest.mark.slow
async def test_the_real_transport_runs_on_trio() -> None:
    """MockTransport stands in for the network everywhere else; this one request
    goes through httpx's own transport (httpcore on trio) to a loopback server."""
    received: list[bytes] = []
    body = json.dumps(CALL_JSON).encode()

    async def serve(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += await stream.receive_some()
        received.append(head + b"\r\n\r\n" + rest)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                              % (len(body), body))
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners: Sequence[trio.SocketListener] = await nursery.start(
                functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with TwilioRest(BY_TOKEN, base_url=f"http://127.0.0.1:{port}") as rest:
                assert await rest.update_call(CALL, twiml=TWIML) == CALL_JSON
            nursery.cancel_scope.cancel()
    [request] = received
    assert request.startswith(
        f"POST /2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json HTTP/1.1\r\n".encode())
    assert parse_qsl(request.partition(b"\r\n\r\n")[2].decode()) == [("Twiml", TWIML)]


async def test_fetch_call_gets_the_resource_as_the_sdk_does() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=CALL_JSON | {"status": "ringing"})

    async with TwilioRest(BY_TOKEN, transport=httpx.MockTransport(handler)) as rest:
        assert (await rest.fetch_call(CALL))["status"] == "ringing"
    recorder = Recorder()
    Client(ACCOUNT, TOKEN, http_client=recorder).calls(CALL).fetch()
    [sdk] = recorder.sent
    [ours] = seen
    assert (ours.method, str(ours.url)) == (sdk.method, sdk.url)
    assert ours.headers["Authorization"] == sdk.headers["Authorization"]
    assert ours.content == b"" and "Content-Type" not in ours.headers
