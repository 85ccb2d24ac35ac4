"""The local peers over real sockets (loopback): a realtime endpoint and a Twilio dialer."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

import attrs
import trio

from .._sockets import MessageSocket, TrioWebSocket
from ._twilio import TwilioCaller

__all__ = ["Handshake", "dial_twilio_stream", "serve_realtime_websocket"]


class _Serves(Protocol):
    async def serve(self, socket: MessageSocket) -> None: ...


@attrs.frozen
class Handshake:
    """What a realtime client sent in its WebSocket upgrade (for checks on the client)."""

    path: str
    headers: dict[str, str]


async def serve_realtime_websocket(
    server: _Serves,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_handshake: Callable[[Handshake], None] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `server` (e.g. a `LocalRealtimeServer`) as a realtime WebSocket endpoint
    at `ws://host:port/v1/realtime?model=...`; reports the bound port via `nursery.start`.
    Point `OpenAIRealtime(base_url=f"http://host:{port}/v1")` at it."""
    from trio_websocket import WebSocketRequest, serve_websocket

    async def handler(request: WebSocketRequest) -> None:
        path = request.path.partition("?")[0]
        if path != "/v1/realtime":
            await request.reject(404)
            return
        if on_handshake is not None:
            on_handshake(Handshake(
                path=request.path,
                headers={k.decode().lower(): v.decode() for k, v in request.headers},
            ))
        ws = await request.accept()
        await server.serve(TrioWebSocket(ws))

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(partial(
            serve_websocket, handler, host, port, None, max_message_size=16 * 1024 * 1024))
        task_status.started(listener.port)


async def dial_twilio_stream(caller: TwilioCaller, url: str, **headers: str) -> None:
    """Connect `caller` to a media-stream WebSocket URL as Twilio does, and play the call."""
    from trio_websocket import open_websocket_url

    extra = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    async with open_websocket_url(url, extra_headers=extra, connect_timeout=5,
                                  disconnect_timeout=2) as ws:
        await caller.run(TrioWebSocket(ws))
