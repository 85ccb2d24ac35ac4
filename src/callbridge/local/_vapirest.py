"""A local VAPI `POST /call`, answered as VAPI answers it, for tests, the demo and the bench.

    POST /call    create a call on the WebSocket transport (201)

`LocalVapiRest.handle` is synchronous, as `callbridge.testing`'s fake Twilio REST API
is: it checks the request, records it and answers, so the same handler serves an
in-memory httpx transport (`transport()`: no socket, runs on `MockClock`) and an
ASGI app (`asgi_app()`, under hypercorn or `httpx.ASGITransport`). The WebSocket
side is not here: whoever makes the fake says where each call's socket is
(`websocket_url(call_id, audio_format)`), typically the local model in a PCM mode.

The checks follow VAPI's documentation (docs/vapi-protocol.md): `Authorization:
Bearer <key>` (401 otherwise, with VAPI's message), a JSON object body whose
top-level properties are `CreateCallDTO`'s (an unknown one is refused with
class-validator's "property X should not exist", as VAPI does), one of `assistantId`
and `assistant`, `transport.provider == "vapi.websocket"`, a valid
`transport.audioFormat`, and no phone number with this transport. Errors are
NestJS's `{"message", "error", "statusCode"}`; the wording of those VAPI has not
been seen to send is marked [UNCONFIRMED]. The fake is stricter than VAPI where
noted [strict], so a client that gets a field wrong fails here first.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx

from ..vapi_rest import (
    AUDIO_CONTAINERS,
    AUDIO_FORMATS,
    MAX_SAMPLE_RATE,
    WEBSOCKET_PROVIDER,
    VapiAudioFormat,
)
from ._rest import RestAsgiApp, RestResponse, RestTransport

__all__ = ["LocalVapiCall", "LocalVapiRest", "VapiRequest"]

INVALID_KEY = ("Invalid Key. Hot tip, you may be using the private key instead of the "
               "public key, or vice versa.")
_REASONS = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
            403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}
#: `CreateCallDTO`'s properties (VAPI's OpenAPI schema)
_CALL_FIELDS = frozenset({
    "assistantVersion", "transport", "customers", "name", "schedulePlan", "assistantId",
    "assistant", "assistantOverrides", "squadId", "squad", "squadOverrides", "workflowId",
    "workflow", "workflowOverrides", "phoneNumberId", "phoneNumber", "customerId", "customer",
})
_TRANSPORT_FIELDS = frozenset({"provider", "conversationType", "audioFormat"})
_AUDIO_FIELDS = frozenset({"format", "container", "sampleRate"})

#: `(call_id, audio_format) -> websocketCallUrl`
WebSocketUrl = Callable[[str, VapiAudioFormat], str]


def vapi_websocket_url(call_id: str, audio_format: VapiAudioFormat) -> str:
    """VAPI's own shape (`wss://api.vapi.ai/<id>/transport`), for REST-only tests."""
    return f"wss://api.vapi.ai/{call_id}/transport"


class _Refused(Exception):
    """An error answer: `listed` for class-validator's findings, which VAPI sends as
    a list of strings; any other error's message is one string."""

    def __init__(self, status: int, *messages: str, listed: bool = False) -> None:
        self.status = status
        self.messages = messages
        self.listed = listed
        super().__init__(status, *messages)

    def body(self) -> dict[str, Any]:
        return {"message": list(self.messages) if self.listed else self.messages[0],
                "error": _REASONS.get(self.status, "Error"), "statusCode": self.status}


@attrs.frozen(kw_only=True)
class VapiRequest:
    """One request as the fake saw and answered it."""

    method: str
    path: str
    #: the parsed JSON body; None when it was not JSON
    body: Any
    #: whether the bearer token was the key
    authorized: bool
    status: int
    #: the error's messages when refused
    errors: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class LocalVapiCall:
    """A call the fake created."""

    id: str
    assistant_id: str | None
    #: the inline `assistant`, when given instead of an id
    assistant: Mapping[str, Any] | None
    audio_format: VapiAudioFormat
    websocket_url: str
    overrides: Mapping[str, Any] | None
    #: `assistantOverrides.metadata`
    metadata: Mapping[str, Any] | None
    #: the whole request body
    request: Mapping[str, Any]


