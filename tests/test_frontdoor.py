"""The front door and what it stands on: the upgrade read with h11, the server end of
RFC 6455 (checked against wsproto's client), the `Wire` whose writes never wait, and
`Queued`. The whole-call and service tests run through the front door as well
(the `front_door` fixture); here are the parts on their own, and TLS.

Real sockets run on the real clock: every wait is bounded by `fail_after` with wide
margins, and nothing asserts how long anything took."""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import h11
import pytest
import trio
import trio.testing
import trustme
from hypercorn.config import Config
from hypercorn.trio import serve
from test_service import Caller, session_of
from test_wsframes import _random_stream, _splits, _wsproto_messages
from trio_websocket import open_websocket_url
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, TextMessage
from wsproto.events import Ping as WsprotoPing
from wsproto.events import Pong as WsprotoPong

from callbridge import _frontdoor
from callbridge._errors import RemoteProtocolError
from callbridge._sockets import Queued, SocketClosed, TrioWebSocket
from callbridge._websocket import WebSocket
from callbridge._wire import Wire
from callbridge._wsframes import Close, FrameEvent, FrameReader, FrameWriter, Ping, accept_key
from callbridge.app import MEDIA_PATH, create_app
from callbridge.config import Settings
from callbridge.testing import LocalRealtimeServer, serve_realtime_websocket

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (f"GET /media-stream?x=1 HTTP/1.1\r\nHost: bridge.example.com\r\nUpgrade: websocket\r\n"
           f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           f"Sec-WebSocket-Key: {KEY}\r\nX-Twilio-Signature: abc\r\n\r\n").encode()


# --- the upgrade, sans-I/O -------------------------------------------------------------

def test_a_media_upgrade_is_read_with_what_came_after_it() -> None:
    upgrade = _frontdoor.media_upgrade(UPGRADE + b"\x81\x85first", MEDIA_PATH)
    assert upgrade is not None
    assert (upgrade.target, upgrade.query) == ("/media-stream?x=1", "x=1")
    assert upgrade.headers["x-twilio-signature"] == "abc"
    assert upgrade.received == b"\x81\x85first"
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[
        ("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]))
    client.receive_data(upgrade.accept())
    response = client.next_event()
    assert isinstance(response, h11.InformationalResponse) and response.status_code == 101
    assert dict(response.headers)[b"sec-websocket-accept"] == accept_key(KEY).encode()


@pytest.mark.parametrize("head", [
    UPGRADE.replace(b"/media-stream?x=1", b"/incoming-call"),
    UPGRADE.replace(b"GET", b"POST"),
    UPGRADE.replace(b"Upgrade: websocket\r\n", b""),
    UPGRADE.replace(b"keep-alive, Upgrade", b"keep-alive"),
    UPGRADE.replace(b"Version: 13", b"Version: 8"),
    UPGRADE.replace(f"Sec-WebSocket-Key: {KEY}\r\n".encode(), b""),
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x16\x03\x01 not http at all\r\n\r\n",
], ids=["path", "method", "no-upgrade", "no-connection-upgrade", "version", "no-key", "h2",
        "garbage"])
def test_anything_else_is_left_to_hypercorn(head: bytes) -> None:
    assert _frontdoor.media_upgrade(head, MEDIA_PATH) is None


def test_a_refusal_is_plain_http() -> None:
    upgrade = _frontdoor.media_upgrade(UPGRADE, MEDIA_PATH)
    assert upgrade is not None
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.receive_data(upgrade.refuse(403, "no\n"))
    response, body = client.next_event(), client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 403
    assert isinstance(body, h11.Data) and body.data == b"no\n"


# --- the server end of RFC 6455 --------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_the_server_end_reads_what_a_client_writes(seed: int) -> None:
    rng = random.Random(seed)
    items = _random_stream(rng)
    client = Connection(ConnectionType.CLIENT)
    wire = bytearray()
    for item in items:
        if isinstance(item, str):
            wire += client.send(TextMessage(data=item))
        elif isinstance(item, bytes):
            wire += client.send(BytesMessage(data=item))
        elif isinstance(item, Ping):
            wire += client.send(WsprotoPing(payload=item.payload))
        else:
            wire += client.send(WsprotoPong(payload=item.payload))
    wire += client.send(CloseConnection(code=1000, reason="bye"))
    reader = FrameReader(from_client=True)
    events: list[FrameEvent] = []
    for piece in _splits(rng, bytes(wire)):
        reader.feed(piece)
        while (event := reader.next_event()) is not None:
            events.append(event)
    assert events == [*items, Close(1000, "bye")]


@pytest.mark.parametrize("seed", range(20))
def test_a_client_reads_what_the_server_end_writes(seed: int) -> None:
    rng = random.Random(100 + seed)
    items = [item for item in _random_stream(rng) if isinstance(item, (str, bytes))]
    writer = FrameWriter(mask=False)
    frames = b"".join(writer.text(i) if isinstance(i, str) else writer.binary(i) for i in items)
    client = Connection(ConnectionType.CLIENT)
    events: list[Event] = []
    for piece in _splits(rng, frames):
        client.receive_data(piece)
        events.extend(client.events())
    assert _wsproto_messages(events) == items


def test_a_server_refuses_unmasked_frames_and_a_client_masked_ones() -> None:
    server, client = FrameReader(from_client=True), FrameReader()
    server.feed(FrameWriter(mask=False).text("hi"))
    client.feed(FrameWriter().text("hi"))
    for reader in (server, client):
        with pytest.raises(RemoteProtocolError) as caught:
            reader.next_event()
        assert caught.value.code == 1002  # type: ignore[attr-defined]


# --- Wire and WebSocket on a real socket pair -----------------------------------------

@asynccontextmanager
async def wire_pair(max_backlog: int = 64 << 20) -> AsyncIterator[tuple[Wire, socket.socket]]:
    """A `Wire` over one end of a connected socket pair, and the other end."""
    ours, theirs = trio.socket.socketpair()
    wire = Wire(trio.SocketStream(ours), max_backlog=max_backlog)
    peer = socket.socket(fileno=theirs.detach())
    try:
        yield wire, peer
    finally:
        await wire.aclose()
        peer.close()


def _read_all(peer: socket.socket, size: int) -> bytes:
    peer.setblocking(True)
    data = bytearray()
    while len(data) < size:
        data += peer.recv(1 << 20)
    return bytes(data)


async def test_writes_never_wait_and_a_backlog_drains_in_order() -> None:
    blob = random.Random(1).randbytes(8 << 20)  # more than the kernel takes at once
    with trio.fail_after(60):
        async with wire_pair() as (wire, peer):
            for at in range(0, len(blob), 1 << 20):
                wire.send_nowait(blob[at:at + (1 << 20)])  # returns at once
            assert wire.backlog > 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wire.drain)
                got = await trio.to_thread.run_sync(_read_all, peer, len(blob))
            assert got == blob and wire.backlog == 0


async def test_a_cancelled_drain_tears_nothing() -> None:
    blob = random.Random(2).randbytes(8 << 20)
    with trio.fail_after(60):
        async with wire_pair() as (wire, peer):
            wire.send_nowait(blob)
            with trio.move_on_after(0.05):
                await wire.drain()  # the peer reads nothing: cancelled part-way
            assert wire.backlog > 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wire.drain)
                got = await trio.to_thread.run_sync(_read_all, peer, len(blob))
            assert got == blob


