"""The lean WebSocket client against real servers on loopback.

Two independent server implementations (trio-websocket, and the `websockets`
package's threaded server) plus a raw socket peer for what no library would send.
Every test is bounded with `trio.fail_after`, and none asserts on how long real
time took: where a close must not wait out its `disconnect_timeout`, that timeout
is longer than the test's bound, so waiting it out fails the test. How long the
connect timeout takes is checked on virtual time, over an in-memory stream.
"""

from __future__ import annotations

import queue
import re
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
import trustme
from websockets.exceptions import ConnectionClosed as WebsocketsClosed
from websockets.sync.server import ServerConnection, serve
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection

from callbridge import ModelConnectError, OpenAIRealtime
from callbridge._errors import RemoteProtocolError
from callbridge._sockets import MessageSocket, SocketClosed
from callbridge._wsclient import (
    ClientWebSocket,
    HandshakeError,
    connect_websocket,
    open_websocket,
)
from callbridge._wsframes import WebSocketProtocolError, accept_key

MiB = 1 << 20
#: a disconnect timeout no test may wait out: longer than any test's `fail_after`
NEVER = 60.0


# --- servers -----------------------------------------------------------------------------


@asynccontextmanager
async def trio_server(
    handler: Callable[[trio_websocket.WebSocketRequest], Awaitable[None]],
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """A trio-websocket server on loopback; yields its port."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(
            trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context,
            max_message_size=4 * MiB))
        yield server.port
        nursery.cancel_scope.cancel()


async def echo(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except trio_websocket.ConnectionClosed:
        pass


@asynccontextmanager
async def websockets_server(
    handler: Callable[[ServerConnection], None],
) -> AsyncIterator[int]:
    """The `websockets` package's threaded server on loopback; yields its port."""
    with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            await trio.to_thread.run_sync(server.shutdown)
            await trio.to_thread.run_sync(thread.join, 10)


def until_closed(ws: ServerConnection) -> None:
    """Drop what the client sends until it closes."""
    for _ in ws:
        pass


async def get(results: queue.Queue[Any]) -> Any:
    """The next thing a server thread reported."""
    return await trio.to_thread.run_sync(partial(results.get, timeout=10))


@asynccontextmanager
async def raw_server(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> AsyncIterator[int]:
    """A bare TCP peer, for what no WebSocket library would send; yields its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def raw_handshake(stream: trio.SocketStream, *, accept: str | None = None,
                        then: bytes = b"") -> tuple[bytes, bytes]:
    """Read a client's upgrade request and accept it (with `then` in the same write);
    returns (request head, bytes read past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head)
    assert found is not None
    key = found.group(1).decode()
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + (accept or accept_key(key)).encode() + b"\r\n\r\n" + then)
    return head, rest


async def read_client_close(stream: trio.SocketStream, rest: bytes) -> CloseConnection:
    """Read the client's frames (checked by wsproto) until its close frame."""
    reader = Connection(ConnectionType.SERVER)
    reader.receive_data(rest)
    while True:
        for event in reader.events():
            if isinstance(event, CloseConnection):
                return event
        reader.receive_data(await stream.receive_some(4096) or None)


def text_frame(payload: bytes, first: int = 0x81) -> bytes:
    assert len(payload) < 126
    return bytes((first, len(payload))) + payload


# --- messages ----------------------------------------------------------------------------


async def test_echo_through_trio_websocket() -> None:
    with trio.fail_after(20):
        async with trio_server(echo) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/x",
                                      max_message_size=4 * MiB) as ws:
                assert isinstance(ws, MessageSocket)
                for message in ["", "hello", "é☃😀" * 50, "x" * 70000, "y" * MiB]:
                    await ws.send(message)
                    assert await ws.receive() == message
                await ws.send(b"\x00\xff")
                assert await ws.receive() == b"\x00\xff"
                # pipelined: many messages on the wire at once
                for i in range(300):
                    await ws.send(f"message {i}")
                for i in range(300):
                    assert await ws.receive() == f"message {i}"


async def test_echo_through_websockets() -> None:
    def handler(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    with trio.fail_after(20):
        async with websockets_server(handler) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/",
                                      max_message_size=4 * MiB) as ws:
                for message in ["hi", "é" * 40000, "z" * MiB]:
                    await ws.send(message)
                    assert await ws.receive() == message


