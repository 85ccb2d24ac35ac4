"""The front door: callbridge serves Twilio's media stream itself, hypercorn the rest.

Under ASGI, every message of a call's Twilio socket crosses hypercorn's connection
task, its WebSocket wrapper and a queue, each with its own checkpoints: measured,
that was most of what a call cost (bench/README.md). So `callbridge serve` runs
hypercorn's trio worker with `FrontDoor` as the handler of each accepted connection,
in place of hypercorn's `TCPServer` (a `CallbridgeApp(front_door=True)` has `install`
swap the name in `hypercorn.trio.run` as it starts, for the hypercorn versions pinned
in pyproject.toml; a `FrontDoor` passes any other app's connections to `TCPServer`
untouched). One port, one process per worker, as before:

* The front door reads the request head (parsed with h11). A WebSocket upgrade of
  `/media-stream` is answered here: the signature and the busy checks are the app's
  (`CallbridgeApp.refuse_stream`), the `101` is built with h11, and the call runs on
  callbridge's own `WebSocket` (`callbridge._websocket`: frames parsed in the reading
  task, several per read; `media` and `mark` written in one non-blocking send).
* Anything else (the webhook, health, users' own routes, HTTP/2) goes to hypercorn's
  `TCPServer` with the bytes already read put back in front of the stream: hypercorn
  serves it exactly as it would have, keep-alive and all.

TLS (`--certfile/--keyfile`) is hypercorn's: the front door completes the handshake
on trio's `SSLStream` and reads through it; a media stream over TLS then writes
through `SSLStream` (correct, not the fast path: put TLS in front, as usual).

`hypercorn --worker-class trio callbridge.app:app` does not use the front door: the
media stream is served through ASGI there, slower and otherwise the same.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import h11
import trio

from ._websocket import WebSocket
from ._wire import READ_SIZE, Wire
from ._wsframes import accept_key

if TYPE_CHECKING:
    from .app import CallbridgeApp

__all__ = ["FrontDoor", "MediaUpgrade", "install", "media_upgrade"]

log = logging.getLogger("callbridge.frontdoor")

#: the hypercorn releases whose connection handler `FrontDoor` stands in for
TESTED_HYPERCORN = ("0.18",)
#: a request head must come within this long (a connection that says nothing is closed)
HEAD_TIMEOUT_S = 10.0
#: a head that has not ended by this size is not ours: hypercorn answers it
MAX_HEAD = 16 * 1024


@attrs.frozen
class MediaUpgrade:
    """A WebSocket upgrade request for the media stream (see `media_upgrade`)."""

    #: the request target: path and query
    target: str
    #: the request's headers, names lower-cased (repeated ones joined with ", ")
    headers: Mapping[str, str]
    #: bytes the client sent past the head (frames already on their way)
    received: bytes
    connection: h11.Connection = attrs.field(eq=False, repr=False)

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def accept(self) -> bytes:
        """The `101 Switching Protocols` that accepts the upgrade."""
        key = self.headers["sec-websocket-key"]
        return self.connection.send(h11.InformationalResponse(status_code=101, headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key))])) or b""

    def refuse(self, status: int, text: str) -> bytes:
        """An HTTP error response that refuses the upgrade (the connection then closes)."""
        body = text.encode()
        head = self.connection.send(h11.Response(status_code=status, headers=[
            ("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
            ("Connection", "close")])) or b""
        return head + (self.connection.send(h11.Data(data=body)) or b"") + (
            self.connection.send(h11.EndOfMessage()) or b"")


def media_upgrade(data: bytes, path: str) -> MediaUpgrade | None:
    """The media-stream upgrade that `data` (a whole request head and maybe more)
    asks for, or None when it is anything else: another path or method, not a
    WebSocket upgrade, not version 13, not HTTP/1.1 at all. Sans-I/O."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    try:
        request = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(request, h11.Request) or request.method != b"GET":
        return None
    target = request.target.decode("latin-1")
    if target.partition("?")[0] != path:
        return None
    headers: dict[str, str] = {}
    for name, value in request.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if (headers.get("upgrade", "").strip().lower() != "websocket" or "upgrade" not in tokens
            or headers.get("sec-websocket-version", "").strip() != "13"
            or not headers.get("sec-websocket-key")):
        return None
    try:
        end = connection.next_event()  # a GET upgrade has no body: its end, then a pause
        paused = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(end, h11.EndOfMessage) or paused is not h11.PAUSED:
        return None
    return MediaUpgrade(target, headers, connection.trailing_data[0], connection)


