"""A minimal fix for a hypercorn trio-worker crash on a WebSocket closing from both ends.

hypercorn 0.18.0 `hypercorn/trio/tcp_server.py`: `TCPServer._close()` calls
`stream.send_eof()` without taking `send_lock`, while `protocol_send()` sends under
the lock. When the client's close frame arrives while the app sends (an app closing
on Twilio's `stop` while Twilio closes too), `send_eof` holds trio's send-conflict
detector across a checkpoint and the app's `send_all` raises
`trio.BusyResourceError`. Nothing catches it: it escapes the connection's task group
and kills the worker, with every call on it. (Upstream report material, with a
reproducer: docs/hypercorn-close-race.md.)

The connection is closing at that point, so the data has nowhere to go: the fix
treats that error exactly like the `BrokenResourceError`/`ClosedResourceError`
hypercorn already expects there. The bridge also avoids the race by design
(after `stop` it waits for Twilio's close instead of closing), so this only matters
when a close from our side meets the caller's hang-up.
"""

from __future__ import annotations

from typing import Any

__all__ = ["install"]

_MARK = "_callbridge_close_race_fix"


def install() -> bool:
    """Patch hypercorn's trio `TCPServer.protocol_send`; idempotent. False when
    hypercorn's trio worker is not importable."""
    try:
        import trio
        from hypercorn.events import Closed
        from hypercorn.trio.tcp_server import TCPServer
    except ImportError:
        return False
    original = TCPServer.protocol_send
    if getattr(original, _MARK, False):
        return True

    async def protocol_send(self: Any, event: Any) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            # _close() is sending EOF on this stream right now: the connection is gone.
            await self.protocol.handle(Closed())

    setattr(protocol_send, _MARK, True)
    protocol_send.__wrapped__ = original  # type: ignore[attr-defined]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
    return True
