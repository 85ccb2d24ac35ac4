"""callbridge's patch of hypercorn's trio worker (`callbridge._hypercorn_fix`), seen from a
raw ASGI app on a real hypercorn server on loopback (the close race has its own
reproducer in test_service.py; the whole service on a stall is test_service_stall.py).

Real clock, real sockets: every wait is bounded by `fail_after`.
"""

from __future__ import annotations

import ssl
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from _stalled import read_to_the_end, stalled_websocket
from hypercorn.config import Config
from hypercorn.trio import serve

from callbridge import _hypercorn_fix


def test_install_is_idempotent_and_needs_no_hypercorn(monkeypatch: pytest.MonkeyPatch) -> None:
    from hypercorn.trio.tcp_server import TCPServer

    assert _hypercorn_fix.install()
    patched = TCPServer.protocol_send
    assert _hypercorn_fix.install() and TCPServer.protocol_send is patched
    original = patched.__wrapped__  # type: ignore[attr-defined]
    assert original.__module__ == "hypercorn.trio.tcp_server"  # wrapped once
    monkeypatch.setitem(sys.modules, "hypercorn.trio.tcp_server", None)
    assert not _hypercorn_fix.install()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_deadline_around_a_send_reaches_a_write_that_blocks(
    tls: bool, tmp_path: Path
) -> None:
    """The client stops reading; the app sends under a deadline. hypercorn writes in a
    shielded scope, so unpatched the send blocks for as long as the client does. With
    the patch the deadline ends it: the send raises the deadline's `Cancelled`, the
    connection is reset (no torn frame left on an open socket), and hypercorn tells
    the app the client is gone, as for any lost connection."""
    assert _hypercorn_fix.install()
    seen: dict[str, Any] = {}
    done = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "websocket.accept"})
        frame = "x" * 65536
        with trio.move_on_after(1.0) as timeout:
            while True:
                await send({"type": "websocket.send", "text": frame})
        seen["timed_out"] = timeout.cancelled_caught
        seen["next"] = await receive()
        done.set()

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    client_context = None
    if tls:
        ca = trustme.CA()
        pem = tmp_path / "server.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
        config.certfile = config.keyfile = str(pem)
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(partial(serve, app, config))
            host = binds[0].partition("://")[2]
            async with stalled_websocket(host, "/", ssl_context=client_context) as client:
                with trio.fail_after(45):
                    await done.wait()
                with trio.fail_after(30):
                    await read_to_the_end(client)
            nursery.cancel_scope.cancel()
    assert seen == {"timed_out": True, "next": {"type": "websocket.disconnect", "code": 1006}}
