"""The REST half of `LocalTwilio`: Twilio's Calls API, answered as Twilio answers it.

    POST /2010-04-01/Accounts/{AccountSid}/Calls.json            place a call (201)
    GET  /2010-04-01/Accounts/{AccountSid}/Calls.json            list calls (one page)
    GET  /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json  fetch a call
    POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json  hang up / redirect

`handle` is synchronous: checks (HTTP Basic auth, the path's account, the form
fields), then the platform's `create_call`/`update_call`, which only change state
and start background work, as Twilio answers before it acts. So the same handler
serves an in-memory `httpx` transport (`RestTransport`), a loopback server
(`RestAsgiApp`, under hypercorn) and a synchronous adapter for the `twilio` SDK.

Answers are Twilio's: the call resource JSON the SDK parses into a `CallInstance`,
and errors as `{"code", "message", "more_info", "status"}` with Twilio's codes.
The fake is strict on purpose, so a client that gets a field wrong fails here
rather than on a live call: a parameter name Twilio does not document for the
request is refused (Twilio itself ignores those [UNCONFIRMED]: a typo there is a
silently lost option), enumerations, numbers and URLs are checked.

Error codes (see `_ERRORS`): 20003, 20404, 21201, 21211, 21213 and 21220 are
Twilio's for these cases (docs or observed responses); the others are marked
UNCONFIRMED: the right status and a plausible code, not checked against Twilio.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import attrs
import trio

from ..local._rest import RestAsgiApp, RestResponse, RestTransport
from ._platform_twiml import TwimlError, parse_twiml
from ._twilio import TwilioCaller

__all__ = ["API_VERSION", "CallUpdate", "NewCall", "PlatformCall", "PlatformStream",
           "RestAsgiApp", "RestError", "RestRequest", "RestResponse", "RestTransport", "handle"]

API_VERSION = "2010-04-01"
_ROUTE = re.compile(rf"/{API_VERSION}/Accounts/([^/]+)/Calls(?:/([^/]+))?\.json")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
LIVE = frozenset({"queued", "ringing", "in-progress"})
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
AMD_MODES = frozenset({"Enable", "DetectMessageEnd"})

# code -> (HTTP status, message). [UNCONFIRMED] marks a code not checked against Twilio.
_ERRORS: dict[int, tuple[int, str]] = {
    20001: (400, "Invalid parameter"),  # [UNCONFIRMED] code for a bad value/unknown name
    20003: (401, "Authenticate"),
    20004: (405, "Method not allowed"),  # [UNCONFIRMED]
    20404: (404, "The requested resource {path} was not found"),
    21201: (400, "No 'To' number is specified"),
    21205: (400, "Url parameter is required"),  # [UNCONFIRMED] also used for a bad URL
    21211: (400, "Invalid 'To' Phone Number"),
    21212: (400, "Invalid 'From' Phone Number"),  # [UNCONFIRMED] message
    21213: (400, "No 'From' number is specified"),
    21218: (400, "Invalid ApplicationSid"),  # [UNCONFIRMED]: the fake has no applications
    21220: (400, "Call is not in-progress. Cannot redirect."),
    12100: (400, "Document parse failure"),  # [UNCONFIRMED] as a REST answer to bad Twiml
}

_CREATE_FIELDS = frozenset({
    "To", "From", "Url", "Twiml", "ApplicationSid", "Method", "FallbackUrl", "FallbackMethod",
    "StatusCallback", "StatusCallbackEvent", "StatusCallbackMethod", "SendDigits", "Timeout",
    "Record", "RecordingChannels", "RecordingStatusCallback", "RecordingStatusCallbackMethod",
    "RecordingConfigurationId", "RecordingStatusCallbackEvent", "RecordingTrack",
    "SipAuthUsername", "SipAuthPassword", "MachineDetection", "MachineDetectionTimeout",
    "MachineDetectionSpeechThreshold", "MachineDetectionSpeechEndThreshold",
    "MachineDetectionSilenceTimeout", "AsyncAmd", "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod", "Trim", "CallerId", "Passports", "Byoc", "CallReason",
    "CallToken", "TimeLimit", "ClientNotificationUrl",
})  # every field the twilio SDK's `calls.create` can send
_UPDATE_FIELDS = frozenset({"Url", "Method", "Status", "FallbackUrl", "FallbackMethod",
                            "StatusCallback", "StatusCallbackMethod", "Twiml", "TimeLimit"})


class RestError(Exception):
    """A request Twilio refuses: `code` is Twilio's error code."""

    def __init__(self, code: int, detail: str | None = None, *, path: str = "") -> None:
        status, message = _ERRORS[code]
        self.status = status
        self.code = code
        self.message = message.format(path=path) + (f": {detail}" if detail else "")
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
                "status": self.status}


