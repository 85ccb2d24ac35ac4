"""Speech-like μ-law audio: voiced syllables with a pitch contour, for ears and VADs.

A test tone proves the plumbing but is unpleasant to listen to and nothing like
what a VAD sees on a call. `babble` makes a deterministic stand-in for a voice:
syllables of a few harmonics of a gliding fundamental under a smooth envelope,
with short gaps between them (shorter than any sensible VAD silence duration, so
one utterance stays one turn). Same arguments, same bytes.
"""

from __future__ import annotations

import functools
import math
import random

from .._mulaw import encode_sample

__all__ = ["babble"]

_RATE = 8000
# relative weights of harmonics 1..6: a rough vowel with energy in the voice band
_HARMONICS = (1.0, 0.8, 0.55, 0.35, 0.2, 0.1)


@functools.lru_cache(maxsize=32)
def babble(ms: int, *, pitch_hz: float = 150.0, seed: int = 0, level: float = 0.3) -> bytes:
    """`ms` milliseconds of syllable-like voiced audio around `pitch_hz`, peaking at
    `level` of full scale (0.3 is about -16 dBFS while voiced)."""
    rng = random.Random(seed)
    total = ms * _RATE // 1000
    out = bytearray()
    phase = 0.0
    norm = level * 32767 / sum(_HARMONICS)
    while len(out) < total:
        syllable = int(_RATE * rng.uniform(0.12, 0.28))
        gap = int(_RATE * rng.uniform(0.02, 0.06))
        start_hz = pitch_hz * rng.uniform(0.9, 1.15)
        end_hz = pitch_hz * rng.uniform(0.85, 1.1)
        for n in range(min(syllable, total - len(out))):
            x = n / syllable
            hz = start_hz + (end_hz - start_hz) * x
            phase += 2 * math.pi * hz / _RATE
            envelope = 0.25 + 0.75 * math.sin(math.pi * x)  # never quite silent: one turn
            sample = sum(w * math.sin(k * phase) for k, w in enumerate(_HARMONICS, 1))
            out.append(encode_sample(round(norm * envelope * sample)))
        quiet = min(gap, total - len(out))
        out += bytes(encode_sample(round(norm * 0.2 * math.sin(phase + k))) for k in range(quiet))
    # μ-law has two zeros; keep one, so a WAV round trip is exact
    return bytes(out.replace(b"\x7f", b"\xff"))