class _Replayed(trio.abc.Stream):
    """A stream with bytes already read put back in front (for hypercorn), passing
    through what hypercorn asks of a trio stream (`socket`, TLS details)."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self._stream = stream
        self._head = head

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            await trio.lowlevel.checkpoint()
            return head
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self._stream.aclose()


class FrontDoor:
    """One accepted connection: hypercorn's `TCPServer` signature, so that its worker
    can build one per connection (`install`). See the module docstring."""

    def __init__(self, app: Any, config: Any, context: Any, state: Any,
                 stream: trio.abc.Stream) -> None:
        from hypercorn.trio.tcp_server import TCPServer

        # hypercorn annotates the stream as TLS, and serves plain ones just the same
        self._hypercorn: Callable[[trio.abc.Stream], Awaitable[None]] = functools.partial(
            TCPServer, app, config, context, state)
        self._app = getattr(app, "app", None)  # hypercorn's wrapper holds the ASGI app
        self._stream = stream

    def __await__(self) -> Any:
        return self.run().__await__()

    async def run(self) -> None:
        from .app import MEDIA_PATH, CallbridgeApp  # (which imports this module)

        stream, app = self._stream, self._app
        if not isinstance(app, CallbridgeApp) or not app.front_door:
            await self._hypercorn(stream)  # not ours to serve
            return
        head, http2 = b"", False
        with trio.move_on_after(HEAD_TIMEOUT_S) as waited:
            try:
                if isinstance(stream, trio.SSLStream):
                    await stream.do_handshake()
                    http2 = stream.selected_alpn_protocol() not in (None, "http/1.1")
                while not http2 and b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
                    data = await stream.receive_some(READ_SIZE)
                    if not data:
                        break
                    head += data
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                head = b""
        if http2 and not waited.cancelled_caught:
            await self._hypercorn(stream)  # HTTP/2 (negotiated over TLS): hypercorn's alone
            return
        if waited.cancelled_caught or not head:
            await trio.aclose_forcefully(stream)
            return
        upgrade = media_upgrade(head, MEDIA_PATH)
        if upgrade is None:
            await self._hypercorn(_Replayed(stream, head))
            return
        await _serve_media(app, upgrade, stream)


async def _serve_media(app: CallbridgeApp, upgrade: MediaUpgrade,
                       stream: trio.abc.Stream) -> None:
    """Answer the upgrade and run the call on callbridge's own WebSocket."""
    from .app import MAX_TWILIO_MESSAGE

    wire = Wire(stream)
    try:
        refusal = app.refuse_stream(upgrade.query, upgrade.headers)
        if refusal == 403:
            wire.send_nowait(upgrade.refuse(403, "invalid Twilio signature\n"))
            await wire.drain()
            return
        socket = WebSocket(wire, client=False, max_message_size=MAX_TWILIO_MESSAGE,
                           received=upgrade.received)

        async def accept() -> WebSocket:
            wire.send_nowait(upgrade.accept())
            await wire.drain()
            return socket

        try:
            if refusal is None:
                await app.run_stream(accept, upgrade.headers)
            else:  # busy: accepted, then closed (see `refuse_stream`)
                await accept()
                await socket.aclose(refusal, "try again later")
        finally:
            await socket.aclose()
    except Exception:  # the connection's own failure; the call logged its own
        log.debug("media stream connection failed", exc_info=True)
    finally:
        await wire.aclose()


def install() -> None:
    """Have hypercorn's trio worker (in this process) hand each connection to
    `FrontDoor`. Idempotent. Refuses an untested hypercorn: the name it swaps is
    internal to hypercorn."""
    import hypercorn
    from hypercorn.trio import run as hypercorn_run

    version = getattr(hypercorn, "__version__", None) or _version("hypercorn")
    if not version.startswith(TESTED_HYPERCORN):
        raise RuntimeError(f"callbridge's front door is tested with hypercorn "
                           f"{', '.join(TESTED_HYPERCORN)}.x, not {version}: run "
                           f"`hypercorn --worker-class trio callbridge.app:app` instead")
    hypercorn_run.TCPServer = FrontDoor  # type: ignore[attr-defined,assignment]


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
