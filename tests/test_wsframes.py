"""The client's WebSocket frames: what we build, and reading what a server sends.

Synchronous and table-driven, plus random frame streams split at random points, read
and written differentially against wsproto as the reference implementation.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, TextMessage
from wsproto.events import Ping as WsprotoPing
from wsproto.events import Pong as WsprotoPong

from callbridge._errors import RemoteProtocolError
from callbridge._wsframes import (
    Close,
    FrameEvent,
    FrameReader,
    FrameWriter,
    Ping,
    Pong,
    WebSocketProtocolError,
    accept_key,
    handshake_key,
)


def server_frame(
    payload: bytes | str,
    opcode: int = 1,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    length_bytes: int | None = None,
) -> bytes:
    """A frame as a server would send it (unmasked), or a deliberately odd one."""
    data = payload.encode() if isinstance(payload, str) else payload
    n = len(data)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    masked = 0x80 if mask is not None else 0
    form = length_bytes if length_bytes is not None else (0 if n < 126 else 2 if n < 65536 else 8)
    if form == 0:
        header = bytes((first, masked | n))
    elif form == 2:
        header = struct.pack("!BBH", first, masked | 126, n)
    else:
        header = struct.pack("!BBQ", first, masked | 127, n)
    if mask is not None:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        header += mask
    return header + data


def unmask(frame: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of a masked client frame, checked for form."""
    assert frame[1] & 0x80, "client frames are masked"
    n = frame[1] & 0x7F
    at = 2
    if n == 126:
        n, at = struct.unpack("!H", frame[2:4])[0], 4
        assert n >= 126
    elif n == 127:
        n, at = struct.unpack("!Q", frame[2:10])[0], 10
        assert n >= 65536
    key, body = frame[at:at + 4], frame[at + 4:]
    assert len(body) == n
    return frame[0], bytes(b ^ key[i % 4] for i, b in enumerate(body))


def read_all(reader: FrameReader, data: bytes, chunk: int | None = None) -> list[FrameEvent]:
    events: list[FrameEvent] = []
    step = chunk or max(len(data), 1)
    for at in range(0, max(len(data), 1), step):
        reader.feed(data[at:at + step])
        while (event := reader.next_event()) is not None:
            events.append(event)
    return events


# --- building ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 127, 65535, 65536, 70001])
def test_text_frames_are_masked_final_and_minimal(size: int) -> None:
    text = ("é" * size)[:size] if size % 2 else "a" * size
    frame = FrameWriter().text(text)
    first, payload = unmask(frame)
    assert first == 0x81
    assert payload.decode() == text


def test_binary_ping_pong_frames() -> None:
    writer = FrameWriter()
    assert unmask(writer.binary(b"\x00\xff" * 100)) == (0x82, b"\x00\xff" * 100)
    assert unmask(writer.ping(b"p")) == (0x89, b"p")
    assert unmask(writer.pong(b"")) == (0x8A, b"")
    with pytest.raises(ValueError, match="at most 125 bytes"):
        writer.ping(b"x" * 126)
    with pytest.raises(ValueError, match="at most 125 bytes"):
        writer.pong(b"x" * 126)


def test_every_frame_gets_a_fresh_key() -> None:
    writer = FrameWriter()
    keys = {writer.text("same")[2:6] for _ in range(2000)}  # crosses key batches
    assert len(keys) > 1990  # 2000 draws from 2**32: a repeat is possible, many are not


@pytest.mark.parametrize(
    ("code", "reason", "payload"),
    [
        (1000, "", b"\x03\xe8"),
        (1001, "bye", b"\x03\xe9bye"),
        (4000, "ünïcode", b"\x0f\xa0" + "ünïcode".encode()),
        (1005, "ignored", b""),  # "no status" is never sent as a code
    ],
)
def test_close_frames(code: int, reason: str, payload: bytes) -> None:
    assert unmask(FrameWriter().close(code, reason)) == (0x88, payload)


def test_a_long_close_reason_is_cut_on_a_character() -> None:
    _, payload = unmask(FrameWriter().close(1000, "€" * 60))
    assert len(payload) <= 125
    assert payload[2:].decode() == "€" * 41


