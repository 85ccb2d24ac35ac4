"""WAV in and out, and callers that speak a recording."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import pytest

from callbridge._mulaw import decode, encode_sample
from callbridge.testing import TwilioCaller, Utterance, simulate_call
from callbridge.testing._voice import babble
from callbridge.testing._wav import read_wav, write_wav

# 0x7F and 0xFF both decode to 0, which encodes back as 0xFF
ALL_CODES = bytes(b for b in range(256) if b != 0x7F)


def _pcm_wav(path: Path, samples: list[int], *, rate: int, channels: int = 1,
             width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
        else:
            w.writeframes(bytes((s >> 8) + 128 for s in samples))
    return path


def test_write_then_read_is_lossless_for_mulaw(tmp_path: Path) -> None:
    audio = ALL_CODES * 10
    write_wav(tmp_path / "a.wav", audio)
    with wave.open(str(tmp_path / "a.wav")) as w:  # a plain PCM file any player opens
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == len(audio)
    assert read_wav(tmp_path / "a.wav") == audio


def test_reads_mulaw_wav(tmp_path: Path) -> None:
    audio = ALL_CODES
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"fact" + struct.pack("<I", 4) + struct.pack("<I", len(audio))  # skipped
    body += b"data" + struct.pack("<I", len(audio)) + audio
    (tmp_path / "u.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert read_wav(tmp_path / "u.wav") == audio


@pytest.mark.parametrize(("rate", "channels", "width"),
                         [(8000, 1, 1), (16000, 1, 2), (44100, 2, 2), (22050, 1, 2)])
def test_reads_pcm_at_any_rate_and_channel_count(tmp_path: Path, rate: int, channels: int,
                                                 width: int) -> None:
    # 400 Hz for half a second: after conversion, still half a second of 400 Hz
    mono = [round(12000 * math.sin(2 * math.pi * 400 * n / rate)) for n in range(rate // 2)]
    samples = [s for s in mono for _ in range(channels)]
    audio = read_wav(_pcm_wav(tmp_path / "p.wav", samples, rate=rate, channels=channels,
                              width=width))
    assert abs(len(audio) - 4000) <= 1
    expected = [round(12000 * math.sin(2 * math.pi * 400 * n / 8000)) for n in range(len(audio))]
    error = max(abs(a - b) for a, b in zip(decode(audio), expected, strict=True))
    assert error < 12000 * 0.08  # μ-law step plus interpolation error, far below the signal


@pytest.mark.parametrize("content", [b"", b"RIFF\0\0\0\0WAVX", b"RIFF\x04\0\0\0WAVE"])
def test_unreadable_files_are_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.wav").write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.wav"):
        read_wav(tmp_path / "bad.wav")


def test_unsupported_encoding_is_named(tmp_path: Path) -> None:
    path = _pcm_wav(tmp_path / "p.wav", [0] * 100, rate=8000)
    data = bytearray(path.read_bytes())
    data[20:22] = struct.pack("<H", 3)  # IEEE float
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="format 3"):
        read_wav(path)


async def test_a_caller_speaks_a_wav_file_bit_exact(autojump_clock: object,
                                                    tmp_path: Path) -> None:
    speech = babble(1000, seed=3)
    write_wav(tmp_path / "hello.wav", speech)
    utterance = Utterance.from_wav(tmp_path / "hello.wav", at=0.5)
    assert utterance.duration == 1.0
    assert utterance.audio == speech
    call = await simulate_call(TwilioCaller(utterances=[utterance], hangup_at=3))
    call.check_protocols()
    sent = bytes(call.caller.sent_audio)
    assert sent[4000:12000] == speech  # from 0.5 s, every frame of the recording
    assert set(sent[:4000]) == set(sent[12000:]) == {0xFF}
    assert bytes(call.session.input_audio) == sent
    assert call.session.turns and speech in call.session.turns[0]


def test_babble_is_deterministic_and_loud_enough_for_vad() -> None:
    from callbridge._mulaw import dbfs

    a = babble(2000, pitch_hz=120, seed=5)
    assert a == babble(2000, pitch_hz=120, seed=5) != babble(2000, pitch_hz=120, seed=6)
    levels = [dbfs(a[i : i + 160]) for i in range(0, len(a), 160)]
    assert sum(level > -30 for level in levels) > 0.7 * len(levels)
    assert encode_sample(0) == 0xFF
