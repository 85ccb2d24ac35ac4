"""The transcoder: G.711 by table against `_mulaw`, and the streaming resamplers' quality.

Deterministic: the signals are synthetic and soxr runs in float32 (see `_transcode`),
so the same input gives the same bytes however it is chunked. The thresholds sit a
little under the figures measured (`docs/audio.md`), which are stated beside them.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from callbridge import _mulaw
from callbridge._transcode import ToMulaw, ToPcm, mulaw_to_pcm16, pcm16_to_mulaw

FRAME_MS = 20
PCM_RATES = [16000, 24000]

Samples = npt.NDArray[np.float64]


def _pcm(samples: Samples) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def _samples(pcm: bytes) -> Samples:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _tones(freqs: list[float], rate: int, seconds: float, level: float) -> Samples:
    t = np.arange(int(rate * seconds)) / rate
    return level * sum(np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs))


def _sweep(rate: int, seconds: float = 1.0, f0: float = 100.0, f1: float = 3400.0) -> Samples:
    """A linear chirp across the phone's band, at -6 dBFS."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return 16000 * np.sin(phase)


def _amplitude(x: Samples, freq: float, rate: int) -> float:
    """The amplitude of the `freq` component of `x` (least squares on a sine and a cosine)."""
    t = np.arange(len(x)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.hypot(*coef))