@attrs.frozen(kw_only=True)
class RestRequest:
    """One REST request as the platform saw and answered it."""

    method: str
    path: str
    #: the form fields in order, repeated names repeated
    form: tuple[tuple[str, str], ...]
    #: the HTTP Basic user (an account or API key SID); None without credentials
    user: str | None
    status: int
    #: Twilio's error code when refused
    code: int | None = None

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.form if k == name), None)

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.form if k == name]


@attrs.frozen(kw_only=True)
class NewCall:
    """A checked `POST .../Calls.json`."""

    to: str
    from_: str
    url: str | None = None
    method: str = "POST"
    twiml: str | None = None
    fallback_url: str | None = None
    fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    #: Twilio's default: `completed` only
    status_callback_events: frozenset[str] = frozenset({"completed"})
    machine_detection: str | None = None
    async_amd: bool = False
    amd_callback: str | None = None
    amd_callback_method: str = "POST"
    #: AMD tuning, Twilio's defaults: seconds, then milliseconds
    amd_timeout: int = 30
    amd_speech_threshold: int = 2400
    amd_speech_end_threshold: int = 1200
    amd_silence_timeout: int = 5000
    #: seconds to let it ring (Twilio: 60 by default, at most 600)
    timeout: int = 60
    #: the longest the call may last, seconds (Twilio: 4 hours by default)
    time_limit: int = 14400


@attrs.frozen(kw_only=True)
class CallUpdate:
    """A checked `POST .../Calls/{CallSid}.json`."""

    status: str | None = None
    url: str | None = None
    method: str = "POST"
    twiml: str | None = None
    fallback_url: str | None = None
    fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str | None = None
    time_limit: int | None = None


@attrs.define(kw_only=True, eq=False)
class PlatformStream:
    """A Media Stream the platform opened (or was attached to)."""

    url: str
    stream_sid: str
    caller: TwilioCaller
    #: the `<Parameter>`s, which Twilio sends as `start.customParameters`
    parameters: dict[str, str]
    #: the WebSocket upgrade's extra headers (`X-Twilio-Signature`)
    headers: dict[str, str]
    name: str | None = None
    #: why the stream could not be opened (a 319xx error), if it could not
    error: str | None = None


@attrs.define(kw_only=True, eq=False)
class PlatformCall:
    """A call the platform knows: the Call resource, and what happened on it.

    Times are seconds since the epoch (`date_created` ...), derived from trio's
    clock, so on `MockClock` they move with virtual time.
    """

    sid: str
    account_sid: str
    from_: str
    to: str
    #: "inbound" (attached) or "outbound-api" (placed over REST)
    direction: str
    #: every status the resource had, in order: queued, ringing, in-progress, completed...
    statuses: list[str]
    date_created: float
    date_updated: float
    start_time: float | None = None
    end_time: float | None = None
    answered_by: str | None = None
    #: the request that placed it (outbound calls)
    request: NewCall | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"
    streams: list[PlatformStream] = attrs.field(factory=list)
    #: what Twilio's debugger would show for this call ("11200 ...", "31920 ...")
    notices: list[str] = attrs.field(factory=list)
    #: the text of every `<Say>` it ran
    said: list[str] = attrs.field(factory=list)
    #: set once the call is over
    ended: trio.Event = attrs.field(factory=trio.Event)

    @property
    def status(self) -> str:
        return self.statuses[-1]

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def resource(self) -> dict[str, Any]:
        """The call as Twilio's REST API shows it."""
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        duration = (str(round(self.end_time - self.start_time))
                    if self.end_time is not None and self.start_time is not None else None)
        return {
            "account_sid": self.account_sid, "annotation": None,
            "answered_by": self.answered_by, "api_version": API_VERSION,
            "caller_name": None, "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_updated), "direction": self.direction,
            "duration": duration, "end_time": rfc2822(self.end_time),
            "forwarded_from": None, "from": self.from_, "from_formatted": self.from_,
            "group_sid": None, "parent_call_sid": None, "phone_number_sid": None,
            "price": None, "price_unit": "USD", "queue_time": "0", "sid": self.sid,
            "start_time": rfc2822(self.start_time), "status": self.status,
            "subresource_uris": {name: f"{base}/{name[0].upper()}{name[1:]}.json" for name in
                                 ("notifications", "recordings", "payments", "events",
                                  "siprec", "streams", "user_defined_message_subscriptions",
                                  "user_defined_messages")},
            "to": self.to, "to_formatted": self.to, "trunk_sid": None, "uri": f"{base}.json",
        }


