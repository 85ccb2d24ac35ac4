"""The local model's audio: what it hears (server VAD) and what it says (test signals).

`callbridge._mulaw` is the G.711 codec anyone may need; everything here is a choice
the local model makes on top of it: where speech starts and stops, how its level
maps to the API's `threshold`, and which deterministic signals it speaks, so tests
can compare bytes exactly. It stays with the model because nothing else decides
these things: the bridge never looks inside the audio it forwards. Pure code, no
clocks: the server drives `SpeechDetector` with each append, tests drive it directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import attrs

from .._mulaw import FRAME_BYTES, FRAME_MS, dbfs, encode_sample

__all__ = [
    "DEFAULT_THRESHOLD_DB",
    "SpeechDetector",
    "pattern_audio",
    "tone",
    "trim_silence",
]

#: VAD level for the API's default `threshold` of 0.5 (see `LocalRealtimeServer`)
DEFAULT_THRESHOLD_DB = -35.0


def tone(ms: int, *, hz: float = 440.0, amplitude: float = 0.5) -> bytes:
    """`ms` of a sine tone (default 440 Hz at half scale, about -9 dBFS): loud for any VAD."""
    n = ms * 8
    return bytes(
        encode_sample(round(amplitude * 32767 * math.sin(2 * math.pi * hz * i / 8000)))
        for i in range(n)
    )


def _prng_bytes(seed: int) -> Iterator[int]:
    # xorshift32: tiny, fully specified, identical on every platform and Python version
    state = (seed * 0x9E3779B1 + 0x6D2B79F5) & 0xFFFFFFFF or 1
    while True:
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        yield state & 0xFF


def pattern_audio(item_index: int, nbytes: int) -> bytes:
    """Deterministic, recognisable μ-law bytes for assistant item `item_index`.

    A per-item xorshift32 byte stream with the two μ-law silence codes remapped
    (0xFF -> 0xFE, 0x7F -> 0x7E), so it never contains a silence byte and is loud
    noise to a VAD. Prefix-stable: `pattern_audio(i, n)` is the first `n` bytes of
    `pattern_audio(i, m)` for any `m >= n`, so a test can tell exactly which item,
    and how much of it, reached the caller.
    """
    stream = _prng_bytes(item_index)
    out = bytearray(next(stream) for _ in range(nbytes))
    return bytes(out.replace(b"\xff", b"\xfe").replace(b"\x7f", b"\x7e"))


def trim_silence(data: bytes, threshold_db: float) -> bytes:
    """Drop leading and trailing 20 ms windows at or below `threshold_db` (window granular)."""
    windows = [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]
    loud = [i for i, w in enumerate(windows) if dbfs(w) > threshold_db]
    if not loud:
        return b""
    return data[loud[0] * FRAME_BYTES : (loud[-1] + 1) * FRAME_BYTES]


@attrs.define
class SpeechDetector:
    """Energy VAD over aligned 20 ms windows, driven by the audio alone (the input clock).

    Pure and incremental, so the server runs it as appends arrive and tests can
    drive it synchronously. A window is speech when its level is above the
    threshold; speech starts once loud windows have lasted `min_speech_ms`
    (reported as the start of the first loud window) and stops after `silence_ms`
    of quiet windows (reported as the end of the last one: it includes the silence).
    """

    #: bytes of input analysed so far (always a whole number of windows)
    pos: int = 0
    speaking: bool = False
    _run_ms: int = 0
    _onset_ms: int = 0
    _silence_ms: int = 0

    def reset(self) -> None:
        """Forget any speech in progress (the buffer was committed or cleared)."""
        self.speaking, self._run_ms = False, 0

    def skip(self, audio_len: int) -> None:
        """Do not analyse audio up to `audio_len` bytes (VAD was off when it came)."""
        self.pos = audio_len // FRAME_BYTES * FRAME_BYTES

    def feed(self, audio: bytes | bytearray, *, threshold_db: float, min_speech_ms: int,
             silence_ms: int) -> Iterator[tuple[str, int]]:
        """Analyse the complete windows of `audio` (all input so far) not seen yet;
        yields ("speech_started", onset_ms) and ("speech_stopped", end_ms)."""
        while len(audio) - self.pos >= FRAME_BYTES:
            at_ms = self.pos // 8
            loud = dbfs(bytes(audio[self.pos : self.pos + FRAME_BYTES])) > threshold_db
            self.pos += FRAME_BYTES
            if not self.speaking:
                if not loud:
                    self._run_ms = 0
                    continue
                if self._run_ms == 0:
                    self._onset_ms = at_ms
                self._run_ms += FRAME_MS
                if self._run_ms >= min_speech_ms:
                    self.speaking, self._silence_ms, self._run_ms = True, 0, 0
                    yield "speech_started", self._onset_ms
            elif loud:
                self._silence_ms = 0
            else:
                self._silence_ms += FRAME_MS
                if self._silence_ms >= silence_ms:
                    self.speaking = False
                    yield "speech_stopped", at_ms + FRAME_MS
