"""VAPI's REST API, for the one thing the bridge needs: a call on VAPI's WebSocket transport.

`POST /call` with `transport.provider = "vapi.websocket"` creates a call whose audio
goes over a WebSocket instead of a phone line; the answer's
`transport.websocketCallUrl` is where to connect (see docs/vapi-protocol.md for the
socket's protocol). A small async client on httpx, which runs on trio, read like
`twilio_rest`: one instance for the process, `aclose()` at shutdown.

Failures raise `VapiError` with the HTTP status and VAPI's message (NestJS's
`{"message", "error", "statusCode"}` body). Nothing is retried: creating a call is
not idempotent, a caller is waiting on the line while we try, and VAPI's 429 is
reported to lock a key out for some twenty seconds, longer than a caller waits. The
bridge decides what the caller hears instead.

The API key is never in a repr, a log line or an exception message; neither is the
`websocketCallUrl`, which needs no credential to join the call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx

from . import __version__
from .config import ConfigError, _url
from .twilio_rest import HttpApi, _environ

__all__ = ["DEFAULT_API_URL", "VapiAudioFormat", "VapiCall", "VapiError", "VapiRest"]

log = logging.getLogger("callbridge.vapi_rest")

DEFAULT_API_URL = "https://api.vapi.ai"
WEBSOCKET_PROVIDER = "vapi.websocket"
#: `AudioFormat.format` values (VAPI's OpenAPI schema)
AUDIO_FORMATS = frozenset({"pcm_s16le", "mulaw"})
#: `AudioFormat.container` values
AUDIO_CONTAINERS = frozenset({"raw"})
#: `AudioFormat.sampleRate`'s maximum in the schema
MAX_SAMPLE_RATE = 192000


def _check_audio(instance: VapiAudioFormat, attribute: attrs.Attribute[Any], value: Any) -> None:
    if attribute.name == "format" and value not in AUDIO_FORMATS:
        raise ValueError(f"audio format {value!r}: expected pcm_s16le or mulaw")
    if attribute.name == "container" and value not in AUDIO_CONTAINERS:
        raise ValueError(f"audio container {value!r}: expected 'raw'")
    if attribute.name == "sample_rate" and (
            isinstance(value, bool) or not isinstance(value, int)
            or not 0 < value <= MAX_SAMPLE_RATE):
        raise ValueError(f"sample rate {value!r}: expected an int in 1..{MAX_SAMPLE_RATE} Hz")


@attrs.frozen(kw_only=True)
class VapiAudioFormat:
    """The audio on the call's WebSocket, both ways: `pcm_s16le` (16-bit signed
    little-endian, mono) or `mulaw` (G.711), raw, at `sample_rate` Hz. VAPI's
    defaults: 16000 for PCM; its guide pairs mu-law with 8000."""

    format: str = attrs.field(default="pcm_s16le", validator=_check_audio)
    container: str = attrs.field(default="raw", validator=_check_audio)
    sample_rate: int = attrs.field(default=16000, validator=_check_audio)

    @classmethod
    def mulaw(cls) -> VapiAudioFormat:
        """8 kHz mu-law: what Twilio carries, so nothing is transcoded."""
        return cls(format="mulaw", sample_rate=8000)

    def to_json(self) -> dict[str, Any]:
        """The `transport.audioFormat` object."""
        return {"format": self.format, "container": self.container,
                "sampleRate": self.sample_rate}

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.format == "pcm_s16le" else 1


@attrs.frozen(kw_only=True)
class VapiCall:
    """A call VAPI created: its `id`, the `websocket_url` to stream its audio on
    (kept out of the repr: it is the call's only credential) and its `status` when
    created (`queued`, as a rule)."""

    id: str
    websocket_url: str = attrs.field(repr=False)
    status: str | None = None


class VapiError(Exception):
    """VAPI refused a request, or no answer came.

    `status_code` is the HTTP status (None when no response came: `__cause__` is
    httpx's error); `message` VAPI's explanation. `refused` is true for 401 and 403:
    the API key is wrong, revoked or not allowed this.
    """

    def __init__(self, action: str, status_code: int | None, message: str) -> None:
        self.action = action
        self.status_code = status_code
        self.message = message
        super().__init__(action, status_code, message)

    @property
    def refused(self) -> bool:
        return self.status_code in (401, 403)

    def __str__(self) -> str:
        status = "" if self.status_code is None else f"HTTP {self.status_code}, "
        return f"{self.action}: {status}{self.message}"

    @classmethod
    def from_response(cls, action: str, response: httpx.Response) -> VapiError:
        """The error a non-2xx response describes: NestJS's `message` (a string, or a
        list of validation failures joined), else the status line and the start of
        the body."""
        try:
            body = response.json()
        except ValueError:
            body = None
        message = body.get("message") if isinstance(body, dict) else None
        if isinstance(message, list) and message:
            message = "; ".join(str(item) for item in message)
        if isinstance(message, str) and message.strip():
            return cls(action, response.status_code, message.strip())
        text = " ".join(response.text.split())
        fallback = response.reason_phrase or "error"
        if text:
            fallback += f": {text[:200]}{'...' if len(text) > 200 else ''}"
        return cls(action, response.status_code, fallback)


class VapiRest(HttpApi):
    """An async client for VAPI's `POST /call`, on httpx (so on trio).

    `timeout` bounds each phase of a request (connect, write, read) in seconds;
    `transport` replaces the network (tests pass `LocalVapiRest.transport()` or an
    `httpx.MockTransport`).
    """

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_API_URL,
                 transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 10.0) -> None:
        if not api_key.strip():
            raise ValueError("api_key is empty")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {api_key.strip()}",
                     "User-Agent": f"callbridge/{__version__}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"VapiRest(base_url={self.base_url!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> VapiRest | None:
        """A client for `VAPI_API_KEY` at `VAPI_BASE_URL` (default
        `https://api.vapi.ai`); None without a key. Raises `ConfigError` for a base
        URL that is not an http(s) URL (the key is never echoed)."""
        env = _environ(env)
        base_url = _url(env, "VAPI_BASE_URL", DEFAULT_API_URL, {"http", "https"})
        assert base_url is not None
        key = env.get("VAPI_API_KEY", "").strip()
        if not key:
            return None
        if any(c.isspace() for c in key):
            raise ConfigError("VAPI_API_KEY: expected one token, without spaces")
        return cls(key, base_url=base_url, transport=transport)


    async def create_websocket_call(self, assistant_id: str, audio: VapiAudioFormat, *,
                                    metadata: Mapping[str, str] | None = None) -> VapiCall:
        """Create a call to the saved assistant `assistant_id` on VAPI's WebSocket
        transport with `audio` both ways; connect to its `websocket_url` next.

        `metadata` goes in `assistantOverrides.metadata` (`POST /call` has no
        top-level `metadata`), where VAPI keeps it with the call's assistant.
        """
        if not assistant_id.strip():
            raise ValueError("assistant_id is empty")
        body: dict[str, Any] = {
            "assistantId": assistant_id,
            "transport": {"provider": WEBSOCKET_PROVIDER, "audioFormat": audio.to_json()},
        }
        if metadata:
            body["assistantOverrides"] = {"metadata": dict(metadata)}
        action = f"create VAPI call for assistant {assistant_id}"
        status_code, resource = await self._request("POST", "/call", body, action=action)
        call_id = resource.get("id")
        transport = resource.get("transport")
        url = transport.get("websocketCallUrl") if isinstance(transport, dict) else None
        if not isinstance(call_id, str) or not call_id:
            raise VapiError(action, status_code, "the response has no call id")
        if not isinstance(url, str) or not url:
            raise VapiError(action, status_code, f"call {call_id}: the response has no "
                                         "transport.websocketCallUrl")
        if urlsplit(url).scheme not in ("ws", "wss") or not urlsplit(url).hostname:
            raise VapiError(action, status_code, f"call {call_id}: transport.websocketCallUrl is "
                                         "not a ws:// or wss:// URL")
        status = resource.get("status")
        log.info("VAPI call %s created (%s, %s %d Hz)", call_id,
                 status if isinstance(status, str) else "no status", audio.format,
                 audio.sample_rate)
        return VapiCall(id=call_id, websocket_url=url,
                        status=status if isinstance(status, str) else None)

    async def _request(self, method: str, path: str, body: Mapping[str, Any], *,
                       action: str) -> tuple[int, dict[str, Any]]:
        """One request; the response's status and JSON object, or `VapiError`."""
        try:
            response = await self._client.request(method, f"{self.base_url}{path}", json=body)
        except httpx.TransportError as exc:
            raise VapiError(action, None, f"{type(exc).__name__}: {exc}" if str(exc)
                            else type(exc).__name__) from exc
        if not response.is_success:
            raise VapiError.from_response(action, response)
        try:
            resource = response.json()
        except ValueError:
            resource = None
        if not isinstance(resource, dict):
            raise VapiError(action, response.status_code, "the response is not a JSON object")
        return response.status_code, resource
