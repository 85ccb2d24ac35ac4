"""Barge-in decisions of the pure playback state, table-driven, no I/O and no clock."""

from __future__ import annotations

from typing import Any

import pytest

from callbridge import realtime as rt
from callbridge._playback import Interruption, Playback

# A step is a tuple: ("created", resp) | ("delta", resp, item, nbytes) | ("send", item, t)
# (sends everything produced for `item` and not yet sent, as one segment + mark)
# | ("send-", item, t) (the same, without a mark) | ("tail", t) (a mark alone, for
# what went without one) | ("echo", n, t) (echo the n-th mark sent, 0-based)
# | ("done", resp).


def run(steps: list[tuple[Any, ...]], *, auto_cancel: bool = True) -> tuple[Playback, list[str]]:
    p = Playback(auto_cancel=auto_cancel)
    sent: dict[str, int] = {}
    produced: dict[str, int] = {}
    marks: list[str] = []
    for step in steps:
        kind = step[0]
        if kind == "created":
            p.response_created(step[1])
        elif kind == "delta":
            _, resp, item, n = step
            end = p.audio_delta(resp, item, n)
            if end is not None:
                produced[item] = end
        elif kind in ("send", "send-"):
            _, item, t = step
            start, end = sent.get(item, 0), produced[item]
            mark = p.mark_name(item, end) if kind == "send" else None
            p.sent(item, start, end, mark, t)
            sent[item] = end
            if mark is not None:
                marks.append(mark)
        elif kind == "tail":
            mark = p.tail_mark()
            assert mark is not None
            p.tail_marked(mark)
            marks.append(mark)
        elif kind == "echo":
            _, n, t = step
            p.mark_echoed(marks[n], t)
        elif kind == "done":
            p.response_done(step[1])
        else:  # pragma: no cover
            raise AssertionError(step)
    return p, marks


def truncate(item: str, ms: int) -> rt.ConversationItemTruncate:
    return rt.ConversationItemTruncate(item_id=item, audio_end_ms=ms)