@pytest.mark.parametrize("code", [0, 999, 1004, 1006, 1015, 2000, 5000])
def test_close_codes_one_may_not_send(code: int) -> None:
    with pytest.raises(ValueError, match="not a close code an endpoint may send"):
        FrameWriter().close(code)


def test_accept_key_matches_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    key = handshake_key()
    assert len(key) == 24 and key != handshake_key()


# --- reading -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70001])
@pytest.mark.parametrize("chunk", [None, 1, 7, 4096])
def test_reads_messages_of_every_length_form_at_any_split(size: int, chunk: int | None) -> None:
    if chunk == 1 and size > 1000:
        chunk = 997  # byte by byte is tested on the short ones
    text = "x" * size
    data = server_frame(text) + server_frame(b"\x01" * size, 2) + server_frame("end")
    assert read_all(FrameReader(), data, chunk) == [text, b"\x01" * size, "end"]


def test_many_frames_in_one_feed() -> None:
    messages = [f"message {i}" for i in range(500)]
    data = b"".join(server_frame(m) for m in messages)
    assert read_all(FrameReader(), data) == messages


def test_fragmented_messages_with_control_frames_between() -> None:
    snowman = "☃".encode()  # a character split across fragments
    data = (
        server_frame(b"ab" + snowman[:1], 1, fin=False)
        + server_frame(b"ping!", 9)
        + server_frame(snowman[1:], 0, fin=False)
        + server_frame(b"", 10)
        + server_frame(b"cd", 0)
        + server_frame(b"\x00", 2, fin=False)
        + server_frame(b"\x01", 0)
        + server_frame(b"", 1, fin=False)
        + server_frame(b"", 0)
    )
    expected: list[FrameEvent] = [Ping(b"ping!"), Pong(b""), "ab☃cd", b"\x00\x01", ""]
    for chunk in (None, 1, 3):
        assert read_all(FrameReader(), data, chunk) == expected


@pytest.mark.parametrize(
    ("payload", "close"),
    [
        (b"", Close(1005, "")),
        (b"\x03\xe8", Close(1000, "")),
        (b"\x03\xe9going", Close(1001, "going")),
        (b"\x03\xf4", Close(1012, "")),
        (b"\x0b\xb8" + "ok ✓".encode(), Close(3000, "ok ✓")),
        (b"\x13\x87", Close(4999, "")),
    ],
)
def test_close_frames_read(payload: bytes, close: Close) -> None:
    reader = FrameReader()
    # nothing after the close is read
    assert read_all(reader, server_frame(payload, 8) + server_frame("late")) == [close]
    assert reader.finished
    reader.feed(server_frame("later"))
    assert reader.next_event() is None


#: (what the server sends, the close code it earns)
BAD_STREAMS = {
    "rsv1": (server_frame("x", rsv=4), 1002),
    "rsv2": (server_frame("x", rsv=2), 1002),
    "rsv3 on a control frame": (server_frame(b"", 9, rsv=1), 1002),
    "masked": (server_frame("x", mask=b"abcd"), 1002),
    "masked control": (server_frame(b"", 9, mask=b"abcd"), 1002),
    "data opcode 3": (server_frame("x", 3), 1002),
    "data opcode 7": (server_frame("x", 7), 1002),
    "control opcode 0xb": (server_frame(b"", 0xB), 1002),
    "control opcode 0xf": (server_frame(b"", 0xF), 1002),
    "long ping": (server_frame(b"x" * 126, 9), 1002),
    "fragmented ping": (server_frame(b"x", 9, fin=False), 1002),
    "fragmented close": (server_frame(b"\x03\xe8", 8, fin=False), 1002),
    "continuation first": (server_frame("x", 0), 1002),
    "continuation after a whole message": (server_frame("a") + server_frame("b", 0), 1002),
    "text during a fragmented message": (
        server_frame("a", fin=False) + server_frame("b"), 1002),
    "binary during a fragmented message": (
        server_frame("a", fin=False) + server_frame(b"b", 2, fin=False), 1002),
    "invalid utf-8": (server_frame(b"\xff"), 1007),
    "truncated utf-8": (server_frame(b"a\xe2\x98"), 1007),
    "utf-8 surrogate": (server_frame(b"\xed\xa0\x80"), 1007),
    "invalid utf-8 in fragments": (
        server_frame(b"\xe2", fin=False) + server_frame(b"\x98", 0), 1007),
    "long text in 16 bits": (server_frame("x" * 300) + server_frame(b"\xc0\xaf" * 100), 1007),
    "1-byte close": (server_frame(b"\x03", 8), 1002),
    "close code 999": (server_frame(b"\x03\xe7", 8), 1002),
    "close code 1004": (server_frame(b"\x03\xec", 8), 1002),
    "close code 1005": (server_frame(b"\x03\xed", 8), 1002),
    "close code 1006": (server_frame(b"\x03\xee", 8), 1002),
    "close code 1015": (server_frame(b"\x03\xf7", 8), 1002),
    "close code 2999": (server_frame(b"\x0b\xb7", 8), 1002),
    "close code 5000": (server_frame(b"\x13\x88", 8), 1002),
    "close reason not utf-8": (server_frame(b"\x03\xe8\xff", 8), 1007),
    "16-bit length for a short frame": (server_frame("x", length_bytes=2), 1002),
    "64-bit length for a short frame": (server_frame("x" * 200, length_bytes=8), 1002),
    "64-bit length with its top bit set": (
        bytes((0x82, 127)) + struct.pack("!Q", 1 << 63), 1002),
}