class LocalVapiRest:
    """VAPI's `POST /call` in process. `api_key` is the one key it accepts;
    `assistants`, when given, are the assistant ids that exist (others get 400, as
    a missing resource does); `websocket_url` names each call's socket."""

    def __init__(self, *, api_key: str, websocket_url: WebSocketUrl = vapi_websocket_url,
                 assistants: Collection[str] | None = None,
                 org_id: str = "00000000-0000-4000-8000-00000000000a") -> None:
        self.api_key = api_key
        self.websocket_url = websocket_url
        self.assistants = None if assistants is None else frozenset(assistants)
        self.org_id = org_id
        self.requests: list[VapiRequest] = []
        self.calls: dict[str, LocalVapiCall] = {}
        self._errors: list[tuple[int, str]] = []

    def __repr__(self) -> str:
        return f"LocalVapiRest(calls={len(self.calls)}, requests={len(self.requests)})"

    def fail_next(self, status: int, message: str) -> None:
        """Answer the next authorized `POST /call` with this error instead (402 out
        of credits, 429, 500...), once; calls queue."""
        self._errors.append((status, message))

    def transport(self) -> httpx.AsyncBaseTransport:
        """The API in memory, for `VapiRest(transport=...)`; the URL's host is ignored."""
        return RestTransport(self.handle)

    def asgi_app(self) -> RestAsgiApp:
        """The API as an ASGI app, to serve on loopback."""
        return RestAsgiApp(self.handle)

    # -- the handler --------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str],
               body: bytes) -> RestResponse:
        """Answer one request (header names in any case): status and JSON body."""
        lower = {k.lower(): v for k, v in headers.items()}
        scheme, _, token = lower.get("authorization", "").strip().partition(" ")
        authorized = scheme.lower() == "bearer" and token.strip() == self.api_key
        parsed: Any = None
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        try:
            status, answer = 201, self._route(method, path, authorized,
                                              lower.get("content-type", ""), body)
        except _Refused as refused:
            status, answer = refused.status, refused.body()
            errors = refused.messages
        else:
            errors = ()
        self.requests.append(VapiRequest(method=method, path=path, body=parsed,
                                         authorized=authorized, status=status, errors=errors))
        return RestResponse(status=status, body=json.dumps(answer).encode())

    def _route(self, method: str, path: str, authorized: bool, content_type: str,
               raw: bytes) -> dict[str, Any]:
        if (method, path.rstrip("/")) != ("POST", "/call"):
            # Nest answers unknown routes before any guard [UNCONFIRMED for VAPI]
            raise _Refused(404, f"Cannot {method} {path}")
        if not authorized:
            raise _Refused(401, INVALID_KEY)
        if self._errors:
            raise _Refused(*self._errors.pop(0))
        return self._create(content_type, raw)

    def _create(self, content_type: str, raw: bytes) -> dict[str, Any]:
        if content_type.split(";")[0].strip().lower() != "application/json":
            # [strict]: Nest would see an empty body and list every missing field
            raise _Refused(400, "the body must be JSON (Content-Type: application/json)")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _Refused(400, f"Unexpected token in JSON: {exc}") from None  # [UNCONFIRMED]
        if not isinstance(body, dict):
            raise _Refused(400, "the body must be a JSON object")  # [UNCONFIRMED]
        problems = [f"property {name} should not exist" for name in body
                    if name not in _CALL_FIELDS]
        audio = self._check(body, problems)
        if problems:
            raise _Refused(400, *problems, listed=True)
        assistant_id = body.get("assistantId")
        if self.assistants is not None and assistant_id not in self.assistants:
            # a missing resource is a 400 (the OpenAPI's wording); message [UNCONFIRMED]
            raise _Refused(400, f"Couldn't Get Assistant. `assistantId` {assistant_id} "
                                "Does Not Exist.")
        call_id = str(uuid.uuid4())
        url = self.websocket_url(call_id, audio)
        overrides = body.get("assistantOverrides")
        metadata = overrides.get("metadata") if isinstance(overrides, dict) else None
        self.calls[call_id] = LocalVapiCall(
            id=call_id, assistant_id=assistant_id, assistant=body.get("assistant"),
            audio_format=audio, websocket_url=url, overrides=overrides, metadata=metadata,
            request=body)
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        answer: dict[str, Any] = {"id": call_id}
        if assistant_id is not None:
            answer["assistantId"] = assistant_id
        answer |= {"type": "vapi.websocketCall", "createdAt": now, "updatedAt": now,
                   "orgId": self.org_id, "cost": 0, "status": "queued",
                   "transport": {"provider": WEBSOCKET_PROVIDER, "websocketCallUrl": url}}
        for name in ("assistant", "assistantOverrides", "name"):
            if name in body:
                answer[name] = body[name]
        return answer

    def _check(self, body: dict[str, Any], problems: list[str]) -> VapiAudioFormat:
        """The body's audio format; what is wrong with it goes in `problems`
        (class-validator's wording, the path dotted)."""
        chosen = [name for name in ("assistantId", "assistant", "squadId", "squad",
                                    "workflowId", "workflow") if name in body]
        if not {"assistantId", "assistant"} & set(chosen):
            # squads and workflows are VAPI's; this fake has assistants only [strict]
            problems.append("assistantId or assistant is required")  # [UNCONFIRMED]
        elif len(chosen) > 1:
            problems.append(f"give one of {' and '.join(chosen)}")  # [UNCONFIRMED]
        if "assistantId" in body and (not isinstance(body["assistantId"], str)
                                      or not body["assistantId"]):
            problems.append("assistantId must be a string")
        problems.extend(f"{name} must be an object"  # [UNCONFIRMED] wording
                        for name in ("assistant", "assistantOverrides", "customer")
                        if name in body and not isinstance(body[name], dict))
        overrides = body.get("assistantOverrides")
        if isinstance(overrides, dict) and "metadata" in overrides \
                and not isinstance(overrides["metadata"], dict):
            problems.append("assistantOverrides.metadata must be an object")
        if "name" in body and (not isinstance(body["name"], str) or len(body["name"]) > 40):
            problems.append("name must be shorter than or equal to 40 characters")
        if "phoneNumberId" in body or "phoneNumber" in body:
            # documented as not permitted with this transport; message [UNCONFIRMED]
            problems.append("phoneNumber and phoneNumberId are not permitted with the "
                            "vapi.websocket transport")
        transport = body.get("transport")
        if not isinstance(transport, dict):
            # [strict]: without a transport VAPI makes another kind of call
            problems.append("transport must be an object")
            return VapiAudioFormat()
        problems.extend(f"transport.property {name} should not exist" for name in transport
                        if name not in _TRANSPORT_FIELDS)
        if transport.get("provider") != WEBSOCKET_PROVIDER:
            # [strict]: VAPI's other transports are for phone calls, not faked here
            problems.append(f"transport.provider must be {WEBSOCKET_PROVIDER}")
        if transport.get("conversationType", "voice") != "voice":
            problems.append("transport.conversationType must be one of the following "
                            "values: voice")
        audio = transport.get("audioFormat")
        if audio is None:
            return VapiAudioFormat()  # VAPI's default: 16 kHz raw pcm_s16le
        if not isinstance(audio, dict):
            problems.append("transport.audioFormat must be an object")
            return VapiAudioFormat()
        where = "transport.audioFormat"
        problems.extend(f"{where}.property {name} should not exist" for name in audio
                        if name not in _AUDIO_FIELDS)
        fmt: Any = audio.get("format")
        container: Any = audio.get("container", "raw")
        rate: Any = audio.get("sampleRate")
        before = len(problems)
        if fmt not in AUDIO_FORMATS:
            problems.append(f"{where}.format must be one of the following values: "
                            f"{', '.join(sorted(AUDIO_FORMATS, reverse=True))}")
        if container not in AUDIO_CONTAINERS:
            problems.append(f"{where}.container must be one of the following values: raw")
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            problems.append(f"{where}.sampleRate must be a number conforming to the "
                            "specified constraints")
        elif rate > MAX_SAMPLE_RATE:
            problems.append(f"{where}.sampleRate must not be greater than {MAX_SAMPLE_RATE}")
        elif rate <= 0 or rate != int(rate):
            # the schema allows 0 and fractions; neither is a rate to stream at [strict]
            problems.append(f"{where}.sampleRate must be a positive whole number of Hz")
        if len(problems) > before:
            return VapiAudioFormat()
        return VapiAudioFormat(format=fmt, container=container, sample_rate=int(rate))
