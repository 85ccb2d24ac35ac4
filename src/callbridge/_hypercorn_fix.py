"""Two minimal fixes to hypercorn's trio worker, both in how it writes to a connection.

hypercorn 0.18.0 `hypercorn/trio/tcp_server.py`, `TCPServer.protocol_send()`: every
frame an app sends goes through it, as `stream.send_all()` under `send_lock` inside a
shielded cancel scope (so a cancelled app never tears a frame).

1. Close race. `TCPServer._close()` calls `stream.send_eof()` without taking
   `send_lock`. When the client's close frame arrives while the app sends (an app
   closing on Twilio's `stop` while Twilio closes too), `send_eof` holds trio's
   send-conflict detector across a checkpoint and the app's `send_all` raises
   `trio.BusyResourceError`. Nothing catches it: it escapes the connection's task
   group and kills the worker, with every call on it
   (docs/hypercorn-close-race.md). The connection is closing at that point, so the
   data has nowhere to go: the fix treats that error exactly like the
   `BrokenResourceError`/`ClosedResourceError` hypercorn already expects there. The
   bridge also avoids the race by design (after `stop` it waits for Twilio's close
   instead of closing), so this only matters when a close from our side meets the
   caller's hang-up.

2. Write deadline. The same shield hides every deadline of the app's: when the
   client stops reading, `send_all` blocks for as long as the client does, and a
   timeout the app set around its send never fires. A call whose Twilio side
   stalled went on for good, its model session open, `CallLimits.send_timeout`
   notwithstanding (docs/hypercorn-write-deadline.md). The fix keeps the shield
   against cancellation but gives the write the deadline its caller is under
   (`trio.current_effective_deadline()`). A write not done by then may have left
   part of a frame on the socket, so the connection is aborted: the socket is
   closed with a reset (the unsent data dropped), hypercorn's reader finds it
   closed and tears the connection down as for any lost client (the app gets
   `websocket.disconnect`, 1006), and the send raises the caller's `Cancelled`,
   like any operation cut short by its deadline. Sends without a deadline
   (hypercorn's own, most apps') are written exactly as before.
"""

from __future__ import annotations

import math
import socket
import struct
from typing import Any

__all__ = ["install"]

_MARK = "_callbridge_tcp_server_fix"


def install() -> bool:
    """Patch hypercorn's trio `TCPServer.protocol_send`; idempotent. False when
    hypercorn's trio worker is not importable."""
    try:
        import trio
        from hypercorn.events import Closed, RawData
        from hypercorn.trio.tcp_server import TCPServer
    except ImportError:
        return False
    original = TCPServer.protocol_send
    if getattr(original, _MARK, False):
        return True

    async def send_by(self: Any, data: bytes, deadline: float) -> None:
        """`original`'s write, with the caller's deadline kept under the shield."""
        async with self.send_lock:
            try:
                with trio.CancelScope(shield=True, deadline=deadline) as write:
                    await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
                return
            if write.cancelled_caught:
                # Part of the frame may be out: nothing more can go on this connection.
                try:
                    await trio.lowlevel.checkpoint()  # the caller's Cancelled: its deadline passed
                finally:
                    # synchronous, so the caller's Cancelled reaches it before
                    # hypercorn's reader (woken by the close) can report a disconnect
                    _abort(self.stream)

    async def protocol_send(self: Any, event: Any) -> None:
        try:
            if isinstance(event, RawData):
                deadline = trio.current_effective_deadline()
                if deadline != math.inf:
                    await send_by(self, event.data, deadline)
                    return
            await original(self, event)
        except trio.BusyResourceError:
            # _close() is sending EOF on this stream right now: the connection is gone.
            await self.protocol.handle(Closed())

    setattr(protocol_send, _MARK, True)
    protocol_send.__wrapped__ = original  # type: ignore[attr-defined]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
    return True


def _abort(stream: Any) -> None:
    """Close a connection at once: a reset, the unsent data dropped (else the peer
    would get a torn frame, and the kernel would keep it until the peer reads)."""
    try:
        sock = stream.transport_stream.socket  # as hypercorn finds it: TLS, or
    except AttributeError:
        sock = stream.socket  # plain TCP
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, ValueError):
        pass  # then an ordinary close: the connection still ends
    sock.close()  # wakes hypercorn's reader, which tears the connection down