async def test_fragmented_messages_from_the_server() -> None:
    def handler(ws: ServerConnection) -> None:
        ws.send(["frag", "men", "", "ted ☃"])
        ws.send([b"\x01", b"\x02" * 70000])
        ws.send("whole")
        until_closed(ws)

    with trio.fail_after(20):
        async with websockets_server(handler) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/") as ws:
                assert await ws.receive() == "fragmented ☃"
                assert await ws.receive() == b"\x01" + b"\x02" * 70000
                assert await ws.receive() == "whole"


async def test_a_server_ping_is_answered() -> None:
    results: queue.Queue[Any] = queue.Queue()

    def handler(ws: ServerConnection) -> None:
        pong = ws.ping(b"are you there")
        results.put(pong.wait(10))
        ws.send("after the pong")
        until_closed(ws)

    with trio.fail_after(20):
        async with websockets_server(handler) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/") as ws:
                assert await ws.receive() == "after the pong"
                assert await get(results) is True


async def test_concurrent_sends_arrive_whole() -> None:
    sizes = [10, 300, 5000, 70000, 200000]

    async def sender(ws: ClientWebSocket, task: int) -> None:
        for n in range(40):
            await ws.send(f"{task}:{n}:" + chr(97 + task) * sizes[(n + task) % len(sizes)])

    with trio.fail_after(30):
        async with trio_server(echo) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/") as ws:
                async with trio.open_nursery() as nursery:
                    for task in range(5):
                        nursery.start_soon(sender, ws, task)
                    seen = dict.fromkeys(range(5), 0)
                    for _ in range(5 * 40):
                        message = await ws.receive()
                        assert isinstance(message, str)
                        task_text, n_text, body = message.split(":")
                        task, n = int(task_text), int(n_text)
                        assert n == seen[task]  # each sender's messages in order
                        assert body == chr(97 + task) * sizes[(n + task) % len(sizes)]
                        seen[task] += 1


# --- closing -----------------------------------------------------------------------------


@pytest.mark.parametrize("library", ["trio-websocket", "websockets"])
async def test_server_close_ends_receive(library: str) -> None:
    async def trio_handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("last")
        await ws.aclose(4001, "bye now")

    def websockets_handler(ws: ServerConnection) -> None:
        ws.send("last")
        ws.close(4001, "bye now")

    with trio.fail_after(20):
        server = (trio_server(trio_handler) if library == "trio-websocket"
                  else websockets_server(websockets_handler))
        async with server as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/") as ws:
                assert await ws.receive() == "last"
                assert await ws.receive() is None
                assert (ws.close_code, ws.close_reason) == (4001, "bye now")
                assert await ws.receive() is None
                with pytest.raises(SocketClosed):
                    await ws.send("too late")


@pytest.mark.parametrize("library", ["trio-websocket", "websockets"])
async def test_client_close_handshake(library: str) -> None:
    codes: queue.Queue[Any] = queue.Queue()

    async def trio_handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            codes.put((exc.reason.code, exc.reason.reason))

    def websockets_handler(ws: ServerConnection) -> None:
        try:
            ws.recv()
        except WebsocketsClosed as exc:  # (no close frame received: None)
            codes.put(exc.rcvd and (exc.rcvd.code, exc.rcvd.reason))

    with trio.fail_after(20):
        server = (trio_server(trio_handler) if library == "trio-websocket"
                  else websockets_server(websockets_handler))
        async with server as port:
            ws = await connect_websocket(f"ws://127.0.0.1:{port}/", disconnect_timeout=NEVER)
            await ws.aclose(1000, "done")
            assert ws.close_code == 1000  # the server's close frame: it answered
            await ws.aclose()  # idempotent
            assert await get(codes) == (1000, "done")
            assert await ws.receive() is None
            with pytest.raises(SocketClosed):
                await ws.send("closed")


async def test_aclose_completes_under_cancellation() -> None:
    codes: queue.Queue[Any] = queue.Queue()

    def handler(ws: ServerConnection) -> None:
        try:
            ws.recv()
        except WebsocketsClosed as exc:
            codes.put(exc.rcvd.code if exc.rcvd else None)

    with trio.fail_after(20):
        async with websockets_server(handler) as port:
            with trio.CancelScope() as scope:
                async with open_websocket(f"ws://127.0.0.1:{port}/"):
                    scope.cancel()
                    await trio.sleep(1)  # cancelled here; the context exits cancelled
            assert scope.cancelled_caught
            assert await get(codes) == 1000


