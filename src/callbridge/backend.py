"""Where the model lives: the backend seam, and OpenAI's Realtime API behind it.

A backend opens one realtime connection per call. The call logic speaks the
Realtime GA event vocabulary (`callbridge.realtime`); a backend for another voice
platform would translate to and from it behind the same two methods.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Protocol, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import trio

from . import codec
from . import realtime as rt
from ._errors import RemoteProtocolError
from ._sockets import BatchSocket, MessageSocket, NowaitSocket
from ._wsclient import HandshakeError, connect_websocket

if TYPE_CHECKING:
    from .config import Settings

__all__ = [
    "DEFAULT_BASE_URL",
    "EventConnection",
    "ModelConnectError",
    "OpenAIRealtime",
    "RealtimeBackend",
    "RealtimeConnection",
    "SocketLiveness",
    "backend_for",
    "one_event_batch",
    "realtime_url",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class ModelConnectError(Exception):
    """The model's realtime endpoint could not be reached or refused us. `refused`:
    it answered that we may not (HTTP 401 or 403): trying again will not help."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class RealtimeConnection(Protocol):
    async def send(self, event: rt.ClientEvent) -> None:
        """Send one client event; raises `SocketClosed` once closed."""

    async def receive(self) -> rt.ServerEvent | None:
        """The next server event, None once closed; `RemoteProtocolError` for a bad frame."""


#: what `EventConnection.receive_batch` returns: events, and errors in their place
ModelBatch: TypeAlias = list[rt.ServerEvent | RemoteProtocolError]


class RealtimeBackend(Protocol):
    def connect(self, model: str) -> AbstractAsyncContextManager[RealtimeConnection]:
        """Open a connection for one call; closing the context closes it."""


class SocketLiveness:
    """A connection's keep-alive over its `socket` (`callbridge._modelloop`), when the
    socket can: callbridge's own WebSocket can, an in-memory pair cannot. The class
    that uses it has a `socket`."""

    async def ping(self) -> None:
        """Ask the peer for a sign of life (a WebSocket ping), if the socket can."""
        ping = getattr(getattr(self, "socket", None), "ping", None)
        if ping is not None:
            await ping()

    @property
    def last_heard(self) -> float | None:
        """When the peer last sent anything; None if the socket cannot tell."""
        heard = getattr(getattr(self, "socket", None), "last_heard", None)
        return heard if isinstance(heard, float) else None


class EventConnection(SocketLiveness):
    """Realtime events over a text `MessageSocket` (encodes and decodes JSON)."""

    def __init__(self, socket: MessageSocket) -> None:
        self.socket = socket
        #: the socket's writes never wait: `run_call` writes inline (`send_nowait`)
        self.nowait: NowaitSocket | None = socket if isinstance(socket, NowaitSocket) else None
        self._batches = socket if isinstance(socket, BatchSocket) else None

    async def send(self, event: rt.ClientEvent) -> None:
        await self.socket.send(codec.encode(event))

    def send_nowait(self, *events: rt.ClientEvent) -> None:
        """Send at once, without waiting (only when `nowait`; see `Sender`)."""
        assert self.nowait is not None
        self.nowait.send_nowait(*[codec.encode(event) for event in events])

    @property
    def backlog(self) -> int:
        return 0 if self.nowait is None else self.nowait.backlog

    async def drain(self) -> None:
        assert self.nowait is not None
        await self.nowait.drain()

    async def receive(self) -> rt.ServerEvent | None:
        text = await self.socket.receive()
        return None if text is None else codec.decode_server_event(text)

    async def receive_batch(self) -> ModelBatch | None:
        """Every event one read brought (at least one), None once closed. A message
        that is not a valid event comes as its `RemoteProtocolError`, in its place:
        one bad message costs none of the others."""
        try:
            if self._batches is not None:
                texts = await self._batches.receive_batch()
            else:
                text = await self.socket.receive()
                texts = None if text is None else [text]
        except RemoteProtocolError as exc:  # the connection failed: None next time
            return [exc]
        return None if texts is None else [_decoded(text) for text in texts]



