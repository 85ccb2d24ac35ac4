"""Opening a WebSocket as a client on trio, for the model connection: TCP, TLS for
`wss://`, and the opening handshake (RFC 6455 4.1, parsed with h11). The open
connection is a `callbridge._websocket.WebSocket` (no reader task, frames parsed in
the reader's task, writes that never wait); see there why not trio-websocket.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import h11
import trio

from ._websocket import WebSocket
from ._wire import READ_SIZE as _READ_SIZE
from ._wire import Wire
from ._wsframes import accept_key, handshake_key

__all__ = ["ClientWebSocket", "HandshakeError", "connect_websocket", "open_websocket"]


class HandshakeError(Exception):
    """The server did not accept the WebSocket upgrade (or broke off during it).

    The message names what went wrong, and the HTTP status if there was one; it never
    repeats the request, whose headers may carry credentials."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        #: the status of the server's answer, when it answered
        self.status_code = status_code


class ClientWebSocket(WebSocket):
    """The client end of an open WebSocket connection (see `connect_websocket`): a
    `callbridge._websocket.WebSocket` over `stream`, our frames masked."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_message_size: int = 1 << 20,
        disconnect_timeout: float = 2.0,
        received: bytes = b"",
    ) -> None:
        """Wrap `stream`, whose opening handshake is done; `received` is what was read
        past the server's handshake response."""
        super().__init__(Wire(stream), client=True, max_message_size=max_message_size,
                         disconnect_timeout=disconnect_timeout, received=received)


async def connect_websocket(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    connect_timeout: float = 10.0,
    max_message_size: int = 1 << 20,
    disconnect_timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> ClientWebSocket:
    """Open a WebSocket to a `ws://` or `wss://` URL; the caller closes it with `aclose()`.

    Connecting, the TLS handshake and the opening handshake together must finish
    within `connect_timeout` (else `trio.TooSlowError`). A refused or failed upgrade
    raises `HandshakeError`, an unreachable host `OSError`. `headers` are added to the
    upgrade request (e.g. Authorization). `wss://` uses `ssl_context`, by default
    `ssl.create_default_context()`."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    host = parts.hostname
    port = parts.port or (443 if secure else 80)
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if secure else 80):
        host_header += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with trio.fail_after(connect_timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        try:
            if secure:
                context = ssl_context if ssl_context is not None else ssl.create_default_context()
                stream = trio.SSLStream(stream, context, server_hostname=host,
                                        https_compatible=True)
                await stream.do_handshake()
            received = await _handshake(stream, host_header, target, headers)
        except BaseException as exc:
            await trio.aclose_forcefully(stream)
            if isinstance(exc, trio.BrokenResourceError):  # e.g. a certificate not trusted
                raise HandshakeError("the connection broke during the handshake") from exc
            raise
    return ClientWebSocket(stream, max_message_size=max_message_size,
                           disconnect_timeout=disconnect_timeout, received=received)


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    connect_timeout: float = 10.0,
    max_message_size: int = 1 << 20,
    disconnect_timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[ClientWebSocket]:
    """`connect_websocket` as a context: leaving it closes the connection."""
    ws = await connect_websocket(
        url, headers=headers, connect_timeout=connect_timeout,
        max_message_size=max_message_size, disconnect_timeout=disconnect_timeout,
        ssl_context=ssl_context)
    try:
        yield ws
    finally:
        await ws.aclose()


async def _handshake(
    stream: trio.abc.Stream, host: str, target: str, headers: Sequence[tuple[str, str]]
) -> bytes:
    """The opening handshake (RFC 6455 4.1); returns the bytes read past the response."""
    key = handshake_key()
    connection = h11.Connection(h11.CLIENT)
    try:
        request = h11.Request(method="GET", target=target, headers=[
            ("Host", host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            *headers,
        ])
    except h11.LocalProtocolError:
        # h11's message would quote the offending header, which may be a credential
        raise ValueError("a header of the WebSocket request is not valid HTTP") from None
    await stream.send_all(connection.send(request) or b"")
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            raise HandshakeError("the server's handshake response is not valid HTTP") from None
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
        elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            _check_accepted(event.headers, key)
            return connection.trailing_data[0]
        elif isinstance(event, h11.Response):
            raise HandshakeError(
                f"the server refused the WebSocket upgrade: HTTP {event.status_code}",
                event.status_code)
        elif not isinstance(event, h11.InformationalResponse):  # 1xx: the answer follows
            raise HandshakeError("the server closed the connection during the handshake")


def _check_accepted(headers: Sequence[tuple[bytes, bytes]], key: str) -> None:
    """A 101 must confirm the upgrade and prove it read our key (RFC 6455 4.2.2)."""
    values: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        values.setdefault(name, []).append(value)  # h11 lower-cases names
    upgrade = b",".join(values.get(b"upgrade", [])).strip().lower()
    connection = {token.strip() for value in values.get(b"connection", [])
                  for token in value.lower().split(b",")}
    if upgrade != b"websocket" or b"upgrade" not in connection:
        raise HandshakeError("HTTP 101 without Upgrade: websocket", 101)
    if values.get(b"sec-websocket-accept") != [accept_key(key).encode()]:
        raise HandshakeError("HTTP 101 with a wrong Sec-WebSocket-Accept", 101)
    # we offered no extension and no subprotocol: a server must not pick one
    if b"sec-websocket-extensions" in values or b"sec-websocket-protocol" in values:
        raise HandshakeError("HTTP 101 with an extension or subprotocol not offered", 101)
