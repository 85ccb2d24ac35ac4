"""An open WebSocket connection on trio, either end: the model's and Twilio's sockets.

Why not trio-websocket: it reads frames in a background task and hands each message
over a memory channel, so every message costs a trip through trio's scheduler on top
of wsproto's general-purpose parsing. Here nothing runs in the background:

* Reading happens in the reader's own task. `receive_batch()` waits once for the
  socket, reads what is there and returns every message it completed
  (`callbridge._wsframes`), so under load many messages cost one syscall and one
  checkpoint; `receive()` hands them out one at a time. Only one task may read.
* Writing never waits: `send_nowait(*messages)` frames the messages and writes them
  in one `send` (a Twilio `media` and its `mark` together), over a `Wire` that keeps
  what the kernel does not take until the owner awaits `drain()`. `send()` is the
  awaitable form (write, then drain). Any task may write: a write has no checkpoint,
  so frames never interleave.
* Pings are answered and the close handshake is done inside the reads and
  `aclose()`, so a connection that nobody reads answers no pings: both sockets of a
  call are always being read.

The client end is opened by `callbridge._wsclient`, the server end (Twilio's media
stream) accepted by `callbridge._frontdoor`.
"""

from __future__ import annotations

from collections import deque

import trio

from ._sockets import SocketClosed
from ._wire import Wire
from ._wsframes import (
    ABNORMAL_CLOSURE,
    Close,
    FrameReader,
    FrameWriter,
    Ping,
    WebSocketProtocolError,
)

__all__ = ["WebSocket"]


