"""What the bench peers share: WebSocket framing, audio stamps, latency histograms.

Standard library only, and no trio: the load generator (`_gen.py`) and the bench
model (`_model.py`) are lean single-threaded `selectors` loops, so that on a small
machine they cost as little CPU per call as possible and leave the measuring to the
server under test.

Audio stamps. μ-law bytes pass through the bridge bit for bit (base64 in, base64
out), so each 160-byte frame carries an 18-byte stamp at its start: who sent it,
its sequence number and `time.perf_counter()` at the send. 18 is a multiple of 3,
so the stamp's 24 base64 characters are a prefix of the frame's base64 and the
rest of the frame's base64 is a constant: a frame is built by gluing two strings.
Receivers base64-decode a payload (in C) and read the stamp of every 160 bytes, so the
bridge may re-chunk the audio (batch frames, merge deltas) without fooling them.
`perf_counter` is
CLOCK_MONOTONIC on Linux, one clock for every process on the machine, so a stamp
taken in one process can be subtracted from a reading taken in another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from binascii import b2a_base64
from typing import Any

__all__ = [
    "C2M", "FRAME_BYTES", "M2C", "STAMP_B64", "Hist", "accept_key", "bucket",
    "bucket_upper_ms", "client_header", "frame_header", "handshake_request", "run_and_record",
    "server_header", "stamp_b64", "tail_b64", "unmask",
]

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
STAMP_BYTES = 18
STAMP_B64 = 24
#: caller -> model: call id, frame sequence number (from 0), send time; 2 pad bytes
C2M = struct.Struct("<IIdxx")
#: model -> caller: call id, response number (from 1), frame index in it (from 0), send time
M2C = struct.Struct("<IHId")
assert C2M.size == STAMP_BYTES
assert M2C.size == STAMP_BYTES

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def stamp_b64(stamp: bytes) -> bytes:
    return b2a_base64(stamp, newline=False)


def tail_b64(fill: int) -> bytes:
    """The base64 of a frame's bytes after the stamp (constant audio)."""
    return b2a_base64(bytes([fill]) * (FRAME_BYTES - STAMP_BYTES), newline=False)


# --- WebSocket (RFC 6455), only what the bench needs -----------------------------------

def handshake_request(host: str, path: str, key: bytes) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())


_ZERO_MASK = b"\0\0\0\0"


def client_header(length: int, opcode: int = 1) -> bytes:
    """Header of a client frame, masked with the all-zero key.

    Clients must mask (RFC 6455 5.3) with a key from a strong source of entropy; the
    key 0 is a legal value, and it makes masking a no-op, so the payload goes out as
    it is. That is a benchmark shortcut: masking protects proxies from cache
    poisoning, and there is no proxy on loopback. The server still unmasks (XOR 0).
    """
    if length < 126:
        return bytes((0x80 | opcode, 0x80 | length)) + _ZERO_MASK
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 0xFE, length) + _ZERO_MASK
    return struct.pack("!BBQ", 0x80 | opcode, 0xFF, length) + _ZERO_MASK


def server_header(length: int, opcode: int = 1) -> bytes:
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


def unmask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n or key == _ZERO_MASK:
        return data
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")


# --- latency histograms ------------------------------------------------------------------

class Hist:
    """Latencies in 10 µs buckets up to 100 ms, then 10 ms buckets up to 10 s (the last
    bucket takes anything longer), plus the exact max.

    Cheap to add to in a hot loop (the peers inline `bucket()`), exact enough for
    p50/p99, and merged across processes by adding counts.
    """

    SIZE = 11000

    __slots__ = ("counts", "max")

    def __init__(self) -> None:
        self.counts = [0] * self.SIZE
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bucket(seconds)] += 1
        if seconds > self.max:
            self.max = seconds

    def dump(self) -> dict[str, object]:
        return {"buckets": {str(i): c for i, c in enumerate(self.counts) if c},
                "max": self.max}


def bucket(seconds: float) -> int:
    b = int(seconds * 100000.0)
    if b < 10000:
        return b if b > 0 else 0
    b = 9990 + int(seconds * 100.0)
    return b if b < 10999 else 10999


def bucket_upper_ms(b: int) -> float:
    """The upper edge of bucket `b`, in ms."""
    return (b + 1) * 0.01 if b < 10000 else (b - 9990 + 1) * 10.0


def run_and_record(peer: Any, out: str) -> int:
    """Run a bench peer (`run()`) to the end, then write its `summary()` as JSON to
    `out`, even when it failed: the orchestrator reads what there is."""
    try:
        peer.run()
    finally:
        with open(out, "w") as f:
            json.dump(peer.summary(), f)
    return 0


def frame_header(buf: bytes, pos: int, n: int) -> tuple[int, int] | None:
    """(header length, payload length) of the WebSocket frame at `buf[pos:n]`, the
    header including the 4-byte mask key when the frame is masked; None while the
    header is incomplete."""
    if n - pos < 2:
        return None
    b1 = buf[pos + 1]
    ln = b1 & 127
    h = 2
    if ln == 126:
        h = 4
        if n - pos < h:
            return None
        ln = (buf[pos + 2] << 8) | buf[pos + 3]
    elif ln == 127:
        h = 10
        if n - pos < h:
            return None
        ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
    if b1 & 128:
        h += 4
        if n - pos < h:
            return None
    return h, ln
