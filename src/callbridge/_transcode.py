"""Streaming transcoding between the phone's μ-law 8 kHz and 16-bit PCM at 8, 16 or 24 kHz.

Twilio carries G.711 μ-law at 8 kHz in 20 ms frames; PCM voice platforms (VAPI at
16 kHz, OpenAI's `pcm16` at 24 kHz) want little-endian int16 at their own rate. Each
direction of a call gets one stateful converter (`ToPcm`, `ToMulaw`) that takes chunks
of any size and carries what it needs across calls, so audio cut at frame edges comes
out the same as audio converted in one go. Sans-I/O: bytes in, bytes out, no clocks.

Why these libraries:

- **numpy** for G.711. `audioop` is gone in Python 3.13 (and warns on import in 3.11),
  and encoding a frame in a Python loop costs ~60 µs (decoding ~4). A lookup table
  applied with `ndarray.take` does either in 1-3 µs, and hands numpy arrays to soxr.
  Both tables are built from `_mulaw`, so the G.711 formula has one definition:
  decoding is a 256-entry int16 table, encoding a 65536-entry uint8 table indexed by
  the sample + 32768 (64 KiB, built on first use in ~25 ms).
- **soxr** (python-soxr, libsoxr) for resampling. `ResampleStream` keeps its filter
  state across chunks, its filters are designed for us (no filter is written here),
  and its output is already aligned with its input: the filter's group delay is taken
  off, so output sample *k* is input time *k / rate* (measured: the best alignment by
  cross-correlation is 0 samples at every rate pair).

Quality "HQ" (libsoxr's default, 20-bit precision), chosen by measurement
(`bench/transcode.py`, `docs/audio.md`): MQ, HQ and VHQ cost the same (a `convert`
is 8-10 µs a 20 ms frame, soxr's share ~3 µs), all are flat within 0.001 dB from
100 Hz to 3.4 kHz, and all take more than 110 dB off anything above 4 kHz going to
8 kHz (HQ: 137 dB or more). HQ's precision covers the int16 output where MQ's (16 bits)
only just does, and at 24 kHz VHQ holds twice as much audio back (160 ms) as HQ. QQ
(cubic interpolation) holds nothing back but has no anti-alias filter: a 6 kHz sine at
16 kHz comes out at 8 kHz at full level, as a 2 kHz tone, and it loses 3.5 dB at
3.4 kHz going up. LQ loses 7.9 dB at 3.4 kHz.

Latency: libsoxr filters in blocks (by FFT), so the stream gives out nothing for the
first blocks and then a block at a time. With its default block sizes, fed 20 ms
frames, HQ holds back 120 ms at most (8 <-> 16 kHz; 80 ms for 8 <-> 24 kHz) beyond the
frame itself; with the smaller blocks set below, half that (docs/audio.md). `flush`
gives out what is held at the end of a stream (the end of a response) and readies the
converter for the next one.

soxr runs in float32 here, not int16: libsoxr dithers int16 output with random noise
(measured: the same input through two int16 streams gives different samples). The float path is
deterministic, gives the same samples however the input is chunked, and we round and
clip to int16 ourselves.
"""

from __future__ import annotations

import functools
import os
from typing import Final

import numpy as np
import numpy.typing as npt
import soxr

# libsoxr reads these (log2 of its FFT block sizes) when a resampler is made: at 8 its
# blocks are half the default's, so it holds back half as much audio (60 ms at most
# at 8 <-> 16 kHz, not 120) at the same quality and cost (measured: docs/audio.md). A
# value the process already has wins.
os.environ.setdefault("SOXR_MIN_DFT_SIZE", "8")
os.environ.setdefault("SOXR_LARGE_DFT_SIZE", "8")

from . import _mulaw

__all__ = [
    "RATES",
    "ToMulaw",
    "ToPcm",
    "mulaw_to_pcm16",
    "pcm16_to_mulaw",
]

#: the PCM rates a converter accepts: the phone's own, VAPI's, OpenAI's
RATES: Final = (8000, 16000, 24000)
#: see the module docstring for why
QUALITY: Final = "HQ"

_PHONE_RATE: Final = 8000
#: little-endian int16 whatever the machine's byte order, as the platforms send it
_PCM16: Final = np.dtype("<i2")


@functools.cache
def _decode_table() -> npt.NDArray[np.int16]:
    return np.array(_mulaw.decode(bytes(range(256))), dtype=_PCM16)