def rfc2822(when: float | None) -> str | None:
    # Twilio's format, "Tue, 31 Aug 2010 20:36:28 +0000"
    return None if when is None else format_datetime(datetime.fromtimestamp(when, UTC))


class Platform(Protocol):
    """What `handle` needs of `LocalTwilio`."""

    calls: dict[str, PlatformCall]

    @property
    def account_sid(self) -> str: ...

    @property
    def credentials(self) -> Mapping[str, str]:
        """user (account or API key SID) -> password (auth token or key secret)"""

    def create_call(self, new: NewCall) -> PlatformCall: ...

    def update_call(self, call: PlatformCall, update: CallUpdate) -> None: ...


def handle(platform: Platform, method: str, path: str, headers: Mapping[str, str],
           body: bytes) -> tuple[RestResponse, RestRequest]:
    """Answer one REST request (header names in any case); returns the answer and
    the record of the request."""
    path = urlsplit(path).path
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = lower.get("content-type", "").split(";")[0].strip().lower()
    form: list[tuple[str, str]] = []
    if method == "POST" and content_type == "application/x-www-form-urlencoded":
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    user = _basic_user(lower.get("authorization"))
    status, code = 200, None
    try:
        status, payload = _route(platform, method, path, user, lower.get("authorization"), form)
        response = RestResponse(status=status, body=json.dumps(payload).encode())
    except RestError as error:
        status, code = error.status, error.code
        extra = (("WWW-Authenticate", 'Basic realm="Twilio API"'),) if status == 401 else ()
        response = RestResponse(status=status, body=json.dumps(error.body()).encode(),
                                headers=(("Content-Type", "application/json"), *extra))
    record = RestRequest(method=method, path=path, form=tuple(form), user=user,
                         status=status, code=code)
    return response, record


def _basic_user(header: str | None) -> str | None:
    credentials = _basic(header)
    return None if credentials is None else credentials[0]


def _basic(header: str | None) -> tuple[str, str] | None:
    if header is None or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _route(platform: Platform, method: str, path: str, user: str | None,
           authorization: str | None, form: list[tuple[str, str]]) -> tuple[int, Any]:
    credentials = _basic(authorization)
    if credentials is None or platform.credentials.get(credentials[0]) != credentials[1]:
        raise RestError(20003)
    match = _ROUTE.fullmatch(path)
    if match is None or match.group(1) != platform.account_sid:
        raise RestError(20404, path=path)
    call_sid = match.group(2)
    if call_sid is None:
        if method == "POST":
            return 201, platform.create_call(new_call(form)).resource()
        if method == "GET":
            return 200, _page(platform, path)
        raise RestError(20004)
    call = platform.calls.get(call_sid)
    if call is None:
        raise RestError(20404, path=path)
    if method == "GET":
        return 200, call.resource()
    if method != "POST":
        raise RestError(20004)
    update = call_update(form)
    if not call.live:
        raise RestError(21220)
    platform.update_call(call, update)
    return 200, call.resource()


def _page(platform: Platform, path: str) -> dict[str, Any]:
    calls = sorted(platform.calls.values(), key=lambda c: c.date_created, reverse=True)
    return {"calls": [c.resource() for c in calls], "end": max(len(calls) - 1, 0),
            "first_page_uri": f"{path}?PageSize=50&Page=0", "next_page_uri": None,
            "page": 0, "page_size": 50, "previous_page_uri": None, "start": 0,
            "uri": f"{path}?PageSize=50&Page=0"}


class _Form:
    def __init__(self, form: Iterable[tuple[str, str]], allowed: frozenset[str]) -> None:
        self.pairs = list(form)
        unknown = sorted({k for k, _ in self.pairs} - allowed)
        if unknown:  # stricter than Twilio, which ignores them [UNCONFIRMED]
            raise RestError(20001, f"unknown parameter(s) {', '.join(unknown)}")

    def get(self, name: str) -> str | None:
        """The value of `name` (None when absent or empty, as Twilio reads an empty value)."""
        return next((v for k, v in self.pairs if k == name), None) or None

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]

    def method(self, name: str) -> str:
        value = self.get(name) or "POST"
        if value.upper() not in ("GET", "POST"):
            raise RestError(20001, f"{name} must be GET or POST, not {value!r}")
        return value.upper()

    def url(self, name: str) -> str | None:
        value = self.get(name)
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise RestError(21205, f"{name} {value!r} is not an absolute http(s) URL")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if not value.isdigit() or not low <= int(value) <= high:
            raise RestError(20001, f"{name} must be an integer {low}-{high}, not {value!r}")
        return int(value)

    def twiml(self) -> str | None:
        value = self.get("Twiml")
        if value is not None:
            try:
                parse_twiml(value)
            except TwimlError as exc:
                raise RestError(12100, exc.message) from None
        return value


