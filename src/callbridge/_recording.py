"""A call's recording: one stereo WAV, the caller left, the agent right (sans-I/O but for
`write` and `Spool`).

Both channels are μ-law at 8 kHz while the call runs (one byte a sample) and are laid
on the call clock, sample 0 being the instant the call began (as in its `CallRecord`):

* the caller's frames go where Twilio's `timestamp` says (ms since its stream
  began), anchored by the first frame's arrival, so frames lost on the line leave
  silence and late ones still land in place;
* the agent's audio goes where `RecordBuilder.agent_audio` says it plays (sent to
  Twilio, after what was sent before it), and a `clear` cuts it at its instant:
  what was sent but not yet played then is not in the recording, as the caller never
  heard it.

Memory stays bounded however long the call: what is older than `SETTLE_S` can no
longer change (a `clear` only cuts audio still to play, which a busy Twilio queue
holds for seconds at most), and once `SPOOL_S` of it has gathered, `settled` hands it
over, interleaved, for a `Spool` to append to a file in a worker thread. `write`
(blocking: in a thread, once the call is over) decodes the spooled audio and the rest
to 16-bit PCM (`_transcode.mulaw_to_pcm16`) and writes the WAV with the standard library's `wave`.
"""

from __future__ import annotations

import base64
import binascii
import math
import wave
from pathlib import Path

import trio

from ._transcode import mulaw_to_pcm16

__all__ = ["Recording", "Spool"]

RATE = 8000
#: audio older than this (seconds) is settled: nothing cuts it any more
SETTLE_S = 10.0
#: settled audio is handed over for spooling once this many seconds of it gathered
SPOOL_S = 30.0
#: what `write` reads of a spool at a time (bytes of interleaved μ-law: ~16 s)
READ_BYTES = 1 << 18
_SILENCE = 0xFF  # μ-law's zero


class Recording:
    """The two channels of one call; `began` is the call clock's instant of sample 0."""

    def __init__(self, began: float) -> None:
        self._began = began
        self.caller = bytearray()  # from sample `spooled` on
        self.agent = bytearray()
        self.spooled = 0  # samples handed over by `settled`
        self._anchor: float | None = None  # the call clock's instant of Twilio's 0 ms

    def _index(self, at: float) -> int:
        """Call clock -> a sample in the channels held (negative: spooled already)."""
        return round((at - self._began) * RATE) - self.spooled

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
        del self.agent[max(0, self._index(at)):]

    def settled(self, now: float) -> bytes | None:
        """The audio older than `SETTLE_S`, interleaved (caller, agent, caller, ...),
        once `SPOOL_S` of it gathered; it leaves memory. None: not yet."""
        if max(len(self.caller), len(self.agent)) < (SPOOL_S + SETTLE_S) * RATE:
            return None  # (the per-frame check: nothing to compute yet)
        end = self._index(now - SETTLE_S)
        if end < SPOOL_S * RATE:
            return None
        chunk = _interleaved(self.caller[:end], self.agent[:end], end)
        del self.caller[:end], self.agent[:end]
        self.spooled += end
        return chunk

    def write(self, path: Path, spool: Path | None = None) -> None:
        """The WAV (blocking): what `spool` holds, then the rest; both channels run to
        the end of the longer one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(RATE)
            if spool is not None:
                with spool.open("rb") as spooled:
                    while block := spooled.read(READ_BYTES):
                        out.writeframes(mulaw_to_pcm16(block))  # (byte by byte: stereo too)
            frames = max(len(self.caller), len(self.agent))
            out.writeframes(mulaw_to_pcm16(_interleaved(self.caller, self.agent, frames)))


class Spool:
    """A recording's settled audio on its way to a file, in order, off the call's
    path: `put` never waits (the queue is unbounded: what it holds is what a slow disk
    has not taken yet), `run` appends in a worker thread until `close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)

    def put(self, chunk: bytes) -> None:
        self._send.send_nowait(chunk)

    def close(self) -> None:
        """No more chunks: `run` returns once the queued ones are written."""
        self._send.close()

    async def run(self) -> None:
        async with self._receive:
            async for chunk in self._receive:
                await trio.to_thread.run_sync(self._append, chunk)

    def _append(self, chunk: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as spool:
            spool.write(chunk)


def _interleaved(caller: bytes | bytearray, agent: bytes | bytearray, frames: int) -> bytes:
    stereo = bytearray(2 * frames)
    stereo[0::2] = bytes(caller).ljust(frames, b"\xff")
    stereo[1::2] = bytes(agent).ljust(frames, b"\xff")
    return bytes(stereo)


def _audio(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):  # the bridge put in silence of its length
        return bytes([_SILENCE]) * (len(payload) * 3 // 4)


def _place(channel: bytearray, index: int, data: bytes) -> None:
    if index < 0:  # (its start was spooled already: keep what is not)
        data, index = data[-index:], 0
    if len(channel) < index:
        channel.extend(bytes([_SILENCE]) * (index - len(channel)))
    channel[index:index + len(data)] = data