@pytest.mark.parametrize("name", sorted(BAD_STREAMS))
@pytest.mark.parametrize("chunk", [None, 1])
def test_protocol_errors(name: str, chunk: int | None) -> None:
    data, code = BAD_STREAMS[name]
    reader = FrameReader()
    with pytest.raises(WebSocketProtocolError) as caught:
        read_all(reader, data, chunk)
    assert caught.value.code == code
    assert isinstance(caught.value, RemoteProtocolError)
    assert reader.finished
    reader.feed(server_frame("after"))
    assert reader.next_event() is None


@pytest.mark.parametrize(
    "header",
    [
        server_frame("x" * 1001)[:4],  # 16-bit length
        bytes((0x82, 127)) + struct.pack("!Q", 1 << 40),  # 64-bit: a terabyte
        server_frame("x" * 600, fin=False) + server_frame("x" * 401, 0)[:4],  # all fragments
    ],
)
def test_a_message_over_the_limit_fails_on_its_header(header: bytes) -> None:
    reader = FrameReader(max_message_size=1000)
    reader.feed(header)  # no payload fed: the declared length is enough
    with pytest.raises(WebSocketProtocolError) as caught:
        reader.next_event()
    assert caught.value.code == 1009


def test_a_message_at_the_limit_is_read() -> None:
    data = server_frame("x" * 600, fin=False) + server_frame("x" * 400, 0)
    assert read_all(FrameReader(max_message_size=1000), data) == ["x" * 1000]
    assert read_all(FrameReader(max_message_size=1000), server_frame("y" * 1000)) == ["y" * 1000]


def test_control_frames_do_not_count_towards_the_limit() -> None:
    data = server_frame("x" * 10, fin=False) + server_frame(b"p" * 125, 9) + server_frame("", 0)
    assert read_all(FrameReader(max_message_size=10), data) == [Ping(b"p" * 125), "x" * 10]


def test_the_buffer_does_not_grow_with_what_was_read() -> None:
    reader = FrameReader()
    frame = server_frame("y" * 300)
    for _ in range(1000):
        reader.feed(frame + frame[:100])
        assert reader.next_event() == "y" * 300
        reader.feed(frame[100:])
        assert reader.next_event() == "y" * 300
        assert reader.next_event() is None
    assert len(reader._buffer) - reader._offset == 0
    assert len(reader._buffer) <= 2 * len(frame)


# --- differential, against wsproto -------------------------------------------------------

_ALPHABET = "aZ0 {}\"\\\n\té€😀☃"
_SIZES = [0, 1, 2, 125, 126, 127, 1000, 65535, 65536, 70000]


def _random_message(rng: random.Random) -> str | bytes:
    size = rng.choice(_SIZES) if rng.random() < 0.3 else rng.randrange(0, 400)
    if rng.random() < 0.7:
        return "".join(rng.choice(_ALPHABET) for _ in range(min(size, 2000))) + "x" * max(
            size - 2000, 0)
    return rng.randbytes(size)


