"""A lean WebSocket client for trio, for the model connection.

Why not trio-websocket: it reads frames in a background task and hands each message
over a memory channel, so every message the model sends costs a trip through trio's
scheduler on top of wsproto's general-purpose parsing. Here nothing runs in the
background: `receive()` reads the stream itself, in the caller's task, and parses
every frame a read brought in (`_wsframes`) before reading again, so under load many
messages cost one syscall.

The price is the usual one for an inline reader: only one task may call `receive()`
at a time (the call's reader task). `send()` may be called from several tasks; a lock
keeps frames whole. Pings are answered and the close handshake is done inside
`receive()` and `aclose()`, so a connection whose messages nobody reads does not
answer pings: the model connection is always being read.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import h11
import trio

from ._sockets import SocketClosed
from ._wsframes import (
    ABNORMAL_CLOSURE,
    Close,
    FrameReader,
    FrameWriter,
    Ping,
    WebSocketProtocolError,
    accept_key,
    handshake_key,
)

__all__ = ["ClientWebSocket", "HandshakeError", "connect_websocket", "open_websocket"]

#: the most one read takes from the stream
_READ_SIZE = 65536


class HandshakeError(Exception):
    """The server did not accept the WebSocket upgrade (or broke off during it).

    The message names what went wrong, and the HTTP status if there was one; it never
    repeats the request, whose headers may carry credentials."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        #: the status of the server's answer, when it answered
        self.status_code = status_code


class ClientWebSocket:
    """The client end of an open WebSocket connection (see `connect_websocket`).

    Satisfies `MessageSocket`: `receive()` returns None once the connection is closed,
    and `send()` raises `SocketClosed` then."""

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
        self._stream = stream
        #: when the server last sent anything (trio's clock): how a stall shows
        self.last_heard = trio.current_time()
        self._reader = FrameReader(max_message_size=max_message_size)
        self._reader.feed(received)
        self._writer = FrameWriter()
        self._send_lock = trio.Lock()
        self._disconnect_timeout = disconnect_timeout
        #: the close code the server sent: 1005 if its close frame had none, 1006 if
        #: the connection ended without one; None while open
        self.close_code: int | None = None
        self.close_reason = ""
        # no more frames go out: our close frame was sent, or the stream broke
        self._send_closed = False
        # no more frames come in: the server's close, EOF, a protocol error, aclose
        self._receive_closed = False
        self._peer_done = trio.Event()  # set with _receive_closed, for aclose to wait on
        self._reading = False  # a task is waiting in receive_some
        self._aclose_called = False

    @property
    def closed(self) -> bool:
        return self._receive_closed or self._send_closed

    async def send(self, text: str | bytes) -> None:
        """Send one message (text for `str`, binary for `bytes`); raises `SocketClosed`
        once the connection is closed or broken."""
        if self._send_closed:
            raise SocketClosed("websocket is closed")
        frame = self._writer.text(text) if isinstance(text, str) else self._writer.binary(text)
        await self._send_frame(frame)

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the connection is closed.

        Reads the stream in the calling task: only one task may call it at a time.
        Answers pings and the server's close frame as it reads. A frame the protocol
        does not allow closes the connection with the matching code and raises
        `WebSocketProtocolError` (a `RemoteProtocolError`) once; after that, None."""
        reader = self._reader
        while True:
            try:
                event = reader.next_event()
            except WebSocketProtocolError as exc:
                await self._fail(exc)
                raise
            if event is None:
                if not await self._read():
                    return None
            elif isinstance(event, (str, bytes)):
                return event
            elif isinstance(event, Ping):
                try:
                    await self._send_frame(self._writer.pong(event.payload))
                except SocketClosed:
                    pass  # the next read finds the end
            elif isinstance(event, Close):
                await self._peer_closed(event)
                return None
            # a Pong: we send no pings, so there is nothing to match it with

    async def ping(self) -> None:
        """Send a ping (the server's pong, like anything it sends, moves `last_heard`);
        nothing when the connection is closed."""
        try:
            await self._send_frame(self._writer.ping(b"callbridge"))
        except SocketClosed:
            pass

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection: send a close frame, wait up to `disconnect_timeout`
        for the server's, then close the stream. Idempotent; shielded, so it completes
        (within the timeout) even when the calling task is being cancelled."""
        if self._aclose_called:
            return
        self._aclose_called = True
        try:
            frame = self._writer.close(code, reason)  # ValueError for a reserved code
            with trio.move_on_after(self._disconnect_timeout, shield=True):
                try:
                    await self._send_frame(frame, closing=True)
                except SocketClosed:
                    pass  # we sent one already, or the stream is gone: nothing to wait for
                else:
                    await self._await_peer_close()
                await self._stream.aclose()
        finally:
            self._send_closed = self._receive_closed = True
            self._peer_done.set()
            await trio.aclose_forcefully(self._stream)

    # --- internals --------------------------------------------------------------------

    async def _send_frame(self, frame: bytes, *, closing: bool = False) -> None:
        lock = self._send_lock
        # almost never contended (a pong or the close against a message): take it
        # without the checkpoint `async with` costs
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self._send_closed:
                raise SocketClosed("websocket is closed")
            if closing:
                self._send_closed = True  # nothing may follow a close frame
            # a Cancelled from here on comes from inside send_all, which may have
            # written part of the frame
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._send_closed = True
                raise SocketClosed("websocket connection lost") from None
            except BaseException:
                self._send_closed = True  # half a frame may be on the wire
                raise
        finally:
            lock.release()

    async def _read(self) -> bool:
        """Feed the reader with the next bytes from the stream; False at the end."""
        if self._receive_closed:
            return False
        if self._reading and self._aclose_called:
            # aclose() (in another task) is reading until the server's close: let it
            await self._peer_done.wait()
            return False
        self._reading = True
        try:
            data = await self._stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        finally:
            self._reading = False
        if not data:
            if self.close_code is None:
                self.close_code = ABNORMAL_CLOSURE
            # a peer that is gone reads nothing: fail sends at once, not at the next RST
            self._send_closed = self._receive_closed = True
            self._peer_done.set()
            return False
        self.last_heard = trio.current_time()
        self._reader.feed(data)
        return True

    async def _peer_closed(self, close: Close) -> None:
        self.close_code = close.code
        self.close_reason = close.reason
        self._receive_closed = True
        self._peer_done.set()
        try:
            await self._send_frame(self._writer.close(close.code), closing=True)
        except SocketClosed:
            pass  # we had sent ours already (this was the answer), or the stream is gone

    async def _fail(self, error: WebSocketProtocolError) -> None:
        """Fail the connection (RFC 6455 7.1.7): send a close with the error's code."""
        self.close_code = ABNORMAL_CLOSURE
        self._receive_closed = True
        self._peer_done.set()
        try:
            await self._send_frame(self._writer.close(error.code, str(error)), closing=True)
        except SocketClosed:
            pass

    async def _await_peer_close(self) -> None:
        """After our close frame: read (and drop) until the server's close or EOF."""
        if self._reading:  # another task is in receive(): it will see the close
            await self._peer_done.wait()
            return
        reader = self._reader
        while not self._receive_closed:
            try:
                event = reader.next_event()
            except WebSocketProtocolError:
                return
            if event is None:
                if not await self._read():
                    return
            elif isinstance(event, Close):
                self.close_code = event.code
                self.close_reason = event.reason
                self._receive_closed = True
                self._peer_done.set()


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
