"""A call's recording: one stereo WAV, the caller left, the agent right (sans-I/O but for
`write`).

Both channels are μ-law at 8 kHz while the call runs (one byte a sample, 16 KB a
second of call: a recorded hour holds about 58 MB until its call ends) and are laid
on the call clock, sample 0 being the instant the call began (as in its
`CallRecord`):

* the caller's frames go where Twilio's `timestamp` says (ms since its stream
  began), anchored by the first frame's arrival, so frames lost on the line leave
  silence and late ones still land in place;
* the agent's audio goes where `RecordBuilder.agent_audio` says it plays (sent to
  Twilio, after what was sent before it), and a `clear` cuts it at its instant:
  what was sent but not yet played then is not in the recording, as the caller never
  heard it.

`write` (blocking: run it in a thread once the call is over) decodes both channels to
16-bit PCM and writes the file with the standard library's `wave`.
"""

from __future__ import annotations

import base64
import binascii
import wave
from pathlib import Path

from ._mulaw import decode

__all__ = ["Recording"]

RATE = 8000
_SILENCE = 0xFF  # μ-law's zero
# μ-law byte -> the low and the high byte of its 16-bit little-endian sample, as
# `bytes.translate` tables: a channel decodes at C speed, a byte at a time
_LOW = bytes(sample & 0xFF for sample in decode(bytes(range(256))))
_HIGH = bytes((sample >> 8) & 0xFF for sample in decode(bytes(range(256))))


class Recording:
    """The two channels of one call; `began` is the call clock's instant of sample 0."""

    def __init__(self, began: float) -> None:
        self._began = began
        self.caller = bytearray()
        self.agent = bytearray()
        self._anchor: float | None = None  # the call clock's instant of Twilio's 0 ms

    def _index(self, at: float) -> int:
        return max(0, round((at - self._began) * RATE))

    def caller_frame(self, payload: str, timestamp: int | None, at: float) -> None:
        """A `media` frame from Twilio, arrived at `at` (call clock)."""
        if timestamp is not None:
            if self._anchor is None:
                self._anchor = at - timestamp / 1000
            at = self._anchor + timestamp / 1000
        _place(self.caller, self._index(at), _audio(payload))

    def agent_audio(self, plays_at: float, payload: str) -> None:
        """Agent audio that plays from `plays_at` (call clock)."""
        _place(self.agent, self._index(plays_at), _audio(payload))

    def clear(self, at: float) -> None:
        """Twilio was told to drop what it had not played yet, at `at`."""
        del self.agent[self._index(at):]

    def write(self, path: Path) -> None:
        """The WAV (blocking). Both channels run to the end of the longer one."""
        frames = max(len(self.caller), len(self.agent))
        stereo = bytearray(2 * frames)  # μ-law, interleaved: left, right, left, ...
        stereo[0::2] = self.caller.ljust(frames, b"\xff")
        stereo[1::2] = self.agent.ljust(frames, b"\xff")
        pcm = bytearray(4 * frames)  # 16-bit little-endian, interleaved the same way
        pcm[0::2] = stereo.translate(_LOW)
        pcm[1::2] = stereo.translate(_HIGH)
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes(pcm)


def _audio(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):  # the bridge put in silence of its length
        return bytes([_SILENCE]) * (len(payload) * 3 // 4)


def _place(channel: bytearray, index: int, data: bytes) -> None:
    if len(channel) < index:
        channel.extend(bytes([_SILENCE]) * (index - len(channel)))
    channel[index:index + len(data)] = data
