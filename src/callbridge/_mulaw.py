"""μ-law audio for the local realtime server: G.711 arithmetic, test signals, VAD.

The server's voice activity detection needs linear samples, and `audioop` is gone
in Python 3.13, so the standard G.711 formula lives here (pure code, no clocks).
Signals are deterministic so tests can compare bytes exactly. What the local model
says back lives in `_brains`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import attrs

__all__ = [
    "DEFAULT_THRESHOLD_DB",
    "FRAME_BYTES",
    "SpeechDetector",
    "dbfs",
    "decode",
    "encode_sample",
    "pattern_audio",
    "tone",
    "trim_silence",
]

FRAME_MS = 20
#: one 20 ms analysis window of 8 kHz μ-law
FRAME_BYTES = FRAME_MS * 8
#: VAD level for the API's default `threshold` of 0.5 (see `LocalRealtimeServer`)
DEFAULT_THRESHOLD_DB = -35.0

_BIAS = 0x84
_CLIP = 32635


def _decode_byte(byte: int) -> int:
    u = ~byte & 0xFF
    magnitude = ((((u & 0x0F) << 3) + _BIAS) << ((u >> 4) & 0x07)) - _BIAS
    return -magnitude if u & 0x80 else magnitude


#: μ-law byte -> 16-bit linear sample (0xFF and 0x7F both decode to 0)
_DECODE = tuple(_decode_byte(b) for b in range(256))


def decode(data: bytes) -> list[int]:
    """μ-law bytes to 16-bit linear samples."""
    return [_DECODE[b] for b in data]


def encode_sample(sample: int) -> int:
    """One 16-bit linear sample to a μ-law byte (the G.711 segment encoder)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), _CLIP) + _BIAS
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def dbfs(data: bytes) -> float:
    """RMS level of μ-law audio in dB relative to a full-scale square wave (-inf for silence)."""
    if not data:
        return -math.inf
    power = sum(_DECODE[b] ** 2 for b in data) / len(data)
    return -math.inf if power == 0 else 10 * math.log10(power / 32768**2)


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
