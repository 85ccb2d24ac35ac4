"""Text-message sockets: the one interface the call logic sees for either peer.

`run_call` accepts any WebSocket that can send and receive text; `as_message_socket`
wraps trio-websocket connections and raw ASGI (receive, send) pairs, and anything
that already has `send` / `receive` / `aclose` is used as it is. Closing is spelled
one way everywhere: `receive()` returns None once the peer has closed, and `send()`
on a closed socket raises `SocketClosed`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import trio

__all__ = [
    "AsgiSocket",
    "BatchSocket",
    "MemorySocket",
    "MessageSocket",
    "NowaitSocket",
    "Queued",
    "Sender",
    "SocketClosed",
    "TrioWebSocket",
    "as_message_socket",
    "memory_socket_pair",
    "one_batch",
]

log = logging.getLogger("callbridge.sockets")


class SocketClosed(Exception):
    """Sending failed because the socket is closed (by either side)."""


@runtime_checkable
class MessageSocket(Protocol):
    async def send(self, text: str) -> None:
        """Send one text message; raises `SocketClosed` when the socket is closed."""

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the peer has closed."""

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close from our side. Idempotent."""


@runtime_checkable
class BatchSocket(MessageSocket, Protocol):
    """A `MessageSocket` that hands out every message one read brought at once
    (`callbridge._websocket.WebSocket`): the call feeds them all to the bridge, then
    writes what they caused, once."""

    async def receive_batch(self) -> list[str | bytes] | None:
        """At least one message, or None once the peer has closed."""


T = TypeVar("T", contravariant=True)


class Sender(Protocol[T]):
    """Writes that never wait: how `run_call` writes to either peer. It writes from
    the task that has something to send; what a write leaves behind (`backlog`) goes
    out when the peer's writer task awaits `drain()`."""

    @property
    def backlog(self) -> int:
        """How much was written and is not out yet (0: nothing waits)."""

    def send_nowait(self, *items: T) -> None:
        """Write these at once, in one write if the socket can; raises `SocketClosed`
        once it is closed."""

    async def drain(self) -> None:
        """Wait until the backlog is out; `SocketClosed` if the socket breaks."""


@runtime_checkable
class NowaitSocket(MessageSocket, Sender[str], Protocol):
    """A `MessageSocket` whose own writes never wait (`callbridge._websocket.WebSocket`:
    what the kernel does not take waits in the socket, and no frame is ever torn)."""


class Queued(Generic[T]):
    """A `Sender` for a socket whose sends must be awaited (trio-websocket, ASGI, an
    in-memory socket): writes are queued, and `drain()`, in the writer task, sends
    them. With `shielded_for`, the sends are shielded (a frame already started must
    not be torn) and bounded: `trio.TooSlowError` once they took that long."""

    def __init__(self, send: Callable[[T], Awaitable[None]], *,
                 shielded_for: float | None = None) -> None:
        self._send = send
        self._shielded_for = shielded_for
        self._queue: deque[T] = deque()  # an item leaves once it is sent

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def send_nowait(self, *items: T) -> None:
        self._queue.extend(items)

    async def drain(self) -> None:
        if self._shielded_for is None:
            await self._send_all()
            return
        deadline = trio.current_time() + self._shielded_for
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            await self._send_all()
        if scope.cancelled_caught:
            raise trio.TooSlowError

    async def _send_all(self) -> None:
        queue = self._queue
        while queue:
            await self._send(queue[0])
            queue.popleft()


AsgiMessage = MutableMapping[str, Any]


class AsgiSocket:
    """An accepted ASGI WebSocket, used directly (no framework on the media path)."""

    def __init__(
        self,
        receive: Callable[[], Awaitable[AsgiMessage]],
        send: Callable[[AsgiMessage], Awaitable[None]],
        *,
        max_message_size: int | None = None,
    ) -> None:
        self._receive = receive
        self._send = send
        #: a bigger message closes the socket with 1009 and reads as the end
        self.max_message_size = max_message_size
        self.closed = False
        #: the close code the client sent, once it disconnected
        self.close_code: int | None = None

    async def send(self, text: str) -> None:
        if self.closed:
            raise SocketClosed("websocket is closed")
        await self._send({"type": "websocket.send", "text": text})

    async def receive(self) -> str | bytes | None:
        if self.close_code is not None:
            return None
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            data = text if text is not None else bytes(message.get("bytes") or b"")
            if self.max_message_size is not None and len(data) > self.max_message_size:
                log.warning("closing a websocket: a %d-character message (limit %d)",
                            len(data), self.max_message_size)
                await self.aclose(1009, "message too big")
                return None
            return data
        # websocket.disconnect: the client's close (or the connection's loss) arrived
        self.closed = True
        self.close_code = int(message.get("code", 1005))
        return None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


class TrioWebSocket:
    """A trio-websocket `WebSocketConnection`, client or server side."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def send(self, text: str | bytes) -> None:
        from trio_websocket import ConnectionClosed

        try:
            await self._ws.send_message(text)
        except ConnectionClosed as exc:
            raise SocketClosed(str(exc)) from None

    async def receive(self) -> str | bytes | None:
        from trio_websocket import ConnectionClosed

        try:
            message: str | bytes = await self._ws.get_message()
        except ConnectionClosed:
            return None
        return message

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.aclose(code, reason or None)


class MemorySocket:
    """One end of an in-memory socket pair (see `memory_socket_pair`)."""

    def __init__(
        self,
        send: trio.MemorySendChannel[str | bytes],
        receive: trio.MemoryReceiveChannel[str | bytes],
    ) -> None:
        self._send_channel = send
        self._receive_channel = receive
        self.peer: MemorySocket | None = None
        #: the close code given by whichever side closed first
        self.close_code: int | None = None

    async def send(self, text: str | bytes) -> None:
        try:
            await self._send_channel.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise SocketClosed("memory socket is closed") from None

    async def receive(self) -> str | bytes | None:
        try:
            return await self._receive_channel.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        for end in (self, self.peer):
            if end is not None and end.close_code is None:
                end.close_code = code
        # close both ends synchronously: awaiting one aclose() under cancellation
        # would raise before the other is closed, and leave the peer blocked forever
        self._send_channel.close()
        self._receive_channel.close()
        await trio.lowlevel.checkpoint()


def memory_socket_pair(buffer: float = math.inf) -> tuple[MemorySocket, MemorySocket]:
    """Two connected in-memory message sockets; `buffer` bounds each direction
    (the default never blocks a sender, like a socket with a large kernel buffer)."""
    a_send, b_receive = trio.open_memory_channel[str | bytes](buffer)
    b_send, a_receive = trio.open_memory_channel[str | bytes](buffer)
    a, b = MemorySocket(a_send, a_receive), MemorySocket(b_send, b_receive)
    a.peer, b.peer = b, a
    return a, b


def as_message_socket(ws: Any) -> MessageSocket:
    """Wrap `ws` so the call logic can use it; see the module docstring."""
    if hasattr(ws, "get_message") and hasattr(ws, "send_message"):
        return TrioWebSocket(ws)
    if isinstance(ws, MessageSocket):
        return ws
    raise TypeError(f"cannot use {type(ws).__name__} as a text WebSocket")


def one_batch(socket: MessageSocket) -> Callable[[], Awaitable[list[str | bytes] | None]]:
    """`BatchSocket.receive_batch` for a socket that reads one message at a time."""
    async def receive_batch() -> list[str | bytes] | None:
        message = await socket.receive()
        return None if message is None else [message]

    return receive_batch
