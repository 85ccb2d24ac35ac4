"""The caller's audio on its way to the model: the pure `CallerAudio` queue."""

from __future__ import annotations

import base64

import pytest

from callbridge import realtime as rt
from callbridge._calldata import CallStats
from callbridge._inbound import MAX_GAP_MS, CallerAudio

FRAME = 160  # 20 ms of μ-law


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def drain(queue: CallerAudio) -> bytes:
    out = b""
    while (event := queue.next()) is not None:
        assert isinstance(event, rt.InputAudioBufferAppend)
        queue.sent()
        out += base64.b64decode(event.audio)
    return out


def test_lost_frames_are_heard_as_silence_by_their_timestamps() -> None:
    stats = CallStats()
    queue = CallerAudio(stats, limit=500, coalesce_bytes=800)
    queue.push(b64(b"\x01" * FRAME), FRAME, 0)
    queue.push(b64(b"\x02" * FRAME), FRAME, 20)
    queue.push(b64(b"\x03" * FRAME), FRAME, 80)  # 40 ms never came
    queue.push(b64(b"\x04" * FRAME), FRAME, 105)  # 5 ms late: jitter, not a gap
    assert drain(queue) == (b"\x01" * FRAME + b"\x02" * FRAME + b"\xff" * 320
                            + b"\x03" * FRAME + b"\x04" * FRAME)
    assert stats.gap_filled_ms == 40


def test_a_long_hole_is_filled_up_to_its_bound_and_no_timestamp_means_no_filling() -> None:
    stats = CallStats()
    queue = CallerAudio(stats, limit=500, coalesce_bytes=10**6)
    queue.push(b64(b"\x01" * FRAME), FRAME, 0)
    queue.push(b64(b"\x02" * FRAME), FRAME, 60_000)
    queue.push(b64(b"\x03" * FRAME), FRAME, None)
    assert len(drain(queue)) == 3 * FRAME + MAX_GAP_MS * 8
    assert stats.gap_filled_ms == MAX_GAP_MS


def test_full_drops_the_oldest_and_an_unsent_append_goes_to_the_next_connection() -> None:
    stats = CallStats()
    queue = CallerAudio(stats, limit=3, coalesce_bytes=2 * FRAME)
    for n in range(5):
        queue.push(b64(bytes([n]) * FRAME), FRAME)
    assert stats.frames_dropped == 2
    first = queue.next()
    assert first is not None and base64.b64decode(first.audio) == b"\x02" * FRAME + b"\x03" * FRAME
    queue.resend()  # the connection went before it was sent
    assert drain(queue) == b"\x02" * FRAME + b"\x03" * FRAME + b"\x04" * FRAME


def test_the_models_input_clock_on_the_call_clock() -> None:
    """`clock`: a position on the model connection's input audio -> when the caller's
    phone sent it, by Twilio's timestamps; a new connection's clock starts where the
    audio still to send begins. `TurnDetection.speech_edge` takes the VAD's padding
    (before a start) and silence (after an end) off."""
    queue = CallerAudio(CallStats(), limit=100, coalesce_bytes=0)
    assert queue.clock(0) is None  # no stamped frame yet
    queue.push(b64(b"\x01" * FRAME), FRAME, 40, now=10.5)  # Twilio's 0 ms: 10.46
    assert queue.clock(0) == pytest.approx(10.5)  # connected before any audio
    assert queue.clock(1000) == pytest.approx(11.5)
    queue.push(b64(b"\x02" * FRAME), FRAME, 60, now=10.52)
    queue.next()
    queue.sent()  # the first frame went; the second waits
    queue.connected()  # a new connection: its input begins at 60 ms
    assert queue.clock(0) == pytest.approx(10.52)
    vad = rt.TurnDetection(type="server_vad", prefix_padding_ms=300, silence_duration_ms=600)
    assert (vad.speech_edge(1000, start=True), vad.speech_edge(2000, start=False)) == (1300, 1400)
    assert rt.TurnDetection(type="server_vad").speech_edge(1000, start=False) == 500
    assert rt.TurnDetection(type="semantic_vad").speech_edge(1000, start=True) == 1000
