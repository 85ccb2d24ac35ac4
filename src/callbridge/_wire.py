"""Byte streams whose writes never wait: the transport under both sockets of a call.

A trio stream makes every `send_all` and `receive_some` a checkpoint, and a task that
writes for another task costs a trip through the scheduler per message. Measured on
the media path (issue 14), those checkpoints and hops, not the protocol work, are what
a call costs. A `Wire` keeps trio's structure (a task per direction, cancellation,
deadlines) and drops the per-message cost:

* `send_nowait(data)` writes at once, in the calling task, without yielding: a plain
  non-blocking `send`. What the kernel does not take is kept, in order, and goes out
  when the owner awaits `drain()` (which waits for writability). A cancelled `drain`
  leaves the rest queued, so a frame is never torn; `backlog` says how much waits,
  and the owner stops feeding a socket whose peer stopped reading (see
  `callbridge._call`). Over `max_backlog` the wire counts as broken.
* `receive_some()` waits until the socket is readable, then reads what is there: one
  checkpoint per read, however many messages it brought.

A plain TCP connection (`trio.SocketStream`) is driven through its socket directly.
Any other stream (`trio.SSLStream` for TLS) works the same way on the outside, with
its writes handed to `send_all` by `drain()`: correct, without the fast path.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from collections import deque
from typing import NoReturn

import trio

from ._sockets import SocketClosed

__all__ = ["Wire"]

#: the most one read takes from the socket
READ_SIZE = 65536
#: the errors of a connection the peer reset or that is otherwise gone
_GONE = (ConnectionError, BrokenPipeError, TimeoutError)


class Wire:
    """A connected byte stream with writes that never wait (see the module docstring).

    Takes over `stream`: from here on use only the wire, and close it with `aclose`.
    One task reads at a time; writes may come from any task (a write is one call with
    no checkpoint in it, so writes never interleave)."""

    def __init__(self, stream: trio.abc.Stream, *, max_backlog: int = 4 << 20) -> None:
        #: queued bytes beyond this break the wire (`SocketClosed`): a peer that reads
        #: nothing must not grow our memory without bound
        self.max_backlog = max_backlog
        self._stream: trio.abc.Stream | None = None
        self._sock: stdlib_socket.socket | None = None
        if type(stream) is trio.SocketStream:
            # own the file descriptor; the trio socket is left closed
            self._sock = stdlib_socket.socket(fileno=stream.socket.detach())
            self._sock.setblocking(False)
        else:
            self._stream = stream
        self._pending: deque[bytes | memoryview] = deque()
        self._backlog = 0
        self._drain_lock = trio.Lock()
        self._broken: str | None = None  # why nothing more can be written
        self._closed = False

    @property
    def backlog(self) -> int:
        """Bytes written with `send_nowait` that the kernel has not taken yet."""
        return self._backlog

    @property
    def socket(self) -> stdlib_socket.socket | None:
        """The connection's socket (the fast path), None over another stream."""
        return self._sock

    # --- writing ------------------------------------------------------------------------

    def send_nowait(self, data: bytes | memoryview) -> None:
        """Write `data` now, or queue what the kernel does not take; never waits.
        Raises `SocketClosed` once the connection is broken or closed."""
        if self._broken is not None:
            raise SocketClosed(self._broken)
        if not self._pending and self._sock is not None:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._break(exc)
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        self._pending.append(data)
        self._backlog += len(data)
        if self._backlog > self.max_backlog:
            self._break(f"the peer took no data while {self._backlog} bytes waited")

    async def drain(self) -> None:
        """Wait until every byte written has been handed to the kernel (a checkpoint
        even when nothing waits). Raises `SocketClosed` when the connection breaks.
        Cancelling it is safe: what is left stays queued, no frame is torn."""
        if not self._pending:
            await trio.lowlevel.checkpoint()
            if self._broken is not None:
                raise SocketClosed(self._broken)
            return
        async with self._drain_lock:
            while self._pending:
                if self._sock is not None:
                    try:
                        await trio.lowlevel.wait_writable(self._sock)
                    except trio.ClosedResourceError:  # `aclose` in another task
                        raise SocketClosed("closed") from None
                    self._flush_some(self._sock)
                else:
                    await self._send_all()
        if self._broken is not None:
            raise SocketClosed(self._broken)

    def _flush_some(self, sock: stdlib_socket.socket) -> None:
        pending = self._pending
        while pending:
            data = pending[0]
            try:
                sent = sock.send(data)
            except BlockingIOError:
                return
            except OSError as exc:
                self._break(exc)
            self._backlog -= sent
            if sent < len(data):
                pending[0] = memoryview(data)[sent:]
                return
            pending.popleft()

    async def _send_all(self) -> None:
        assert self._stream is not None
        data = b"".join(self._pending)
        self._pending.clear()
        self._backlog = 0
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._break(exc)
        except BaseException:
            self._broken = "a write was cancelled part-way"  # half a frame may be out
            raise

    def _break(self, why: object) -> NoReturn:
        """Nothing more goes out: raise `SocketClosed` (now and from every write)."""
        self._broken = self._broken or f"connection lost: {why}"
        self._pending.clear()
        self._backlog = 0
        raise SocketClosed(self._broken)

    # --- reading ------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int = READ_SIZE) -> bytes:
        """The next bytes the peer sent, as many as are there (up to `max_bytes`);
        b"" once it closed its end or the connection is lost."""
        sock = self._sock
        if sock is None:
            assert self._stream is not None
            try:
                return bytes(await self._stream.receive_some(max_bytes))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
        while True:
            if self._closed:
                return b""
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:  # `aclose` in another task
                return b""
            try:
                return sock.recv(max_bytes)
            except BlockingIOError:  # woken for nothing: wait again
                continue
            except OSError as exc:
                if isinstance(exc, _GONE) or exc.errno in (errno.EBADF, errno.ENOTCONN):
                    return b""
                raise

    # --- closing ------------------------------------------------------------------------

    async def finish(self) -> None:
        """End our direction (FIN) and read, dropping it, until the peer ends theirs:
        the graceful end of a connection. Closing with unread bytes would reset it,
        and a reset can destroy what we sent last (a close frame). The caller bounds
        the wait; `aclose` follows."""
        try:
            if self._sock is not None:
                self._sock.shutdown(stdlib_socket.SHUT_WR)
            elif isinstance(self._stream, trio.abc.HalfCloseableStream):
                await self._stream.send_eof()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        while await self.receive_some():
            pass

    async def aclose(self) -> None:
        """Close the connection at once (what is queued is dropped). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._broken = self._broken or "closed"
        self._pending.clear()
        self._backlog = 0
        if self._sock is not None:
            trio.lowlevel.notify_closing(self._sock)  # wake any task waiting on it
            self._sock.close()
            await trio.lowlevel.checkpoint()
        else:
            assert self._stream is not None
            await trio.aclose_forcefully(self._stream)