class WebSocket:
    """An open WebSocket connection over `wire`, whose opening handshake is done.

    `client`: we are the client end (our frames are masked, the peer's must not be),
    else the server end. `received`: what was read past the handshake. Satisfies
    `MessageSocket`: `receive()` returns None once the connection is closed, and
    `send()` raises `SocketClosed` then. A message over `max_message_size` closes the
    connection with 1009."""

    def __init__(
        self,
        wire: Wire,
        *,
        client: bool,
        max_message_size: int = 1 << 20,
        disconnect_timeout: float = 2.0,
        received: bytes = b"",
    ) -> None:
        self._wire = wire
        #: when the peer last sent anything (trio's clock): how a stall shows
        self.last_heard = trio.current_time()
        self._reader = FrameReader(max_message_size=max_message_size, from_client=not client)
        self._reader.feed(received)
        self._writer = FrameWriter(mask=client)
        self._disconnect_timeout = disconnect_timeout
        self._ready: deque[str | bytes] = deque()  # read, not handed out yet
        self._error: WebSocketProtocolError | None = None  # raise once the batch is out
        #: the close code the peer sent: 1005 if its close frame had none, 1006 if the
        #: connection ended without one; None while open
        self.close_code: int | None = None
        self.close_reason = ""
        # no more frames go out: our close frame was sent, or the wire broke
        self._send_closed = False
        # no more frames come in: the peer's close, EOF, a protocol error, aclose
        self._receive_closed = False
        self._peer_done = trio.Event()  # set with _receive_closed, for aclose to wait on
        self._reading = False  # a task is waiting for bytes
        self._aclose_called = False

    @property
    def closed(self) -> bool:
        return self._receive_closed or self._send_closed

    @property
    def backlog(self) -> int:
        """Bytes written that the kernel has not taken yet (see `drain`)."""
        return self._wire.backlog

    # --- writing ------------------------------------------------------------------------

    def send_nowait(self, *messages: str | bytes) -> None:
        """Send messages (text for `str`, binary for `bytes`) in one write, without
        waiting: what the kernel does not take waits for `drain()`. Raises
        `SocketClosed` once the connection is closed or broken."""
        writer = self._writer
        frames = [writer.text(m) if isinstance(m, str) else writer.binary(m) for m in messages]
        self._write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def send(self, message: str | bytes) -> None:
        """Send one message and wait until the kernel took it (`send_nowait`, `drain`)."""
        self.send_nowait(message)
        await self.drain()

    async def drain(self) -> None:
        """Wait until everything sent is in the kernel's hands; raises `SocketClosed`
        if the connection breaks first. Safe to cancel (nothing is torn)."""
        try:
            await self._wire.drain()
        except SocketClosed:
            self._send_closed = True
            raise

    async def ping(self) -> None:
        """Send a ping (the peer's pong, like anything it sends, moves `last_heard`);
        nothing when the connection is closed."""
        try:
            self._write(self._writer.ping(b"callbridge"))
            await self.drain()
        except SocketClosed:
            pass

    def _write(self, data: bytes, *, closing: bool = False) -> None:
        if self._send_closed:
            raise SocketClosed("websocket is closed")
        if closing:
            self._send_closed = True  # nothing may follow a close frame
        try:
            self._wire.send_nowait(data)
        except SocketClosed:
            self._send_closed = True
            raise

    # --- reading ------------------------------------------------------------------------

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the connection is closed (see
        `receive_batch`; a message already read is returned without waiting)."""
        if not self._ready:
            batch = await self.receive_batch()
            if batch is None:
                return None
            self._ready.extend(batch)
        return self._ready.popleft()

    async def receive_batch(self) -> list[str | bytes] | None:
        """Every message that is complete, reading once if none is: at least one
        message, or None once the connection is closed.

        Answers pings and the peer's close frame as it reads. A frame the protocol
        does not allow closes the connection with the matching code and raises
        `WebSocketProtocolError` (a `RemoteProtocolError`) once, after the messages
        before it were returned; after that, None."""
        if self._ready:
            batch = list(self._ready)
            self._ready.clear()
            return batch
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            batch = self._parse()
            if batch:
                return batch
            if self._error is None and not await self._read():
                return None

    def _parse(self) -> list[str | bytes]:
        """The messages complete in the reader; control frames are dealt with."""
        reader, batch = self._reader, list[str | bytes]()
        while True:
            try:
                event = reader.next_event()
            except WebSocketProtocolError as exc:
                self._fail(exc)
                return batch
            if event is None:
                return batch
            if isinstance(event, (str, bytes)):
                batch.append(event)
            elif isinstance(event, Ping):
                try:
                    self._write(self._writer.pong(event.payload))
                except SocketClosed:
                    pass  # the next read finds the end
            elif isinstance(event, Close):
                self._peer_closed(event)
                return batch
            # a Pong: we only ping to learn the peer is alive (`last_heard`)

    async def _read(self) -> bool:
        """Feed the reader with the next bytes; False at the end."""
        if self._receive_closed:
            return False
        if self._reading and self._aclose_called:
            # aclose() (in another task) is reading until the peer's close: let it
            await self._peer_done.wait()
            return False
        self._reading = True
        try:
            data = await self._wire.receive_some()
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

    def _peer_closed(self, close: Close) -> None:
        self.close_code = close.code
        self.close_reason = close.reason
        self._receive_closed = True
        self._peer_done.set()
        try:
            self._write(self._writer.close(close.code), closing=True)
        except SocketClosed:
            pass  # we had sent ours already (this was the answer), or the wire is gone

    def _fail(self, error: WebSocketProtocolError) -> None:
        """Fail the connection (RFC 6455 7.1.7): a close with the error's code; the
        error is raised once the messages before it are out."""
        self._error = error
        self.close_code = ABNORMAL_CLOSURE
        self._receive_closed = True
        self._peer_done.set()
        try:
            self._write(self._writer.close(error.code, str(error)), closing=True)
        except SocketClosed:
            pass

    # --- closing ------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection: send a close frame (unless one was sent), wait up to
        `disconnect_timeout` for the peer's and for the peer to end the connection
        (`Wire.finish`), then close the wire. Idempotent;
        shielded, so it completes (within the timeout) even when the calling task is
        being cancelled."""
        if self._aclose_called:
            return
        self._aclose_called = True
        try:
            frame = self._writer.close(code, reason)  # ValueError for a reserved code
            with trio.move_on_after(self._disconnect_timeout, shield=True):
                try:
                    self._write(frame, closing=True)
                except SocketClosed:
                    pass  # ours went out already, or the wire is gone
                try:
                    await self.drain()
                except SocketClosed:
                    pass
                else:
                    await self._await_peer_close()
                    await self._wire.finish()
        finally:
            self._send_closed = self._receive_closed = True
            self._peer_done.set()
            await self._wire.aclose()

    async def _await_peer_close(self) -> None:
        """After our close frame: read (and drop) until the peer's close or EOF."""
        if self._receive_closed:
            return
        if self._reading:  # another task is reading: it will see the close
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