def _frames(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _to_pcm(rate: int, mulaw: bytes, chunk: int) -> bytes:
    converter = ToPcm(rate)
    return b"".join(converter.convert(c) for c in _frames(mulaw, chunk)) + converter.flush()


def _to_mulaw(rate: int, pcm: bytes, chunk: int) -> bytes:
    converter = ToMulaw(rate)
    return b"".join(converter.convert(c) for c in _frames(pcm, chunk)) + converter.flush()


def _middle(x: Samples, rate: int) -> Samples:
    """Without the first and last 50 ms: where the signal starts and stops is not a tone."""
    edge = rate // 20
    return x[edge:-edge]


# -- G.711 -------------------------------------------------------------------------


def test_decode_table_matches_mulaw_for_every_byte() -> None:
    codes = bytes(range(256))
    assert _samples(mulaw_to_pcm16(codes)).tolist() == _mulaw.decode(codes)


def test_encode_table_matches_mulaw_for_every_int16() -> None:
    every = np.arange(-32768, 32768, dtype="<i2")
    expected = bytes(_mulaw.encode_sample(int(s)) for s in every)
    assert pcm16_to_mulaw(every.tobytes()) == expected


def test_round_trip_is_the_identity_but_for_negative_zero() -> None:
    # 0x7F ("-0") and 0xFF ("+0") both decode to 0, which encodes as 0xFF
    codes = bytes(range(256))
    expected = bytes(0xFF if b == 0x7F else b for b in codes)
    assert pcm16_to_mulaw(mulaw_to_pcm16(codes)) == expected


def test_pcm16_to_mulaw_refuses_half_a_sample() -> None:
    with pytest.raises(ValueError, match="even"):
        pcm16_to_mulaw(b"\x00\x01\x02")


@pytest.mark.parametrize("make", [ToPcm, ToMulaw])
def test_unsupported_rate(make: type[ToPcm | ToMulaw]) -> None:
    with pytest.raises(ValueError, match="rate"):
        make(44100)


def test_8000_is_g711_only() -> None:
    mulaw = bytes(range(256)) * 3
    pcm = mulaw_to_pcm16(mulaw)
    to_pcm = ToPcm(8000)
    assert b"".join(to_pcm.convert(f) for f in _frames(mulaw, 160)) == pcm
    assert to_pcm.flush() == b""
    to_mulaw = ToMulaw(8000)
    # odd chunks: the half sample waits for its other byte
    assert b"".join(to_mulaw.convert(c) for c in _frames(pcm, 333)) == pcm16_to_mulaw(pcm)
    assert to_mulaw.flush() == b""


# -- resampling quality --------------------------------------------------------------


@pytest.mark.parametrize("rate", PCM_RATES)
def test_round_trip_snr(rate: int) -> None:
    """Speech-band tones through μ-law -> PCM at `rate` -> μ-law, in 20 ms frames.

    Measured: 36.4 dB against the signal before μ-law, at both rates, where G.711 alone
    gives 36.7 dB for these tones; soxr's output is aligned with its input (best lag 0).
    """
    signal = _tones([300, 700, 1100, 1900, 2600, 3400], 8000, 1.0, level=4000)
    mulaw = pcm16_to_mulaw(_pcm(signal))
    pcm = _to_pcm(rate, mulaw, 160)
    assert len(pcm) == len(mulaw) * 2 * rate // 8000
    back = _samples(mulaw_to_pcm16(_to_mulaw(rate, pcm, 2 * rate * FRAME_MS // 1000)))
    assert len(back) == len(signal)

    lags = range(-5, 6)
    scores = [np.dot(np.roll(back, -lag)[400:-400], signal[400:-400]) for lag in lags]
    assert lags[int(np.argmax(scores))] == 0

    error = _middle(back - signal, 8000)
    snr = 10 * math.log10(np.sum(_middle(signal, 8000) ** 2) / np.sum(error**2))
    g711_alone = _samples(mulaw_to_pcm16(mulaw)) - signal
    g711_snr = 10 * math.log10(np.sum(signal**2) / np.sum(g711_alone**2))
    assert snr > 36.0
    assert snr > g711_snr - 0.5


PASSBAND = [100, 300, 1000, 2000, 3000, 3400]


@pytest.mark.parametrize("rate", PCM_RATES)
@pytest.mark.parametrize("freq", PASSBAND)
def test_upsampling_passband_is_flat(rate: int, freq: int) -> None:
    """8 kHz -> `rate`: a sine keeps its level (measured: within 0.001 dB)."""
    signal = _tones([freq], 8000, 0.5, level=16000)
    mulaw = pcm16_to_mulaw(_pcm(signal))
    before = _amplitude(_samples(mulaw_to_pcm16(mulaw)), freq, 8000)
    after = _amplitude(_middle(_samples(_to_pcm(rate, mulaw, 160)), rate), freq, rate)
    assert abs(20 * math.log10(after / before)) < 0.1


@pytest.mark.parametrize("rate", PCM_RATES)
@pytest.mark.parametrize("freq", PASSBAND)
def test_downsampling_passband_is_flat(rate: int, freq: int) -> None:
    """`rate` -> 8 kHz: a sine keeps its level (measured: within 0.03 dB, μ-law's steps)."""
    signal = _tones([freq], rate, 0.5, level=16000)
    out = _samples(mulaw_to_pcm16(_to_mulaw(rate, _pcm(signal), 2 * rate * FRAME_MS // 1000)))
    gain = _amplitude(_middle(out, 8000), freq, 8000) / 16000
    assert abs(20 * math.log10(gain)) < 0.1


@pytest.mark.parametrize("rate", PCM_RATES)
@pytest.mark.parametrize("freq", [4500, 6000, 7000])
def test_downsampling_removes_what_8000_cannot_carry(rate: int, freq: int) -> None:
    """Above 4 kHz nothing comes through, aliased or not: μ-law digital silence.

    soxr alone (float) attenuates these by more than 130 dB (docs/audio.md), far below
    μ-law's smallest step; unfiltered, a 6 kHz sine would fold to 2 kHz at full level.
    """
    if freq >= rate // 2:
        pytest.skip("not representable at this rate")
    signal = _tones([freq], rate, 0.5, level=16000)
    out = _samples(mulaw_to_pcm16(_to_mulaw(rate, _pcm(signal), 2 * rate * FRAME_MS // 1000)))
    assert len(out) == 4000
    assert np.max(np.abs(_middle(out, 8000))) == 0


# -- streaming: frame edges, chunk sizes, flush ----------------------------------------------


def _edge_steps(x: Samples, period: int) -> tuple[float, float]:
    """The largest sample-to-sample step across chunk edges, and everywhere else."""
    steps = np.abs(np.diff(x))
    at_edges = np.zeros(len(steps), dtype=bool)
    at_edges[period - 1 :: period] = True
    return float(steps[at_edges].max()), float(steps[~at_edges].max())


@pytest.mark.parametrize("rate", PCM_RATES)
def test_to_pcm_in_frames_equals_one_go(rate: int) -> None:
    mulaw = pcm16_to_mulaw(_pcm(_sweep(8000)))
    framed = _to_pcm(rate, mulaw, 160)
    assert framed == _to_pcm(rate, mulaw, len(mulaw))
    assert _to_pcm(rate, mulaw, 37) == framed
    assert len(framed) == 2 * len(mulaw) * rate // 8000
    at_edges, elsewhere = _edge_steps(_samples(framed), rate * FRAME_MS // 1000)
    assert at_edges <= elsewhere


@pytest.mark.parametrize("rate", PCM_RATES)
@pytest.mark.parametrize("chunk", [2 * 16000 * FRAME_MS // 1000, 333, 1])
def test_to_mulaw_in_chunks_equals_one_go(rate: int, chunk: int) -> None:
    """Any chunking, odd byte counts included: nothing lost, nothing duplicated."""
    pcm = _pcm(_sweep(rate))
    if chunk == 1:
        pcm = pcm[: 2 * rate // 10]  # byte by byte: 100 ms is enough
    chunked = _to_mulaw(rate, pcm, chunk)
    assert chunked == _to_mulaw(rate, pcm, len(pcm))
    assert len(chunked) == len(pcm) // 2 * 8000 // rate
    period = 8000 * FRAME_MS // 1000
    at_edges, elsewhere = _edge_steps(_samples(mulaw_to_pcm16(chunked)), period)
    assert at_edges <= elsewhere


@pytest.mark.parametrize("make", [ToPcm, ToMulaw])
@pytest.mark.parametrize("rate", PCM_RATES)
def test_flush_readies_the_next_stream(make: type[ToPcm | ToMulaw], rate: int) -> None:
    """After `flush` a converter starts afresh: the next stream comes out as from a new one."""
    data = bytes(range(256)) * 10
    converter = make(rate)
    first = converter.convert(data) + converter.flush()
    second = converter.convert(data) + converter.flush()
    assert first == second
    assert len(first) > 0


def test_to_mulaw_flush_drops_half_a_sample() -> None:
    converter = ToMulaw(16000)
    out = converter.convert(b"\x00" * 641) + converter.flush()
    assert len(out) == 160
    assert converter.convert(b"\x00" * 640) + converter.flush() == out
