"""The plumbing of callbridge's local REST fakes (Twilio's in `callbridge.testing`,
VAPI's in `callbridge.local._vapirest`): a handler answers one request, synchronously,
and these serve it in memory to an httpx client (no socket: `MockClock` works) or as an
ASGI app on loopback."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import attrs
import httpx
import trio

__all__ = ["Handler", "RestAsgiApp", "RestResponse", "RestTransport"]


@attrs.frozen(kw_only=True)
class RestResponse:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[str, str, Mapping[str, str], bytes], RestResponse]


class RestTransport(httpx.AsyncBaseTransport):
    """The REST API in memory, for `httpx.AsyncClient(transport=...)`: no socket,
    so it runs on `MockClock`. The URL's host is ignored; its path is routed."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        answer = self._handler(request.method, request.url.path, dict(request.headers), body)
        await trio.lowlevel.checkpoint()
        return httpx.Response(answer.status, headers=list(answer.headers), content=answer.body)


Scope = MutableMapping[str, Any]


class RestAsgiApp:
    """The REST API as an ASGI app (`LocalTwilio.serve` runs it under hypercorn)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Scope]],
                       send: Callable[[Scope], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        answer = self._handler(scope["method"], scope["path"], headers, bytes(body))
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in answer.headers]})
        await send({"type": "http.response.body", "body": answer.body})