def _random_stream(rng: random.Random) -> list[str | bytes | Ping | Pong]:
    items: list[str | bytes | Ping | Pong] = []
    for _ in range(rng.randrange(1, 25)):
        roll = rng.random()
        if roll < 0.1:
            items.append(Ping(rng.randbytes(rng.randrange(0, 126))))
        elif roll < 0.15:
            items.append(Pong(rng.randbytes(rng.randrange(0, 126))))
        else:
            items.append(_random_message(rng))
    return items


def _splits(rng: random.Random, data: bytes) -> Iterator[bytes]:
    at = 0
    while at < len(data):
        step = rng.choice([1, 2, 3, 7, 64, 1000, 65536, len(data)])
        yield data[at:at + step]
        at += step


def _wsproto_messages(events: list[Event]) -> list[object]:
    """wsproto's events as whole messages (it hands over payloads piecemeal)."""
    out: list[object] = []
    text: list[str] = []
    data: list[bytes] = []
    for event in events:
        if isinstance(event, TextMessage):
            text.append(event.data)
            if event.message_finished:
                out.append("".join(text))
                text = []
        elif isinstance(event, BytesMessage):
            data.append(bytes(event.data))
            if event.message_finished:
                out.append(b"".join(data))
                data = []
        elif isinstance(event, WsprotoPing):
            out.append(Ping(bytes(event.payload)))
        elif isinstance(event, WsprotoPong):
            out.append(Pong(bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            out.append(Close(event.code, event.reason or ""))
        else:  # pragma: no cover
            raise AssertionError(event)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_wsproto_reads_what_we_write(seed: int) -> None:
    rng = random.Random(seed)
    items = _random_stream(rng)
    writer = FrameWriter()
    frames = []
    for item in items:
        if isinstance(item, str):
            frames.append(writer.text(item))
        elif isinstance(item, bytes):
            frames.append(writer.binary(item))
        elif isinstance(item, Ping):
            frames.append(writer.ping(item.payload))
        else:
            frames.append(writer.pong(item.payload))
    close = Close(rng.choice([1000, 1001, 1011, 4000]), rng.choice(["", "bye", "fin ✓"]))
    frames.append(writer.close(close.code, close.reason))
    server = Connection(ConnectionType.SERVER)
    events: list[Event] = []
    for piece in _splits(rng, b"".join(frames)):
        server.receive_data(piece)
        events.extend(server.events())
    assert _wsproto_messages(events) == [*items, close]


@pytest.mark.parametrize("seed", range(40))
def test_we_read_what_wsproto_writes(seed: int) -> None:
    rng = random.Random(1000 + seed)
    items = _random_stream(rng)
    server = Connection(ConnectionType.SERVER)
    wire = bytearray()
    expected: list[FrameEvent] = []
    for item in items:
        if isinstance(item, Ping):
            wire += server.send(WsprotoPing(payload=item.payload))
            expected.append(item)
        elif isinstance(item, Pong):
            wire += server.send(WsprotoPong(payload=item.payload))
            expected.append(item)
        else:
            # in fragments, sometimes with pings between them
            cuts = sorted(rng.sample(range(len(item) + 1), min(rng.randrange(0, 4), len(item) + 1)))
            pieces = [item[a:b] for a, b in zip([0, *cuts], [*cuts, len(item)], strict=True)]
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                if isinstance(piece, str):
                    wire += server.send(TextMessage(data=piece, message_finished=last))
                else:
                    wire += server.send(BytesMessage(data=piece, message_finished=last))
                if not last and rng.random() < 0.3:
                    ping = Ping(rng.randbytes(3))
                    wire += server.send(WsprotoPing(payload=ping.payload))
                    expected.append(ping)
            expected.append(item)
    close = Close(rng.choice([1000, 1001, 1011, 3000]), rng.choice(["", "done ✓"]))
    wire += server.send(CloseConnection(code=close.code, reason=close.reason))
    expected.append(close)
    reader = FrameReader()
    events: list[FrameEvent] = []
    for piece in _splits(rng, bytes(wire)):
        reader.feed(piece)
        while (event := reader.next_event()) is not None:
            events.append(event)
    assert events == expected