CASES = [
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 1600), ("send", "A", 0.0)],
        0.05,
        Interruption(clear=True, truncate=truncate("A", 50), heard_ms=50),
        id="mid-item, no echo yet: elapsed time since playback began",
    ),
    pytest.param(
        [("created", "r1")]
        + [("delta", "r1", "A", 800), ("send", "A", 0.0)] * 4
        + [("echo", 0, 0.1)],
        0.15,
        Interruption(clear=True, truncate=truncate("A", 150), heard_ms=150),
        id="mid-item, after an echo: echo plus elapsed",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 800), ("send", "A", 0.0)],
        7.0,
        Interruption(clear=True, truncate=truncate("A", 100), heard_ms=100),
        id="estimate never passes the next unconfirmed mark",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 4000), ("send", "A", 0.0), ("done", "r1")],
        0.2,
        Interruption(clear=True, truncate=truncate("A", 200), heard_ms=200),
        id="generation finished but still playing: clear anyway, no cancel",
    ),
    pytest.param(
        [("created", "r1")] + [("delta", "r1", "A", 160), ("send-", "A", 0.0)] * 2
        + [("delta", "r1", "A", 160), ("send", "A", 0.0)],
        0.05,
        Interruption(clear=True, truncate=truncate("A", 50), heard_ms=50),
        id="unmarked chunks: played back to back up to the next mark",
    ),
    pytest.param(
        [("created", "r1")] + [("delta", "r1", "A", 160), ("send-", "A", 0.0)] * 2
        + [("delta", "r1", "A", 160), ("send", "A", 0.0)],
        7.0,
        Interruption(clear=True, truncate=truncate("A", 60), heard_ms=60),
        id="unmarked chunks: the estimate stops at the next mark",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 160), ("send-", "A", 0.0),
         ("delta", "r1", "A", 160), ("send", "A", 0.5)],
        0.51,
        Interruption(clear=True, truncate=truncate("A", 30), heard_ms=30),
        id="unmarked chunks: none plays before it was sent",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 160), ("send-", "A", 0.0),
         ("delta", "r1", "A", 160), ("send", "A", 0.0), ("echo", 0, 0.04), ("done", "r1")],
        0.5,
        Interruption(clear=False, truncate=None, heard_ms=40),
        id="an echo confirms the unmarked chunks before its mark",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 160), ("send-", "A", 0.0), ("tail", 0.0),
         ("echo", 0, 0.02), ("done", "r1")],
        0.5,
        Interruption(clear=False, truncate=None, heard_ms=20),
        id="a mark alone confirms the tail",
    ),
    pytest.param(
        [("created", "r1")],
        1.0,
        Interruption(clear=False, truncate=None, heard_ms=None),
        id="before any audio: nothing to clear or truncate",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 800), ("delta", "r1", "B", 800),
         ("send", "A", 0.0), ("send", "B", 0.0), ("echo", 0, 0.1)],
        0.15,
        Interruption(clear=True, truncate=truncate("B", 50), heard_ms=50),
        id="across two items: the second is playing",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 800), ("delta", "r1", "B", 800),
         ("send", "A", 0.0), ("send", "B", 0.0)],
        0.05,
        Interruption(clear=True, truncate=truncate("A", 50),
                     deletes=(rt.ConversationItemDelete(item_id="B"),), heard_ms=50),
        id="across two items: still in the first (the unheard second is deleted)",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 800), ("send", "A", 0.0), ("echo", 0, 0.1),
         ("delta", "r1", "A", 800), ("send", "A", 0.5)],
        0.55,
        Interruption(clear=True, truncate=truncate("A", 150), heard_ms=150),
        id="Twilio ran dry in between: playback resumes when the audio is sent",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 800), ("send", "A", 0.0), ("echo", 0, 0.1),
         ("done", "r1")],
        0.5,
        Interruption(clear=False, truncate=None, heard_ms=100),
        id="everything heard to the end: nothing to do",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 800), ("send", "A", 0.0), ("echo", 0, 0.1)],
        0.5,
        Interruption(clear=False, truncate=truncate("A", 100), heard_ms=100),
        id="all sent audio heard but the response is still generating: cut the rest",
    ),
    pytest.param(
        [("created", "r1"), ("delta", "r1", "A", 803), ("send", "A", 0.0)],
        0.0,
        Interruption(clear=True, truncate=None, heard_ms=0),
        id="interrupted at the very start: nothing heard, no truncate",
    ),
]


@pytest.mark.parametrize(("steps", "now", "expected"), CASES)
def test_interrupt(steps: list[tuple[Any, ...]], now: float, expected: Interruption) -> None:
    p, _ = run(steps)
    assert p.interrupt(now) == expected


def test_truncate_is_clamped_to_what_was_produced() -> None:
    # 803 bytes produced = 100 ms (floored); even a full echo cannot claim 100.375 ms
    p, _ = run([("created", "r"), ("delta", "r", "A", 803), ("send", "A", 0.0)])
    assert p.interrupt(5.0).truncate == truncate("A", 100)


@pytest.mark.parametrize("auto_cancel", [True, False])
def test_cancel_only_without_auto_cancel(auto_cancel: bool) -> None:
    p, _ = run([("created", "r1"), ("delta", "r1", "A", 1600), ("send", "A", 0.0)],
               auto_cancel=auto_cancel)
    cancel = p.interrupt(0.05).cancel
    assert cancel == (None if auto_cancel else rt.ResponseCancel(response_id="r1"))


def test_no_cancel_once_the_response_is_done() -> None:
    p, _ = run([("created", "r1"), ("delta", "r1", "A", 1600), ("send", "A", 0.0),
                ("done", "r1")], auto_cancel=False)
    assert p.interrupt(0.05).cancel is None


def test_stale_deltas_dropped_until_response_done() -> None:
    p, _ = run([("created", "r1"), ("delta", "r1", "A", 800), ("send", "A", 0.0)])
    p.interrupt(0.01)
    assert p.audio_delta("r1", "A", 800) is None  # late delta of the interrupted response
    p.response_done("r1")
    p.response_created("r2")
    assert p.audio_delta("r2", "B", 800) == 800  # the next response plays normally


