"""Call control over Twilio's REST API: hang up, redirect and place calls.

A small async client for the one resource the bridge needs, Calls
(`/2010-04-01/Accounts/{AccountSid}/Calls[/{CallSid}].json`), on httpx, which runs
on trio. Request shapes follow the `twilio` SDK's (`calls(sid).update(...)`,
`calls.create(...)`): form-encoded bodies, repeated fields for lists, HTTP Basic
auth with the account SID and auth token or an API key SID and secret. The tests
hold every request to what the SDK sends for the same operation.

Failures: 429 and 5xx responses and transport errors are retried with exponential
backoff (honouring a bounded `Retry-After`); any other 4xx raises `TwilioRestError`
at once with Twilio's error code, message and link. Placing a call is not
idempotent, so `create_call` retries only what cannot have placed one (429, 503,
and a connection that was never made); everything else raises at once rather than
risk ringing someone twice.

The password (auth token or API key secret) is never in a repr, a log line or an
exception message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import attrs
import httpx
import trio

from . import __version__
from .config import ConfigError, _url

__all__ = [
    "DEFAULT_API_URL",
    "HttpApi",
    "TwilioCredentials",
    "TwilioRest",
    "TwilioRestError",
    "TwilioTransportError",
]

log = logging.getLogger("callbridge.twilio_rest")

DEFAULT_API_URL = "https://api.twilio.com"
_API_VERSION = "2010-04-01"

#: The longest wait between two attempts, whatever `Retry-After` or the backoff
#: says: call control is only useful while the call is live.
MAX_RETRY_DELAY = 30.0

#: Statuses worth another attempt: rate limited, or the server's fault.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: For a request that is not idempotent (placing a call): statuses Twilio answers
#: before acting on the request.
_RETRY_STATUSES_UNSENT = frozenset({429, 503})
#: Transport errors raised before a request left this machine.
_UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

#: Error codes that mean the call already ended, for `hang_up`: 20404 (the call is
#: not found, e.g. it ended long ago) and 21220 (the call is not in progress).
_ALREADY_ENDED = frozenset({20404, 21220})

_STATUS_CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")
_MACHINE_DETECTION = ("Enable", "DetectMessageEnd")
_SID = re.compile(r"[A-Za-z0-9]+")


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    """`env`, or the process environment after loading `./.env` as `Settings` does."""
    if env is not None:
        return env
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    return os.environ


def _check_sid(value: str, what: str) -> None:
    # it goes into the request path: letters and digits only, so nothing can
    # change which resource is addressed
    if not _SID.fullmatch(value):
        raise ValueError(f"{what} {value!r}: expected letters and digits only")


@attrs.frozen(kw_only=True)
class TwilioCredentials:
    """Whom the REST API acts for, and how we prove it.

    `username`/`password` are the account SID and auth token, or (as Twilio
    recommends for servers) an API key SID (`SK...`) and its secret; requests go to
    `account_sid`'s resources either way. The password never appears in the repr.
    """

    account_sid: str
    username: str
    password: str = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        _check_sid(self.account_sid, "account SID")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TwilioCredentials | None:
        """Credentials from `TWILIO_ACCOUNT_SID` with `TWILIO_API_KEY` and
        `TWILIO_API_SECRET` (preferred when set), or with `TWILIO_AUTH_TOKEN`.

        None when REST is not configured: no variable set, or only
        `TWILIO_AUTH_TOKEN`, which on its own configures signature checks (see
        `Settings`) and stays a valid setup. A half configuration raises
        `ConfigError` naming the variable to set or fix; values are not echoed,
        since one may be a secret in the wrong place.
        """
        env = _environ(env)
        names = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY", "TWILIO_API_SECRET")
        sid, token, key, secret = (env.get(name, "").strip() for name in names)
        if key or secret:
            if not key:
                raise ConfigError("TWILIO_API_KEY is not set, but TWILIO_API_SECRET is: "
                                  "set the API key's SID (SK...) too")
            if not secret:
                raise ConfigError("TWILIO_API_SECRET is not set, but TWILIO_API_KEY is: "
                                  "set the API key's secret too")
            if not key.startswith("SK") or not _SID.fullmatch(key):
                raise ConfigError("TWILIO_API_KEY: expected an API key SID (SK...)")
            username, password = key, secret
        elif token:
            if not sid:
                return None  # the token alone: signature checks only, no REST client
            username, password = sid, token
        elif sid:
            raise ConfigError("TWILIO_ACCOUNT_SID is set without credentials: set "
                              "TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET")
        else:
            return None
        if not sid:
            raise ConfigError("TWILIO_ACCOUNT_SID is not set: the API key needs the SID "
                              "of its account (AC...)")
        if not sid.startswith("AC") or not _SID.fullmatch(sid):
            raise ConfigError("TWILIO_ACCOUNT_SID: expected an account SID (AC...)")
        return cls(account_sid=sid, username=username, password=password)


class TwilioRestError(Exception):
    """Twilio refused a request, or it could not be made.

    `status` is the HTTP status (None if no response came), `code` Twilio's error
    code (https://www.twilio.com/docs/errors/<code>) when the body had one,
    `message` its explanation and `more_info` its link.
    """

    def __init__(self, action: str, status: int | None, code: int | None = None,
                 message: str = "", more_info: str | None = None) -> None:
        self.action = action
        self.status = status
        self.code = code
        self.message = message
        self.more_info = more_info
        super().__init__(action, status, code, message, more_info)

    def __str__(self) -> str:
        parts = [f"{self.action}: "]
        if self.status is not None:
            parts.append(f"HTTP {self.status}, ")
        if self.code is not None:
            parts.append(f"Twilio error {self.code}: ")
        parts.append(self.message)
        if self.more_info:
            parts.append(f" ({self.more_info})")
        return "".join(parts)

    @classmethod
    def from_response(cls, action: str, response: httpx.Response) -> TwilioRestError:
        """The error a non-2xx response describes: Twilio's JSON error fields
        (`code`, `message`, `more_info`, or RFC 9457's `detail`/`title`) when the
        body has them, else the status line and the start of the body."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and ("code" in body or "message" in body):
            code = body.get("code")
            message = body.get("message") or body.get("detail") or body.get("title")
            more_info = body.get("more_info") or body.get("type")
            return cls(action, status=response.status_code,
                       code=code if isinstance(code, int) else None,
                       message=str(message) if message else response.reason_phrase,
                       more_info=str(more_info) if more_info else None)
        text = " ".join(response.text.split())
        message = response.reason_phrase or "error"
        if text:
            message += f": {text[:200]}{'...' if len(text) > 200 else ''}"
        return cls(action, status=response.status_code, message=message)


class TwilioTransportError(TwilioRestError):
    """No response came: the connection failed, timed out or broke (`__cause__`
    is httpx's error). `status` is None."""


class HttpApi:
    """A REST API client's httpx client, closed with it (`async with`, or `aclose`)."""

    _client: httpx.AsyncClient

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc_value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()


class TwilioRest(HttpApi):
    """An async client for Twilio's Calls resource, on httpx (so on trio).

    One instance serves any number of concurrent calls and keeps its connections
    open between requests: make one at startup, `aclose()` it (or use it as an
    async context manager) at shutdown. Retries: up to `retries` more attempts
    after the first, `backoff` seconds before the first retry, doubling each time,
    or what `Retry-After` says; no wait exceeds `MAX_RETRY_DELAY`. `timeout` bounds
    each phase of a request (connect, write, read) in seconds; wrap a call in
    `trio.move_on_after` to bound the whole, retries included. `transport`
    replaces the network (tests pass an `httpx.MockTransport`).
    """

    def __init__(self, credentials: TwilioCredentials, *, base_url: str = DEFAULT_API_URL,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 0.5,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("retries and backoff must be >= 0, timeout > 0")
        self.account_sid = credentials.account_sid
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.AsyncClient(
            auth=httpx.BasicAuth(credentials.username, credentials.password),
            headers={"User-Agent": f"callbridge/{__version__}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"TwilioRest(account_sid={self.account_sid!r}, base_url={self.base_url!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> TwilioRest | None:
        """A client configured by `TwilioCredentials.from_env` and
        `CALLBRIDGE_TWILIO_API_URL` (default `https://api.twilio.com`); None when
        the credentials are not configured. Raises `ConfigError` naming a variable
        that is set wrong."""
        env = _environ(env)
        base_url = _url(env, "CALLBRIDGE_TWILIO_API_URL", DEFAULT_API_URL, {"http", "https"})
        assert base_url is not None
        credentials = TwilioCredentials.from_env(env)
        if credentials is None:
            return None
        return cls(credentials, base_url=base_url, transport=transport)


    # -- operations ---------------------------------------------------------------

    async def hang_up(self, call_sid: str) -> bool:
        """End the call (`Status=completed`, which also cancels one still ringing).

        True if it hung up; False if the call had already ended (Twilio's 20404
        or 21220), which is logged at info, not raised: the caller may well have
        hung up first.
        """
        try:
            await self._update(call_sid, _form(Status="completed"), f"hang up {call_sid}")
        except TwilioRestError as exc:
            if exc.code not in _ALREADY_ENDED or exc.status not in (400, 404):
                raise
            log.info("hang up %s: the call had already ended (Twilio error %s)",
                     call_sid, exc.code)
            return False
        return True

    async def update_call(self, call_sid: str, *, twiml: str | None = None,
                          url: str | None = None, method: str | None = None,
                          status: str | None = None) -> dict[str, Any]:
        """Change a live call: run `twiml` (`<Response>...</Response>`) now, or
        the TwiML fetched from `url` (with `method`, default POST), and/or set its
        `status` (`completed`, or `canceled` for one not yet answered). Returns
        Twilio's call resource. Either TwiML replaces what the call was running,
        which ends its `<Connect><Stream>`."""
        if twiml is not None and url is not None:
            raise ValueError("twiml and url are exclusive: the call runs one or the other")
        if method is not None and url is None:
            raise ValueError("method applies to url only")
        if twiml is None and url is None and status is None:
            raise ValueError("nothing to update: give twiml, url or status")
        form = _form(Url=url, Method=method, Status=status, Twiml=twiml)
        return await self._update(call_sid, form, f"update {call_sid}")

    async def create_call(
        self, *, to: str, from_: str, twiml: str | None = None, url: str | None = None,
        method: str | None = None, status_callback: str | None = None,
        status_callback_events: Sequence[str] = (), status_callback_method: str | None = None,
        machine_detection: str | None = None, async_amd: bool = False,
        async_amd_status_callback: str | None = None,
        async_amd_status_callback_method: str | None = None, ring_timeout: int | None = None,
    ) -> dict[str, Any]:
        """Place a call from `from_` (a Twilio number or verified caller ID) to
        `to`, running `twiml` or the TwiML at `url` when it is answered. Returns
        Twilio's call resource (`sid`, `status`: `queued`...).

        `status_callback` gets the `status_callback_events` (any of `initiated`,
        `ringing`, `answered`, `completed`; Twilio's default is `completed` only).
        `machine_detection` (`Enable` or `DetectMessageEnd`) turns on answering
        machine detection; with `async_amd` the call proceeds at once and the
        result goes to `async_amd_status_callback`. `ring_timeout` (Twilio's
        `Timeout`): seconds to let it ring. Only failures that cannot have placed
        the call are retried.
        """
        if (twiml is None) == (url is None):
            raise ValueError("give exactly one of twiml and url: what the call runs")
        if method is not None and url is None:
            raise ValueError("method applies to url only")
        if isinstance(status_callback_events, str):
            raise TypeError("status_callback_events is a sequence of event names, not a str")
        unknown = [e for e in status_callback_events if e not in _STATUS_CALLBACK_EVENTS]
        if unknown:
            raise ValueError(f"status callback event {unknown[0]!r}: expected one of "
                             f"{', '.join(_STATUS_CALLBACK_EVENTS)}")
        if (status_callback_events or status_callback_method) and status_callback is None:
            raise ValueError("status callback events and method need a status_callback URL")
        if machine_detection is not None and machine_detection not in _MACHINE_DETECTION:
            raise ValueError(f"machine_detection {machine_detection!r}: expected one of "
                             f"{', '.join(_MACHINE_DETECTION)}")
        if (async_amd or async_amd_status_callback) and machine_detection is None:
            raise ValueError("async_amd needs machine_detection")
        if async_amd_status_callback_method is not None and async_amd_status_callback is None:
            raise ValueError("async_amd_status_callback_method needs async_amd_status_callback")
        # field order as the SDK writes them; Twilio reads them by name
        form = _form(
            To=to, From=from_, Method=method, StatusCallback=status_callback,
            StatusCallbackEvent=list(status_callback_events),
            StatusCallbackMethod=status_callback_method,
            Timeout=None if ring_timeout is None else str(ring_timeout),
            MachineDetection=machine_detection,
            # the SDK passes AsyncAmd through as given (a str); Twilio expects "true"
            AsyncAmd="true" if async_amd else None,
            AsyncAmdStatusCallback=async_amd_status_callback,
            AsyncAmdStatusCallbackMethod=async_amd_status_callback_method,
            Url=url, Twiml=twiml,
        )
        return await self._post("Calls.json", form, action="create call", idempotent=False)

    async def fetch_call(self, call_sid: str) -> dict[str, Any]:
        """Twilio's call resource as it is now (`status`: `queued`, `ringing`,
        `in-progress`, `completed`, `busy`, `no-answer`, `failed`, `canceled`)."""
        _check_sid(call_sid, "call SID")
        return await self._post(f"Calls/{call_sid}.json", None, action=f"fetch {call_sid}",
                                idempotent=True)

    # -- the request loop -------------------------------------------------------

    async def _update(self, call_sid: str, form: list[tuple[str, str]],
                      action: str) -> dict[str, Any]:
        # retried on any 5xx or transport error: a status set twice is set, and a
        # redirect whose lost first attempt did take effect restarts the new TwiML,
        # a smaller harm than a call left running the old one
        _check_sid(call_sid, "call SID")
        return await self._post(f"Calls/{call_sid}.json", form, action=action, idempotent=True)

    async def _post(self, resource: str, form: list[tuple[str, str]] | None, *, action: str,
                    idempotent: bool) -> dict[str, Any]:
        """POST `form` to the account's `resource` (GET it, when `form` is None),
        retrying what may succeed on another attempt; the response's JSON object."""
        url = f"{self.base_url}/{_API_VERSION}/Accounts/{self.account_sid}/{resource}"
        method = "GET" if form is None else "POST"
        body = None if form is None else urlencode(form).encode("ascii")
        headers = {} if form is None else {"Content-Type": "application/x-www-form-urlencoded"}
        retry_statuses = _RETRY_STATUSES if idempotent else _RETRY_STATUSES_UNSENT
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = await self._client.request(method, url, content=body,
                                                      headers=headers)
            except httpx.TransportError as exc:
                error: TwilioRestError = TwilioTransportError(
                    action, status=None, message=f"{type(exc).__name__}: {exc}" if str(exc)
                    else type(exc).__name__)
                if attempt == attempts or not (idempotent or isinstance(exc, _UNSENT_ERRORS)):
                    raise error from exc
                delay = self._backoff(attempt)
            else:
                if response.is_success:
                    return _call_json(action, response)
                error = TwilioRestError.from_response(action, response)
                if attempt == attempts or response.status_code not in retry_statuses:
                    raise error
                asked = _retry_after(response)
                delay = self._backoff(attempt) if asked is None else asked
            delay = min(max(delay, 0.0), MAX_RETRY_DELAY)
            log.warning("%s; retrying in %.1f s (attempt %d of %d)", error, delay,
                        attempt + 1, attempts)
            await trio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, attempt: int) -> float:
        return self.backoff * 2.0 ** (attempt - 1)


def _form(**fields: str | list[str] | None) -> list[tuple[str, str]]:
    """Form fields in order, a list as one field per item, None left out."""
    pairs: list[tuple[str, str]] = []
    for name, value in fields.items():
        if isinstance(value, list):
            pairs.extend((name, item) for item in value)
        elif value is not None:
            pairs.append((name, value))
    return pairs


def _call_json(action: str, response: httpx.Response) -> dict[str, Any]:
    try:
        resource = response.json()
    except ValueError:
        resource = None
    if not isinstance(resource, dict):
        raise TwilioRestError(action, status=response.status_code,
                              message="the response is not a JSON object")
    return resource


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the `Retry-After` header asks to wait (delta-seconds or an HTTP
    date), None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()