def _decoded(text: str | bytes) -> rt.ServerEvent | RemoteProtocolError:
    try:
        return codec.decode_server_event(text)
    except RemoteProtocolError as exc:
        return exc


def realtime_url(base_url: str, model: str) -> str:
    """The WebSocket URL for `model`, derived from an HTTP base URL as the openai SDK
    does: `https://api.openai.com/v1` -> `wss://api.openai.com/v1/realtime?model=...`."""
    parts = urlsplit(base_url)
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) or ws(s) base URL: {base_url!r}")
    query = [*parse_qsl(parts.query), ("model", model)]
    path = parts.path.rstrip("/") + "/realtime"
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


@attrs.frozen(kw_only=True)
class OpenAIRealtime:
    """OpenAI's Realtime API (GA interface: no `OpenAI-Beta` header) over callbridge's own
    lean WebSocket client (`_wsclient`: no reader task, frames parsed in the caller's task)."""

    api_key: str = attrs.field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    connect_timeout: float = 10.0
    #: server events can exceed 1 MiB (items with audio, large response.done)
    max_message_size: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls) -> OpenAIRealtime:
        """`OPENAI_API_KEY` and `OPENAI_BASE_URL`, like the openai SDK."""
        key = os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise ValueError("OPENAI_API_KEY is not set")
        return cls(api_key=key, base_url=os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)

    def connect(self, model: str) -> AbstractAsyncContextManager[RealtimeConnection]:
        return self._connect(model)

    @asynccontextmanager
    async def _connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        url = realtime_url(self.base_url, model)
        try:
            ws = await connect_websocket(
                url,
                headers=[("Authorization", f"Bearer {self.api_key}")],
                max_message_size=self.max_message_size,
                connect_timeout=self.connect_timeout,
                disconnect_timeout=2.0,
            )
        except (OSError, HandshakeError, trio.TooSlowError) as exc:
            # never echo the request: it carries the key
            status = exc.status_code if isinstance(exc, HandshakeError) else None
            detail = f" (HTTP {status})" if status is not None else ""
            raise ModelConnectError(f"cannot connect to {url}: {type(exc).__name__}{detail}",
                                    refused=status in (401, 403)) from None
        try:
            yield EventConnection(ws)
        finally:
            await ws.aclose()


def one_event_batch(model: RealtimeConnection) -> Callable[[], Awaitable[ModelBatch | None]]:
    """`EventConnection.receive_batch` for any other connection: one event a time."""
    async def receive_batch() -> ModelBatch | None:
        try:
            event = await model.receive()
        except RemoteProtocolError as exc:
            return [exc]
        return None if event is None else [event]

    return receive_batch


def backend_for(settings: Settings) -> RealtimeBackend:
    """OpenAI's Realtime API or VAPI (`CALLBRIDGE_BACKEND`), or offline (no key) the
    local echo agent: as is, or behind a local VAPI in PCM mode."""
    if settings.backend == "vapi":
        from .vapi import AUDIO_FORMATS, VapiBackend
        from .vapi_rest import VapiRest

        audio = AUDIO_FORMATS[settings.vapi_audio_format]
        if settings.vapi_api_key is None:
            from .local import LocalVapi, echo_brain

            return LocalVapi(echo_brain(), audio=audio)
        assert settings.vapi_assistant_id is not None
        return VapiBackend(rest=VapiRest(settings.vapi_api_key, base_url=settings.vapi_base_url),
                           assistant_id=settings.vapi_assistant_id, audio=audio)
    if settings.openai_api_key is None:
        from .local import LocalRealtimeServer, echo_brain

        return LocalRealtimeServer(echo_brain())
    return OpenAIRealtime(api_key=settings.openai_api_key, base_url=settings.openai_base_url)