async def test_aclose_while_another_task_receives() -> None:
    with trio.fail_after(20):
        async with trio_server(echo) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/",
                                      disconnect_timeout=NEVER) as ws:
                received: list[object] = []

                async def receiver() -> None:
                    received.append(await ws.receive())

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receiver)
                    await trio.testing.wait_all_tasks_blocked()
                    await ws.aclose()  # the receiver sees the server's close: no timeout
                assert received == [None]
                assert ws.close_code == 1000


async def test_receive_while_aclose_waits_for_the_server() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        _, rest = await raw_handshake(stream)
        await read_client_close(stream, rest)
        await trio.sleep(0.2)
        await stream.send_all(b"\x88\x02\x03\xe8")
        await stream.aclose()

    with trio.fail_after(20):
        async with raw_server(handler) as port:
            ws = await connect_websocket(f"ws://127.0.0.1:{port}/")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.aclose)
                await trio.testing.wait_all_tasks_blocked()  # aclose is reading
                assert await ws.receive() is None
            assert ws.close_code == 1000


async def test_aclose_when_the_peer_is_gone() -> None:
    gone = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        await raw_handshake(stream)
        await stream.aclose()
        gone.set()

    with trio.fail_after(20):
        async with raw_server(handler) as port:
            ws = await connect_websocket(f"ws://127.0.0.1:{port}/", disconnect_timeout=NEVER)
            await gone.wait()
            await ws.aclose()  # finds the connection's end: no timeout


async def test_the_peer_vanishing_mid_message() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        frame = b"\x81\x7e\x01\x00" + b"x" * 256
        await raw_handshake(stream, then=text_frame(b"whole") + frame[:100])
        await stream.aclose()

    with trio.fail_after(20):
        async with raw_server(handler) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/") as ws:
                assert await ws.receive() == "whole"
                assert await ws.receive() is None
                assert ws.close_code == 1006
                with pytest.raises(SocketClosed):
                    await ws.send("anyone?")


# --- protocol errors ---------------------------------------------------------------------


async def test_a_message_over_the_limit_closes_with_1009() -> None:
    codes: queue.Queue[Any] = queue.Queue()

    def handler(ws: ServerConnection) -> None:
        ws.send("x" * 1000)  # at the limit
        ws.send("x" * 1001)
        try:
            ws.recv()
        except WebsocketsClosed as exc:
            codes.put(exc.rcvd.code if exc.rcvd else None)

    with trio.fail_after(20):
        async with websockets_server(handler) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/", max_message_size=1000) as ws:
                assert await ws.receive() == "x" * 1000
                with pytest.raises(WebSocketProtocolError) as caught:
                    await ws.receive()
                assert caught.value.code == 1009
                assert isinstance(caught.value, RemoteProtocolError)
                assert await ws.receive() is None
            # the server's socket is done once we have closed ours
            assert await get(codes) == 1009


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (text_frame(b"x", 0xC1), 1002),  # RSV1 without an extension
        (b"\x81\x81abcd\x19", 1002),  # masked by the server
        (text_frame(b"\xff\xfe"), 1007),
    ],
)
async def test_a_bad_frame_fails_the_connection(frame: bytes, code: int) -> None:
    closes: list[CloseConnection] = []

    async def handler(stream: trio.SocketStream) -> None:
        _, rest = await raw_handshake(stream, then=text_frame(b"fine") + frame)
        closes.append(await read_client_close(stream, rest))

    with trio.fail_after(20):
        async with raw_server(handler) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/") as ws:
                assert await ws.receive() == "fine"
                with pytest.raises(WebSocketProtocolError) as caught:
                    await ws.receive()
                assert caught.value.code == code
                assert await ws.receive() is None
                with pytest.raises(SocketClosed):
                    await ws.send("x")
            await trio.testing.wait_all_tasks_blocked()
            assert [close.code for close in closes] == [code]


async def test_bytes_right_after_the_handshake_are_read() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        _, rest = await raw_handshake(stream, then=text_frame(b"one") + text_frame(b"two"))
        await read_client_close(stream, rest)

    with trio.fail_after(20):
        async with raw_server(handler) as port:
            async with open_websocket(f"ws://127.0.0.1:{port}/") as ws:
                assert [await ws.receive(), await ws.receive()] == ["one", "two"]


# --- the opening handshake ---------------------------------------------------------------