@functools.cache
def _encode_table() -> npt.NDArray[np.uint8]:
    # indexed by sample + 32768; 64 Ki calls of the scalar encoder once, ~30 ms
    return np.array([_mulaw.encode_sample(s) for s in range(-32768, 32768)], dtype=np.uint8)


def _decode(mulaw: bytes) -> npt.NDArray[np.int16]:
    return _decode_table().take(np.frombuffer(mulaw, dtype=np.uint8))


def _encode(samples: npt.NDArray[np.int16]) -> bytes:
    index = samples.astype(np.int32) + 32768
    return _encode_table().take(index).tobytes()


def mulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 μ-law bytes to little-endian int16 PCM at the same rate (no resampling)."""
    return _decode(data).tobytes()


def pcm16_to_mulaw(data: bytes) -> bytes:
    """Little-endian int16 PCM to G.711 μ-law bytes at the same rate (`len(data)` even)."""
    if len(data) % 2:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(data)}")
    return _encode(np.frombuffer(data, dtype=_PCM16))


def _check_rate(rate: int) -> None:
    if rate not in RATES:
        raise ValueError(f"rate must be one of {RATES}, not {rate}")


def _to_int16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    # the filter can overshoot a full-scale input by a little: clip, never wrap
    return np.clip(np.rint(samples), -32768, 32767).astype(_PCM16)


class _Resampler:
    """One direction's `soxr.ResampleStream`, int16 in and out, restartable after a flush."""

    def __init__(self, in_rate: int, out_rate: int, quality: str) -> None:
        self._stream = soxr.ResampleStream(
            in_rate, out_rate, 1, dtype="float32", quality=quality
        )

    def process(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        out: npt.NDArray[np.float32] = self._stream.resample_chunk(samples.astype(np.float32))
        return _to_int16(out)

    def flush(self) -> npt.NDArray[np.int16]:
        out: npt.NDArray[np.float32] = self._stream.resample_chunk(
            np.zeros(0, dtype=np.float32), last=True
        )
        # a stream that has seen `last` takes no more input until cleared
        self._stream.clear()
        return _to_int16(out)


class ToPcm:
    """The caller's μ-law 8 kHz to little-endian int16 PCM at `rate`.

    One per call and direction: the resampler's filter state is carried from one
    `convert` to the next, so frames come out as if the call were converted in one go.
    At 8000 there is no resampler, only G.711.
    """

    def __init__(self, rate: int, *, quality: str = QUALITY) -> None:
        _check_rate(rate)
        self.rate = rate
        self._resampler = (
            None if rate == _PHONE_RATE else _Resampler(_PHONE_RATE, rate, quality)
        )

    def convert(self, mulaw: bytes) -> bytes:
        """Any number of μ-law bytes in; the PCM the resampler has ready out (maybe none)."""
        samples = _decode(mulaw)
        if self._resampler is None:
            return samples.tobytes()
        return self._resampler.process(samples).tobytes()

    def flush(self) -> bytes:
        """What the resampler still holds, at the end of a stream; then ready for a new one."""
        if self._resampler is None:
            return b""
        return self._resampler.flush().tobytes()


class ToMulaw:
    """Little-endian int16 PCM at `rate` to μ-law 8 kHz for the caller.

    The platforms send PCM in chunks of any size, odd byte counts included: a trailing
    odd byte is kept and joined to the next chunk, so no sample is split or lost.
    """

    def __init__(self, rate: int, *, quality: str = QUALITY) -> None:
        _check_rate(rate)
        self.rate = rate
        self._resampler = (
            None if rate == _PHONE_RATE else _Resampler(rate, _PHONE_RATE, quality)
        )
        self._odd = b""

    def convert(self, pcm: bytes) -> bytes:
        """Any number of PCM bytes in; the μ-law the resampler has ready out (maybe none)."""
        if self._odd:
            pcm = self._odd + pcm
        cut = len(pcm) & ~1
        self._odd = pcm[cut:]
        samples = np.frombuffer(pcm, dtype=_PCM16, count=cut // 2)
        if self._resampler is not None:
            samples = self._resampler.process(samples)
        return _encode(samples)

    def flush(self) -> bytes:
        """What the resampler still holds, at the end of a stream; then ready for a new one.

        A dangling odd byte, half a sample, is dropped.
        """
        self._odd = b""
        if self._resampler is None:
            return b""
        return _encode(self._resampler.flush())