def new_call(pairs: Iterable[tuple[str, str]]) -> NewCall:
    """Check a create request's fields as Twilio does; raises `RestError`."""
    form = _Form(pairs, _CREATE_FIELDS)
    to, from_ = form.get("To"), form.get("From")
    if to is None:
        raise RestError(21201)
    if from_ is None:
        raise RestError(21213)
    if not (_E164.fullmatch(to) or to.startswith(("sip:", "client:"))):
        raise RestError(21211, repr(to))
    if not (_E164.fullmatch(from_) or from_.startswith("client:") or to.startswith("sip:")):
        raise RestError(21212, repr(from_))
    url, twiml = form.url("Url"), form.twiml()
    if form.get("ApplicationSid") is not None:
        raise RestError(21218)
    if url is None and twiml is None:
        raise RestError(21205)
    if url is not None and twiml is not None:
        raise RestError(21205, "Url and Twiml are mutually exclusive")  # [UNCONFIRMED] code
    events = {e for value in form.getall("StatusCallbackEvent") for e in value.split()}
    if events - set(STATUS_EVENTS):
        raise RestError(20001, f"StatusCallbackEvent {sorted(events - set(STATUS_EVENTS))}")
    amd = form.get("MachineDetection")
    if amd is not None and amd not in AMD_MODES:
        raise RestError(20001, f"MachineDetection must be Enable or DetectMessageEnd, not {amd!r}")
    async_amd = form.get("AsyncAmd") or "false"
    if async_amd not in ("true", "false"):
        raise RestError(20001, f"AsyncAmd must be true or false, not {async_amd!r}")
    return NewCall(
        to=to, from_=from_, url=url, method=form.method("Method"), twiml=twiml,
        fallback_url=form.url("FallbackUrl"), fallback_method=form.method("FallbackMethod"),
        status_callback=form.url("StatusCallback"),
        status_callback_method=form.method("StatusCallbackMethod"),
        status_callback_events=frozenset(events or {"completed"}),
        machine_detection=amd, async_amd=async_amd == "true",
        amd_callback=form.url("AsyncAmdStatusCallback"),
        amd_callback_method=form.method("AsyncAmdStatusCallbackMethod"),
        amd_timeout=form.integer("MachineDetectionTimeout", 30, 3, 59),
        amd_speech_threshold=form.integer("MachineDetectionSpeechThreshold", 2400, 1000, 6000),
        amd_speech_end_threshold=form.integer("MachineDetectionSpeechEndThreshold", 1200, 500,
                                              5000),
        amd_silence_timeout=form.integer("MachineDetectionSilenceTimeout", 5000, 2000, 10000),
        timeout=form.integer("Timeout", 60, 1, 600),
        time_limit=form.integer("TimeLimit", 14400, 1, 86400),
    )


def call_update(pairs: Iterable[tuple[str, str]]) -> CallUpdate:
    """Check an update request's fields as Twilio does; raises `RestError`."""
    form = _Form(pairs, _UPDATE_FIELDS)
    status = form.get("Status")
    if status is not None and status not in ("completed", "canceled"):
        # [UNCONFIRMED] code; the values are the SDK's `UpdateStatus`
        raise RestError(20001, f"Status must be completed or canceled, not {status!r}")
    url, twiml = form.url("Url"), form.twiml()
    if url is not None and twiml is not None:
        raise RestError(21205, "Url and Twiml are mutually exclusive")  # [UNCONFIRMED] code
    if status is not None and (url is not None or twiml is not None):
        raise RestError(20001, "Status with Url or Twiml")  # [UNCONFIRMED]: strict
    return CallUpdate(
        status=status, url=url, method=form.method("Method"), twiml=twiml,
        fallback_url=form.url("FallbackUrl"), fallback_method=form.method("FallbackMethod"),
        status_callback=form.url("StatusCallback"),
        status_callback_method=(form.method("StatusCallbackMethod")
                                if form.get("StatusCallbackMethod") else None),
        time_limit=(form.integer("TimeLimit", 14400, 1, 86400)
                    if form.get("TimeLimit") else None),
    )