async def test_a_peer_that_reads_nothing_breaks_the_wire_past_its_bound() -> None:
    with trio.fail_after(30):
        async with wire_pair(max_backlog=1 << 20) as (wire, _):
            def flood() -> None:
                for _ in range(64):
                    wire.send_nowait(b"x" * (256 << 10))

            with pytest.raises(SocketClosed):
                flood()
            with pytest.raises(SocketClosed):
                wire.send_nowait(b"more")
            assert wire.backlog == 0


async def test_a_websocket_pair_talks_pings_and_closes_in_order() -> None:
    ours, theirs = trio.socket.socketpair()
    server = WebSocket(Wire(trio.SocketStream(ours)), client=False)
    client = WebSocket(Wire(trio.SocketStream(theirs)), client=True)
    with trio.fail_after(30):
        server.send_nowait('{"event":"media"}', '{"event":"mark"}')  # one write
        assert await client.receive_batch() == ['{"event":"media"}', '{"event":"mark"}']
        await client.ping()
        client.send_nowait("after the ping")
        assert await server.receive() == "after the ping"  # the pong went out as it read
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.aclose, 1000, "bye")
            assert await client.receive() is None
        await client.aclose()
    assert (client.close_code, client.close_reason) == (1000, "bye")
    assert server.closed and client.closed


async def test_queued_counts_an_item_until_it_is_sent_and_bounds_a_shielded_send(
        autojump_clock: trio.testing.MockClock) -> None:
    sent: list[str] = []

    async def slow_send(item: str) -> None:
        await trio.sleep(1)
        sent.append(item)

    queue = Queued(slow_send, shielded_for=2.5)
    queue.send_nowait("a", "b", "c")

    async def look() -> None:
        await trio.sleep(0.5)
        assert queue.backlog == 3 and sent == []  # "a" is being sent: still counted

    async with trio.open_nursery() as nursery:
        nursery.start_soon(look)
        with pytest.raises(trio.TooSlowError):
            await queue.drain()
    assert sent == ["a", "b"] and queue.backlog == 1
    await queue.drain()
    assert sent == ["a", "b", "c"] and queue.backlog == 0


# --- the front door on real sockets ---------------------------------------------------

@asynccontextmanager
async def connected_to_the_front_door() -> AsyncIterator[trio.SocketStream]:
    """A connection to an (offline) service served through the front door."""
    app = create_app(Settings(openai_api_key="sk-test"), front_door=True)
    config = Config.from_mapping(bind=["127.0.0.1:0"], accesslog=None)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            host = (await nursery.start(partial(serve, app, config)))[0].removeprefix("http://")
            stream = await trio.open_tcp_stream("127.0.0.1", int(host.rsplit(":", 1)[1]))
            async with stream:
                yield stream
            nursery.cancel_scope.cancel()


