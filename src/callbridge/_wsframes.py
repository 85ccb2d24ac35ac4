"""RFC 6455 frames, for either end: the frames we send, and a reader for the peer's.

Sans-I/O, like the rest of the protocol layer: bytes in, messages out, and back; the
trio sides (`_wsclient` for the model connection, `_wsserver` for Twilio's) own the
sockets. It exists because both connections of a call carry hundreds of small messages
a second, and a general-purpose library pays for generality on each one (a reader
task, a channel, a parser written for every case).

Theory of operation:

- What we send (`FrameWriter`) is always one frame per message (FIN set, never
  fragmented). A client's frames are masked with a fresh random key as RFC 6455
  requires (`FrameWriter(mask=True)`, the default); a server's are not. The mask is
  applied to the whole payload at once as one big-integer XOR, far cheaper in
  CPython than any per-byte loop, and the keys come from `os.urandom` in batches.
- What the peer sends is read by `FrameReader`: `feed()` it bytes as they arrive,
  then call `next_event()` until it returns None (more bytes needed). Events are the
  message itself (`str` for text, `bytes` for binary), `Ping`, `Pong` or `Close`.
  Fragmented messages are put together (control frames may come between fragments).
- The common case (a whole unfragmented text frame in the buffer) takes one branch
  and one copy: the frame is decoded straight out of the buffer (a client's frame is
  unmasked first, with the same XOR). `FrameReader(from_client=True)` reads a client's
  frames, which must be masked; a client reads a server's, which must not be. The buffer is a
  bytearray with a read offset; consumed bytes are dropped at the next `feed()`, so
  a read that brought in many frames costs one compaction, not one per frame.
- Anything the peer may not send raises `WebSocketProtocolError` carrying the close
  code to fail the connection with (1002 protocol error, 1007 bad UTF-8, 1009 too
  big). A message's size is checked as soon as its frame header declares it, before
  its payload is buffered. After an error or a `Close` the reader yields nothing more.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import os
import struct
from typing import Final, Literal, TypeAlias

import attrs

from ._errors import RemoteProtocolError

__all__ = [
    "Close",
    "FrameEvent",
    "FrameReader",
    "FrameWriter",
    "Ping",
    "Pong",
    "WebSocketProtocolError",
    "accept_key",
    "handshake_key",
]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

#: close codes (RFC 6455 section 7.4.1) used when failing a connection
PROTOCOL_ERROR: Final = 1002
INVALID_DATA: Final = 1007
MESSAGE_TOO_BIG: Final = 1009
#: "no status code was present": reported, never sent
NO_STATUS: Final = 1005
#: "the connection was lost without a close frame": reported, never sent
ABNORMAL_CLOSURE: Final = 1006

_MAX_CONTROL_PAYLOAD: Final = 125
_WEBSOCKET_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack


class WebSocketProtocolError(RemoteProtocolError):
    """The peer sent something RFC 6455 does not allow; `code` is the close code
    to fail the connection with."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class Ping:
    """The server asks for a `Pong` with the same payload."""

    payload: bytes = b""


@attrs.frozen
class Pong:
    payload: bytes = b""


@attrs.frozen
class Close:
    """The server's close frame; `code` is 1005 when it gave none."""

    code: int = NO_STATUS
    reason: str = ""


#: what `FrameReader.next_event` returns: a text or binary message, or a control frame
FrameEvent: TypeAlias = str | bytes | Ping | Pong | Close


# --- what we send ----------------------------------------------------------------------


#: masking keys are drawn from the OS in batches: one syscall per this many frames
_KEYS_PER_DRAW: Final = 256


