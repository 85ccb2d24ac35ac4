"""WAV files in and out of the phone's format (μ-law, 8 kHz, mono).

Callers can speak a recorded WAV (`Utterance.from_wav`), and the demo writes the
call's tracks as WAV. Reading accepts what people have lying around: 8- or 16-bit
PCM or G.711 μ-law, any sample rate, mono or stereo (channels are averaged, the
rate is converted by linear interpolation: fine for speech in a test, not hi-fi).
Writing produces 16-bit PCM, which every player opens.
"""

from __future__ import annotations

import struct
from pathlib import Path

from .. import _mulaw
from .._transcode import mulaw_to_pcm16

__all__ = ["RATE", "read_wav", "write_wav"]

#: the phone's sample rate
RATE = 8000

_PCM = 1
_MULAW = 7
_EXTENSIBLE = 0xFFFE


def read_wav(path: str | Path) -> bytes:
    """The audio of a WAV file as μ-law 8 kHz mono bytes; `ValueError` if unreadable."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    frames: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt " and size >= 16:
            code, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if code == _EXTENSIBLE and size >= 26:
                code = struct.unpack_from("<H", body, 24)[0]
            fmt = (code, channels, rate, bits)
        elif chunk_id == b"data":
            frames = body
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None or frames is None:
        raise ValueError(f"{path}: no fmt or data chunk")
    code, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise ValueError(f"{path}: {channels} channels at {rate} Hz")
    if code == _MULAW and bits == 8:
        samples = _mulaw.decode(frames)
    elif code == _PCM and bits == 16:
        count = len(frames) // 2
        samples = list(struct.unpack(f"<{count}h", frames[: count * 2]))
    elif code == _PCM and bits == 8:
        samples = [(b - 128) << 8 for b in frames]
    else:
        raise ValueError(f"{path}: format {code} with {bits} bits per sample is not supported "
                         "(use 8/16-bit PCM or 8-bit mu-law)")
    if channels > 1:
        samples = [sum(samples[i : i + channels]) // channels
                   for i in range(0, len(samples) - channels + 1, channels)]
    if rate != RATE:
        samples = _resample(samples, rate)
    return bytes(_mulaw.encode_sample(s) for s in samples)


def write_wav(path: str | Path, audio: bytes) -> None:
    """Write μ-law 8 kHz mono `audio` as a 16-bit PCM WAV file."""
    frames = mulaw_to_pcm16(audio)
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(frames), b"WAVE", b"fmt ", 16,
                         _PCM, 1, RATE, RATE * 2, 2, 16, b"data", len(frames))
    Path(path).write_bytes(header + frames)


def _resample(samples: list[int], rate: int) -> list[int]:
    if not samples:
        return []
    step = rate / RATE
    last = len(samples) - 1
    out = []
    for n in range(int(len(samples) / step)):
        x = n * step
        i = min(int(x), last)
        frac = x - i
        nxt = samples[min(i + 1, last)]
        out.append(round(samples[i] + (nxt - samples[i]) * frac))
    return out
