"""The caller's audio on its way to the model: the pure `CallerAudio` queue."""

from __future__ import annotations

import base64

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