class FrameWriter:
    """Builds the frames we send: one frame per message, FIN set; masked (a client's)
    unless `mask=False` (a server's).

    Each masked frame gets a fresh key from `os.urandom`; the keys are drawn a batch
    at a time (a syscall per frame would cost more than building it). Keep one writer
    per connection: it holds no other state.
    """

    def __init__(self, *, mask: bool = True) -> None:
        self._keys = b""
        self._key_at = 0
        if not mask:
            self.frame = self._unmasked_frame  # type: ignore[method-assign]

    def text(self, text: str) -> bytes:
        return self.frame(OP_TEXT, text.encode())

    def binary(self, data: bytes) -> bytes:
        return self.frame(OP_BINARY, bytes(data))

    def ping(self, payload: bytes = b"") -> bytes:
        if len(payload) > _MAX_CONTROL_PAYLOAD:
            raise ValueError("a ping payload is at most 125 bytes")
        return self.frame(OP_PING, payload)

    def pong(self, payload: bytes = b"") -> bytes:
        if len(payload) > _MAX_CONTROL_PAYLOAD:
            raise ValueError("a pong payload is at most 125 bytes")
        return self.frame(OP_PONG, payload)

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        """A close frame; code 1005 ("no status") sends an empty payload, as the RFC
        reserves it for reporting. The reason is cut to fit 125 bytes, on a character."""
        if code == NO_STATUS:
            return self.frame(OP_CLOSE, b"")
        if not _valid_close_code(code):
            raise ValueError(f"{code} is not a close code an endpoint may send")
        encoded = reason.encode()
        if len(encoded) > _MAX_CONTROL_PAYLOAD - 2:
            encoded = encoded[: _MAX_CONTROL_PAYLOAD - 2].decode(errors="ignore").encode()
        return self.frame(OP_CLOSE, code.to_bytes(2, "big") + encoded)

    def frame(self, opcode: int, payload: bytes) -> bytes:
        """One masked frame with FIN set (no checks: use the methods above)."""
        at = self._key_at
        if at >= len(self._keys):
            self._keys = os.urandom(4 * _KEYS_PER_DRAW)
            at = 0
        self._key_at = at + 4
        key = self._keys[at:at + 4]
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 0x10000:
            header = _pack_16(0x80 | opcode, 0xFE, n)
        else:
            header = _pack_64(0x80 | opcode, 0xFF, n)
        if not n:
            return header + key
        return header + key + _xor(payload, key)

    @staticmethod
    def _unmasked_frame(opcode: int, payload: bytes) -> bytes:
        n = len(payload)
        if n < 126:
            return bytes((0x80 | opcode, n)) + payload
        if n < 0x10000:
            return _pack_16(0x80 | opcode, 126, n) + payload
        return _pack_64(0x80 | opcode, 127, n) + payload


def _xor(payload: bytes | bytearray, key: bytes | bytearray) -> bytes:
    """`payload` masked (or unmasked) with the 4-byte `key`."""
    n = len(payload)
    mask = (bytes(key) * ((n + 3) >> 2))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        n, "little")


