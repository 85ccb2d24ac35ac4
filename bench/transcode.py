"""What the μ-law <-> PCM transcoder costs per 20 ms frame, and how good it is.

    .venv/bin/python bench/transcode.py [--frames 10000] [--quality HQ]

Cost: `ToPcm(rate).convert` on a 160-byte μ-law frame and `ToMulaw(rate).convert` on
a 20 ms PCM frame, timeit over `--frames` frames, best of 5, for 16 and 24 kHz, and
G.711 alone. soxr filters in blocks, so most calls only queue input and one in five
or so does the work: the mean is what a frame costs, the 99th percentile what a call
that does a block's work costs. Quality (`--quality` to compare soxr's settings): the
round trip's SNR, the passband gain, the attenuation above 4 kHz, and how long the
resampler holds audio back when fed 20 ms frames. docs/audio.md quotes this script.
"""

from __future__ import annotations

import argparse
import math
import time
import timeit
from collections.abc import Callable
from functools import partial

import numpy as np
import soxr

from callbridge import _transcode
from callbridge._transcode import ToMulaw, ToPcm, mulaw_to_pcm16, pcm16_to_mulaw

RATES = (16000, 24000)
PASSBAND = (100, 300, 1000, 2000, 3000, 3400, 3800)
STOPBAND = (4500, 5000, 6000, 7000, 10000)


def tone(freqs: tuple[float, ...], rate: int, seconds: float, level: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return level * sum(np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs))


def pcm(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def per_call(fn: Callable[[], object], frames: int) -> tuple[float, float]:
    """Mean µs per call (best of 5 runs of `frames` calls), and the 99th percentile call."""
    best = min(timeit.repeat(fn, number=frames, repeat=5)) / frames
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return best * 1e6, float(np.percentile(times, 99)) * 1e6


def cost(frames: int, quality: str) -> None:
    mulaw_frame = pcm16_to_mulaw(pcm(tone((440.0,), 8000, 0.02, 8000)))
    pcm_frame = mulaw_to_pcm16(mulaw_frame)
    rows: list[tuple[str, Callable[[], object]]] = [
        ("mulaw_to_pcm16 (G.711 only)", lambda: mulaw_to_pcm16(mulaw_frame)),
        ("pcm16_to_mulaw (G.711 only)", lambda: pcm16_to_mulaw(pcm_frame)),
    ]
    for rate in RATES:
        to_pcm = ToPcm(rate, quality=quality)
        to_mulaw = ToMulaw(rate, quality=quality)
        frame = pcm(tone((440.0,), rate, 0.02, 8000))
        rows.append((f"ToPcm({rate}).convert", partial(to_pcm.convert, mulaw_frame)))
        rows.append((f"ToMulaw({rate}).convert", partial(to_mulaw.convert, frame)))
    print(f"cost per 20 ms frame ({frames} frames, best of 5), soxr {quality}")
    print("| call | mean µs | p99 µs |\n|---|---|---|")
    for name, fn in rows:
        mean, worst = per_call(fn, frames)
        print(f"| `{name}` | {mean:.1f} | {worst:.0f} |")


def stream(converter: ToPcm | ToMulaw, data: bytes, chunk: int) -> bytes:
    out = [converter.convert(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return b"".join(out) + converter.flush()


def amplitude(x: np.ndarray, freq: float, rate: int) -> float:
    t = np.arange(len(x)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.hypot(*coef))


def snr_db(signal: np.ndarray, out: np.ndarray) -> float:
    edge = 400  # 50 ms at 8 kHz each side: the tones' start and stop are not tones
    s, e = signal[edge:-edge], (out - signal)[edge:-edge]
    return 10 * math.log10(np.sum(s**2) / np.sum(e**2))


def quality_figures(quality: str) -> None:
    signal = tone((300, 700, 1100, 1900, 2600, 3400), 8000, 2.0, 4000)
    mulaw = pcm16_to_mulaw(pcm(signal))
    alone = snr_db(signal, samples(mulaw_to_pcm16(mulaw)))
    print(f"\nG.711 alone (six tones 300-3400 Hz, 4000 each): SNR {alone:.1f} dB")
    for rate in RATES:
        up = stream(ToPcm(rate, quality=quality), mulaw, 160)
        back = stream(ToMulaw(rate, quality=quality), up, 2 * rate // 50)
        snr = snr_db(signal, samples(mulaw_to_pcm16(back)))
        print(f"round trip via {rate} Hz in 20 ms frames: SNR {snr:.1f} dB")

    print(f"\ngain in dB (soxr {quality} alone, float: no μ-law, no rounding)")
    print("| Hz | " + " | ".join(f"8k→{r // 1000}k | {r // 1000}k→8k" for r in RATES) + " |")
    print("|---|" + "---|---|" * len(RATES))
    for freq in PASSBAND + STOPBAND:
        cells = []
        for rate in RATES:
            for a, b in ((8000, rate), (rate, 8000)):
                if freq >= a / 2:
                    cells.append("–")
                    continue
                x = tone((freq,), a, 1.0, 1.0).astype(np.float32)
                y = soxr.resample(x, a, b, quality=quality).astype(np.float64)
                y = y[len(y) // 10 : -len(y) // 10]
                # above the output's Nyquist frequency a tone folds: measure what it folds to
                folded = abs(freq - b * round(freq / b))
                gain = amplitude(y, folded, b)
                cells.append(f"{20 * math.log10(max(gain, 1e-12)):+.3f}")
        print(f"| {freq} | " + " | ".join(cells) + " |")

    print(f"\naudio held back beyond the 20 ms frame, fed 20 ms frames (soxr {quality})")
    for rate in RATES:
        for a, b in ((8000, rate), (rate, 8000)):
            resampler = soxr.ResampleStream(a, b, 1, dtype="float32", quality=quality)
            n = a // 50
            x = np.zeros(n * 250, dtype=np.float32)
            emitted: list[float] = []
            for i in range(0, len(x), n):
                got = len(resampler.resample_chunk(x[i : i + n]))
                emitted += [(i + n) / a] * got
            k = np.arange(len(emitted))
            held = np.array(emitted) - (np.floor(k / b * 50) + 1) / 50
            first = emitted[0] * 1000
            print(
                f"{a}→{b}: first output after {first:.0f} ms of input; held back "
                f"{held.mean() * 1000:.0f} ms on average, {held.max() * 1000:.0f} ms at most"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10000, help="frames per timing run")
    parser.add_argument(
        "--quality", default=_transcode.QUALITY, help="soxr's quality: QQ LQ MQ HQ VHQ"
    )
    args = parser.parse_args()
    print(f"soxr {soxr.__version__} (libsoxr {soxr.__libsoxr_version__}), numpy {np.__version__}")
    cost(args.frames, args.quality)
    quality_figures(args.quality)


if __name__ == "__main__":
    main()
