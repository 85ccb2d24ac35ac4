"""A WebSocket client that says what it has to say and then never reads again: a
Twilio side that stalled, for the tests of the server's write deadline."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request, TextMessage


@asynccontextmanager
async def stalled_websocket(
    host: str, target: str, messages: Sequence[str] = (), *,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[trio.abc.Stream]:
    """Upgrade to a WebSocket at `host` (`name:port`) and `target`, send `messages`,
    and yield the stream, for the caller not to read (or to read only at the end).
    A small receive buffer makes the server's writes block soon. The socket is
    closed on exit (unfixed, that is what unblocks the server's write)."""
    name, port = host.rsplit(":", 1)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((name, int(port)))
        stream: trio.abc.Stream = trio.SocketStream(sock)
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_hostname=name)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=host, target=target)))
        accepted = False
        while not accepted:
            data = await stream.receive_some()
            assert data, "the server closed during the handshake"
            ws.receive_data(bytes(data))
            for event in ws.events():
                assert not isinstance(event, RejectConnection), event
                accepted = accepted or isinstance(event, AcceptConnection)
        for message in messages:
            await stream.send_all(ws.send(TextMessage(data=message)))
        yield stream


async def read_to_the_end(stream: trio.abc.Stream) -> None:
    """Read what the stream still holds until the server's close (or reset) arrives."""
    try:
        while await stream.receive_some():
            pass
    except trio.BrokenResourceError:
        pass  # reset: what was still queued was dropped