def test_response_done_before_interruption_drops_nothing_later() -> None:
    p, _ = run([("created", "r1"), ("delta", "r1", "A", 800), ("send", "A", 0.0),
                ("done", "r1")])
    p.interrupt(0.01)
    p.response_created("r2")
    assert p.audio_delta("r2", "B", 160) == 160


def test_echoes_after_clear_count_as_discarded() -> None:
    p, marks = run([("created", "r1"), ("delta", "r1", "A", 800), ("send", "A", 0.0),
                    ("delta", "r1", "A", 800), ("send", "A", 0.0)])
    p.interrupt(0.05)
    assert [p.mark_echoed(m, 0.05).outcome for m in marks] == ["discarded", "discarded"]
    # ... and they do not move the new generation's playhead
    p.response_done("r1")
    p.response_created("r2")
    end = p.audio_delta("r2", "B", 1600)
    assert end == 1600
    p.sent("B", 0, 1600, p.mark_name("B", 1600), 1.0)
    assert p.interrupt(1.1).truncate == truncate("B", 100)


def test_marks_confirm_everything_before_them() -> None:
    p, marks = run([("created", "r"), ("delta", "r", "A", 160), ("send", "A", 0.0),
                    ("delta", "r", "A", 160), ("send", "A", 0.0)])
    echo = p.mark_echoed(marks[1], 0.04)
    assert (echo.outcome, echo.item_id, echo.heard_ms) == ("played", "A", 40)
    assert not p.outstanding
    assert p.mark_echoed(marks[0], 0.04).outcome == "foreign"  # already confirmed


@pytest.mark.parametrize("name", ["", "x", "abc:1:A", "99:160:A", "0:1:nope"])
def test_foreign_marks_are_ignored(name: str) -> None:
    p, _ = run([("created", "r"), ("delta", "r", "A", 160), ("send", "A", 0.0)])
    assert p.mark_echoed(name, 0.01).outcome == "foreign"
    assert p.outstanding


def test_a_send_under_way_needs_a_clear() -> None:
    p, _ = run([("created", "r1")])
    assert p.interrupt(0.0, sending=True).clear


def test_marks_every_mark_bytes_and_anew_after_a_barge_in() -> None:
    p = Playback(mark_bytes=800)
    p.response_created("r1")
    marked = []
    for n in range(12):
        end = p.audio_delta("r1", "A", 160)
        assert end is not None
        mark = p.mark_after("A", end - 160, end)
        p.sent("A", end - 160, end, mark, n * 0.02)
        marked.append(mark is not None)
    assert marked == [False] * 4 + [True] + [False] * 4 + [True] + [False] * 2
    assert p.tail_mark() == p.mark_name("A", 12 * 160)
    p.interrupt(0.3)
    assert p.tail_mark() is None
    p.tail_marked("0:1920:A")  # the tail mark of the old generation, sent late
    assert not p.outstanding  # ignored: nothing new was sent
    p.response_created("r2")
    p.audio_delta("r2", "B", 160)
    assert p.mark_after("B", 0, 160) is None  # counting starts over


def test_every_chunk_marked_by_default() -> None:
    p = Playback()
    assert p.mark_after("A", 0, 1) == p.mark_name("A", 1)


@pytest.mark.parametrize("bytes_per_ms", [8, 16, 48])  # μ-law 8 kHz, PCM16 8 kHz, 24 kHz
def test_times_and_truncations_are_in_ms_whatever_the_format(bytes_per_ms: int) -> None:
    p = Playback(bytes_per_ms=bytes_per_ms)
    p.response_created("r1")
    end = p.audio_delta("r1", "A", 400 * bytes_per_ms)  # 400 ms of audio
    assert end is not None
    p.sent("A", 0, 200 * bytes_per_ms, p.mark_name("A", 200 * bytes_per_ms), 0.0)
    p.sent("A", 200 * bytes_per_ms, end, p.mark_name("A", end), 0.0)
    echo = p.mark_echoed(p.mark_name("A", 200 * bytes_per_ms), 0.2)
    assert echo.heard_ms == 200
    assert p.interrupt(0.25) == Interruption(clear=True, truncate=truncate("A", 250), heard_ms=250)