async def test_the_upgrade_request() -> None:
    heads: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        head, rest = await raw_handshake(stream)
        heads.append(head)
        await read_client_close(stream, rest)

    with trio.fail_after(20):
        async with raw_server(handler) as port:
            url = f"ws://127.0.0.1:{port}/v1/realtime?model=a+b"
            async with open_websocket(url, headers=[("Authorization", "Bearer k")]):
                pass
            await trio.testing.wait_all_tasks_blocked()
    [head] = heads
    request_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    assert request_line == "GET /v1/realtime?model=a+b HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["upgrade"] == "websocket"
    assert headers["connection"] == "Upgrade"
    assert headers["sec-websocket-version"] == "13"
    assert len(headers["sec-websocket-key"]) == 24
    assert headers["authorization"] == "Bearer k"
    assert "sec-websocket-extensions" not in headers


async def test_a_refused_upgrade_names_the_status_and_not_the_key() -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(403, body=b"forbidden")

    with trio.fail_after(20):
        async with trio_server(handler) as port:
            with pytest.raises(HandshakeError) as caught:
                await connect_websocket(f"ws://127.0.0.1:{port}/",
                                        headers=[("Authorization", "Bearer sk-secret")])
            assert caught.value.status_code == 403
            assert "403" in str(caught.value)
            backend = OpenAIRealtime(api_key="sk-secret-value",
                                     base_url=f"http://127.0.0.1:{port}/v1")
            with pytest.raises(ModelConnectError) as refused:
                async with backend.connect("gpt-realtime"):
                    raise AssertionError("connected")  # pragma: no cover
    message = str(refused.value)
    assert message.startswith(f"cannot connect to ws://127.0.0.1:{port}/v1/realtime")
    assert "HandshakeError" in message and "403" in message
    for secret in ("sk-secret", "Authorization", "Bearer"):
        assert secret not in message
        assert secret not in repr(refused.value.__context__ or "")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"not http at all\r\n\r\n",
        b"",
    ],
    ids=["wrong accept", "not websocket", "200", "garbage", "closed"],
)
async def test_a_bad_handshake_answer(answer: bytes) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        await stream.send_all(answer)
        await stream.aclose()

    with trio.fail_after(20):
        async with raw_server(handler) as port:
            with pytest.raises(HandshakeError):
                await connect_websocket(f"ws://127.0.0.1:{port}/")


async def test_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with trio.fail_after(10):
            # the connect's own deadline fires: had it none, the test's bound would
            # end the wait, as a Cancelled in here, and fail the test
            with pytest.raises(trio.TooSlowError):
                await connect_websocket(f"ws://127.0.0.1:{port}/", connect_timeout=0.3)
            backend = OpenAIRealtime(api_key="sk-secret-value", connect_timeout=0.3,
                                     base_url=f"http://127.0.0.1:{port}/v1")
            with pytest.raises(ModelConnectError, match=r"TooSlowError$"):
                async with backend.connect("gpt-realtime"):
                    raise AssertionError("connected")  # pragma: no cover


async def test_connect_timeout_to_the_second(autojump_clock: trio.testing.MockClock,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`connect_timeout` bounds the connect and the opening handshake together, exactly:
    on virtual time, against a peer that takes the request and never answers."""
    client, peer = trio.testing.memory_stream_pair()

    async def open_tcp_stream(host: str, port: int) -> trio.abc.Stream:
        assert (host, port) == ("bridge.test", 8080)
        return client

    monkeypatch.setattr(trio, "open_tcp_stream", open_tcp_stream)
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await connect_websocket("ws://bridge.test:8080/", connect_timeout=2.5)
    assert trio.current_time() - start == pytest.approx(2.5)
    assert (await peer.receive_some()).startswith(b"GET / HTTP/1.1\r\n")


async def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(10), pytest.raises(OSError, match="all attempts to connect"):
        await connect_websocket(f"ws://127.0.0.1:{port}/")


@pytest.mark.parametrize("url", ["http://h/", "ws:///path", "wss:"])
async def test_not_a_websocket_url(url: str) -> None:
    with pytest.raises(ValueError, match=r"^not a ws:// or wss:// URL$"):
        await connect_websocket(url)


# --- TLS ---------------------------------------------------------------------------------


async def test_wss_with_a_trusted_certificate() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(20):
        async with trio_server(echo, server_context) as port:
            url = f"wss://127.0.0.1:{port}/"
            async with open_websocket(url, ssl_context=client_context) as ws:
                for message in ["secure", "s" * 300000]:
                    await ws.send(message)
                    assert await ws.receive() == message
            # the default context does not trust the test CA
            with pytest.raises(HandshakeError):
                await connect_websocket(url)
