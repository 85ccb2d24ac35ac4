"""The ASGI shape that crashes hypercorn 0.18's trio worker: close as soon as `stop`
arrives, while the client is closing too. With RACE_FIX=1 callbridge's fix is
installed at startup (as `callbridge.app` does)."""

from __future__ import annotations

import os
from typing import Any


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            if os.environ.get("RACE_FIX") == "1":
                from callbridge import _hypercorn_fix

                _hypercorn_fix.install()
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        if message.get("text") == "stop":
            await send({"type": "websocket.close", "code": 1000})
            return
