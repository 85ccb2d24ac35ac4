"""G.711 μ-law arithmetic: the phone's 8 kHz audio as bytes, to and from linear samples.

Twilio and the Realtime API (`audio/pcmu`) both carry μ-law, and the bridge forwards
it untouched; only code that has to *look at* the audio needs samples: the local
model's VAD and signals (`callbridge.local`), the synthetic caller's speech and the
WAV helpers (`callbridge.testing`). `audioop` is gone in Python 3.13, so the standard
G.711 segment formula lives here. Sans-I/O: pure functions, no clocks.
"""

from __future__ import annotations

import math

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "dbfs",
    "decode",
    "encode_sample",
]

#: the phone's packet: 20 ms (Twilio's media frames, the local model's VAD window)
FRAME_MS = 20
#: one 20 ms frame of 8 kHz μ-law
FRAME_BYTES = FRAME_MS * 8

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