async def test_a_request_head_in_pieces_goes_to_hypercorn_with_keep_alive() -> None:
    async with connected_to_the_front_door() as stream:
        for piece in (b"GET / HT", b"TP/1.1\r\nHost: x\r\n", b"\r\n"):
            await stream.send_all(piece)
            await trio.testing.wait_all_tasks_blocked()  # the server read it
        first = await _response(stream)
        await stream.send_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection
        second = await _response(stream)
    assert first.startswith(b"HTTP/1.1 200") and b'"active_calls":0' in first.replace(b" ", b"")
    assert second.startswith(b"HTTP/1.1 200") and b'"ready":true' in second.replace(b" ", b"")


async def _response(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        data += await stream.receive_some()
    return data


async def test_a_connection_that_says_nothing_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_frontdoor, "HEAD_TIMEOUT_S", 0.5)
    async with connected_to_the_front_door() as stream:
        assert await stream.receive_some() == b""  # closed by the server, in time


def certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A server certificate and key for 127.0.0.1 (one PEM), and a client context
    that trusts it."""
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return pem, context


async def test_a_call_over_tls_through_the_front_door(tmp_path: Path) -> None:
    pem, client_context = certificate(tmp_path)
    model = LocalRealtimeServer()
    caller = Caller(speech_s=0.4)
    caller.done = lambda: bool(caller.heard)  # type: ignore[method-assign]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_realtime_websocket, model))
            app = create_app(Settings(openai_api_key="sk-test-not-a-key",
                                      openai_base_url=f"http://127.0.0.1:{port}/v1",
                                      greeting="Say hello."), front_door=True)
            config = Config.from_mapping(bind=["127.0.0.1:0"], accesslog=None,
                                         certfile=str(pem), keyfile=str(pem))
            host = (await nursery.start(partial(serve, app, config)))[0].partition("://")[2]
            status, body = await _https_health(host, client_context)
            async with open_websocket_url(f"wss://{host}/media-stream", ssl_context=client_context,
                                          connect_timeout=10, disconnect_timeout=2) as ws:
                await caller.run(TrioWebSocket(ws))
            nursery.cancel_scope.cancel()
    assert status == 200 and b"active_calls" in body
    session = session_of(model, caller)
    assert session is not None and caller.heard and caller.violations == []
    assert bytes(caller.sent_audio).startswith(bytes(session.input_audio))


async def _https_health(host: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    name, port = host.rsplit(":", 1)
    stream = trio.SSLStream(await trio.open_tcp_stream(name, int(port)), context,
                            server_hostname=name, https_compatible=True)
    await stream.send_all(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_serve_wants_a_key_with_a_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    from callbridge._cli import main

    assert main(["serve", "--certfile", "cert.pem"]) == 2
    assert "--certfile and --keyfile go together" in capsys.readouterr().err


def test_the_front_door_refuses_a_hypercorn_it_was_not_tested_with(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import hypercorn

    monkeypatch.setattr(hypercorn, "__version__", "0.19.0", raising=False)
    with pytest.raises(RuntimeError, match=r"tested with hypercorn 0\.18"):
        _frontdoor.install()


async def test_closing_a_wire_wakes_its_reader_and_drainer_with_the_end() -> None:
    with trio.fail_after(30):
        async with wire_pair() as (wire, _):
            wire.send_nowait(b"x" * (8 << 20))  # the peer reads nothing: a backlog
            got: list[object] = []

            async def drain() -> None:
                try:
                    await wire.drain()
                except SocketClosed as exc:
                    got.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                nursery.start_soon(lambda: _read_into(wire, got))
                await trio.testing.wait_all_tasks_blocked()
                await wire.aclose()
    assert sorted(map(type, got), key=str) == sorted([bytes, SocketClosed], key=str)
    assert b"" in got


async def _read_into(wire: Wire, got: list[object]) -> None:
    got.append(await wire.receive_some())


async def test_http2_negotiated_over_tls_is_served_by_hypercorn(tmp_path: Path) -> None:
    import httpx

    pem, context = certificate(tmp_path)
    app = create_app(Settings(openai_api_key="sk-test"), front_door=True)
    config = Config.from_mapping(bind=["127.0.0.1:0"], accesslog=None, certfile=str(pem),
                                 keyfile=str(pem))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            host = (await nursery.start(partial(serve, app, config)))[0].partition("://")[2]
            async with httpx.AsyncClient(http2=True, verify=context) as client:
                first = await client.get(f"https://{host}/")
                second = await client.get(f"https://{host}/ready")
            nursery.cancel_scope.cancel()
    assert (first.http_version, first.status_code) == ("HTTP/2", 200)
    assert (second.http_version, second.status_code) == ("HTTP/2", 200)