def handshake_key() -> str:
    """A fresh `Sec-WebSocket-Key`: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_key(key: str) -> str:
    """The `Sec-WebSocket-Accept` a server must answer `key` with."""
    return base64.b64encode(hashlib.sha1(key.encode() + _WEBSOCKET_GUID).digest()).decode()


def _valid_close_code(code: int) -> bool:
    # 1004-1006 and 1015 are reserved or only reported; 1016-2999 are unassigned;
    # 3000-4999 belong to libraries and applications
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# --- what the peer sends ---------------------------------------------------------------

class _Fragment(enum.Enum):
    TAKEN = "a non-final fragment was taken in: look at the next frame"


_MORE: Final = _Fragment.TAKEN


class FrameReader:
    """Reads the peer's frames: a server's (unmasked), or with `from_client=True` a
    client's (masked); see the module docstring."""

    def __init__(self, *, max_message_size: int = 1 << 20, from_client: bool = False) -> None:
        #: a message (all its fragments together) over this many bytes fails with 1009
        self.max_message_size = max_message_size
        self._masked = 0x80 if from_client else 0  # the mask bit every frame must have
        self._peer = "client" if from_client else "server"
        self._buffer = bytearray()
        self._offset = 0  # start of the first unread frame in _buffer
        self._fragment_opcode = 0  # the data opcode of a message in fragments, or 0
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        #: set after a `Close` or an error: nothing more is read
        self.finished = False

    def feed(self, data: bytes | bytearray) -> None:
        """Append bytes received from the server."""
        if self.finished:
            return
        buffer = self._buffer
        if self._offset:
            # dropping a prefix of a bytearray only moves its start: no copy
            del buffer[: self._offset]
            self._offset = 0
        buffer += data

    def next_event(self) -> FrameEvent | None:
        """The next complete event, or None until more bytes are fed."""
        buffer = self._buffer
        while not self.finished:
            offset = self._offset
            size = len(buffer)
            if size - offset < 2:
                return None
            b0 = buffer[offset]
            b1 = buffer[offset + 1]
            length = b1 & 0x7F
            start = offset + 2
            if length >= 126:
                if length == 126:
                    start += 2
                    if size < start:
                        return None
                    length = (buffer[offset + 2] << 8) | buffer[offset + 3]
                    if length < 126:
                        raise self._fail("a frame length not in its shortest form")
                else:
                    start += 8
                    if size < start:
                        return None
                    length = int.from_bytes(buffer[offset + 2:start], "big")
                    if length >> 63:
                        raise self._fail("a frame length with its top bit set")
                    if length < 0x10000:
                        raise self._fail("a frame length not in its shortest form")
            if b0 == 0x81 and not self._fragment_opcode and b1 & 0x80 == self._masked:
                # the common case: a whole text message in one frame
                if length > self.max_message_size:
                    raise self._too_big(length)
                if self._masked:
                    start += 4
                end = start + length
                if end > size:
                    return None
                self._offset = end
                try:
                    if self._masked:
                        return _xor(buffer[start:end], buffer[start - 4:start]).decode()
                    return buffer[start:end].decode()
                except UnicodeDecodeError:
                    raise self._fail("a text message that is not UTF-8", INVALID_DATA) from None
            event = self._other_frame(b0, b1, start, length)
            if event is not _MORE:
                return event
        return None

    def _other_frame(
        self, b0: int, b1: int, start: int, length: int
    ) -> FrameEvent | Literal[_Fragment.TAKEN] | None:
        """Everything but the common case: returns the event, None for "need more
        bytes", or `_MORE` once a non-final fragment is taken in."""
        if b0 & 0x70:
            raise self._fail("a frame with reserved bits set (no extension was agreed)")
        if b1 & 0x80 != self._masked:
            raise self._fail("an unmasked frame" if self._masked else "a masked frame")
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise self._fail(f"unknown control opcode {opcode:#x}")
            if not fin:
                raise self._fail("a fragmented control frame")
            if length > _MAX_CONTROL_PAYLOAD:
                raise self._fail("a control frame over 125 bytes")
        elif opcode > OP_BINARY:
            raise self._fail(f"unknown data opcode {opcode:#x}")
        elif opcode == OP_CONTINUATION:
            if not self._fragment_opcode:
                raise self._fail("a continuation frame outside a fragmented message")
            if self._fragments_size + length > self.max_message_size:
                raise self._too_big(self._fragments_size + length)
        else:
            if self._fragment_opcode:
                raise self._fail("a new message before the fragmented one ended")
            if length > self.max_message_size:
                raise self._too_big(length)
        buffer = self._buffer
        if self._masked:
            start += 4
        end = start + length
        if end > len(buffer):
            return None
        if self._masked:
            payload = _xor(buffer[start:end], buffer[start - 4:start])
        else:
            payload = bytes(buffer[start:end])
        self._offset = end
        if opcode >= OP_CLOSE:
            return self._control(opcode, payload)
        if opcode:
            if fin:
                return self._message(opcode, payload)
            self._fragment_opcode = opcode
            self._fragments = [payload]
            self._fragments_size = length
            return _MORE
        self._fragments.append(payload)
        self._fragments_size += length
        if not fin:
            return _MORE
        opcode = self._fragment_opcode
        payload = b"".join(self._fragments)
        self._fragment_opcode = 0
        self._fragments = []
        self._fragments_size = 0
        return self._message(opcode, payload)

    def _message(self, opcode: int, payload: bytes) -> str | bytes:
        if opcode == OP_BINARY:
            return payload
        try:
            return payload.decode()
        except UnicodeDecodeError:
            raise self._fail("a text message that is not UTF-8", INVALID_DATA) from None

    def _control(self, opcode: int, payload: bytes) -> Ping | Pong | Close:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if not payload:
            close = Close()
        elif len(payload) == 1:
            raise self._fail("a close frame with a 1-byte payload")
        else:
            code = int.from_bytes(payload[:2], "big")
            if not _valid_close_code(code):
                raise self._fail(f"a close frame with code {code}")
            try:
                close = Close(code, payload[2:].decode())
            except UnicodeDecodeError:
                raise self._fail("a close reason that is not UTF-8", INVALID_DATA) from None
        self._finish()
        return close

    def _too_big(self, size: int) -> WebSocketProtocolError:
        return self._fail(
            f"a {size}-byte message (limit {self.max_message_size})", MESSAGE_TOO_BIG)

    def _fail(self, what: str, code: int = PROTOCOL_ERROR) -> WebSocketProtocolError:
        self._finish()
        return WebSocketProtocolError(f"the {self._peer} sent {what}", code)

    def _finish(self) -> None:
        self.finished = True
        self._buffer.clear()
        self._offset = 0
        self._fragments = []
