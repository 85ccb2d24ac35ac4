"""What the service keeps of a call tells one story: the record, the store, the WAV, the
metrics, the summary line and the viewer, checked against the demo call's peers (the
ground truth: what the caller's phone played, what the model was told)."""

from __future__ import annotations

import logging
import os
import threading
import time
import wave
from functools import partial
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry

from callbridge import Agent, _recording
from callbridge._demo import CALLER_LINES, KEYPRESSES, run_demo
from callbridge._history import cut_text, heard_share
from callbridge._logs import CallFilter
from callbridge._metrics import Metrics
from callbridge._store import RecordWriter, open_sink
from callbridge._viewer import render_html
from callbridge._watch import Watch, run_watched
from callbridge.config import Settings
from callbridge.local import LocalRealtimeServer
from callbridge.records import CallRecord
from callbridge.testing import TwilioCaller, memory_socket_pair

FRAME_MS = 20


def channels(path: Path) -> tuple[list[int], list[int]]:
    """A stereo WAV's left and right samples."""
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        data = wav.readframes(wav.getnframes())
    samples = memoryview(data).cast("h")
    return list(samples[0::2]), list(samples[1::2])


def sounding_ms(samples: list[int], start_ms: int, end_ms: int) -> int:
    """How many ms of [start_ms, end_ms) hold sound (not μ-law silence)."""
    return sum(1 for ms in range(start_ms, min(end_ms, len(samples) // 8))
               if any(abs(s) > 8 for s in samples[ms * 8:(ms + 1) * 8]))


@pytest.mark.parametrize("spool_s", [None, 2.0], ids=["in-memory", "spooled"])
async def test_one_call_one_story(autojump_clock: object, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch, spool_s: float | None) -> None:
    """(`spooled`: the recording's settled audio goes to disk every 2 s of call, as it
    does every 30 s in a long call, and the WAV is the same.)"""
    if spool_s is not None:
        monkeypatch.setattr(_recording, "SPOOL_S", spool_s)
        monkeypatch.setattr(_recording, "SETTLE_S", 3.0)
    caplog.set_level(logging.INFO, logger="callbridge")
    db = str(tmp_path / "calls.db")
    settings = Settings(db=db, record_dir=tmp_path / "recordings")
    registry = CollectorRegistry()
    writer = RecordWriter(partial(open_sink, db), retention_days=None)
    watch = Watch(settings, metrics=Metrics(registry), writer=writer)
    report = await run_demo(None, loopback=False, settings=settings, watch=watch)
    record = report.record
    assert record is not None and record.end_reason == "hung_up" == report.reason

    # the store holds what the service made of the call
    sink = open_sink(db)
    try:
        assert sink.get(record.call_sid) == record
    finally:
        sink.close()

    # one barge-in: the record's is the one the model was told of, in the same ms
    [session] = report.model.sessions
    [(item_id, claimed_ms)] = session.truncations
    [barge] = [m for m in record.timeline if m.kind == "barge_in"]
    assert barge.data["item_id"] == item_id and barge.data["heard_ms"] == claimed_ms
    assert barge.data["reaction_ms"] == 0  # virtual time: clear at speech_started's instant
    # ... and the agent's transcript of that item ends where the caller stopped hearing it
    first = next(t for t in record.turns if t.speaker == "agent")
    assert first.item_id == item_id and first.cut and first.heard_ms == claimed_ms
    produced_ms, said = barge.data["produced_ms"], session.responses[0].transcript
    assert first.text == cut_text(said, heard_share(claimed_ms, produced_ms))
    assert 0 < len(first.text) < len(said)
    assert record.agent_transcript.startswith(first.text + "\n")
    # the tool call, with its arguments and output; the keypresses
    [order] = [m for m in record.timeline if m.kind == "tool_call" and
               m.data["name"] == "place_order"]
    assert order.data["outcome"] == "ok" and '"margherita"' in order.data["arguments"]
    assert '"order":4417' in order.data["output"]
    assert [m.data["digit"] for m in record.timeline if m.kind == "dtmf"] == [
        key for _, key in KEYPRESSES]

    # the caller's turns are when the caller spoke (the VAD's padding and silence taken
    # off), and the response latency runs from when they stopped: what they waited
    start = next(m.t_ms for m in record.timeline if m.kind == "start")
    spoke = [(t.start_ms - start, t.end_ms - start) for t in record.turns
             if t.speaker == "caller"]
    lines = [(round(at * 1000), round((at + seconds) * 1000)) for at, _, seconds in CALLER_LINES]
    assert len(spoke) == len(lines)
    for (began, ended), (said, done) in zip(spoke, lines, strict=True):
        assert abs(began - said) <= FRAME_MS and abs(ended - done) <= FRAME_MS
    # (the demo's latencies, per agent turn: the second answers the caller's first line)
    assert abs(record.response_latency_ms[0] - report.response_latencies[1] * 1000) <= FRAME_MS

    assert not list((tmp_path / "recordings").glob(".spool-*"))  # (spooled, then gone)
    # the recording: the agent's channel goes silent at the barge-in, and holds as much
    # agent audio as the caller's phone played, turn by turn
    assert record.recording is not None
    caller, agent = channels(Path(record.recording))
    assert sounding_ms(agent, barge.t_ms - 200, barge.t_ms) >= 180
    assert sounding_ms(agent, barge.t_ms + FRAME_MS, barge.t_ms + 1000) == 0
    assert sounding_ms(caller, barge.t_ms, barge.t_ms + 1000) >= 900  # the caller speaks
    played_ms = len(report.agent_track) // 8  # the phone's track, silence included
    heard = sum(t.end_ms - t.start_ms for t in record.turns if t.speaker == "agent")
    phone = report.agent_track
    phone_sounding = sum(1 for ms in range(played_ms)
                         if any(b not in (0xFF, 0x7F) for b in phone[ms * 8:(ms + 1) * 8]))
    assert abs(heard - phone_sounding) <= 3 * FRAME_MS * len(record.turns)
    assert abs(sounding_ms(agent, 0, len(agent) // 8) - phone_sounding) <= FRAME_MS * 10

    # the metrics count the same things
    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("callbridge_calls_total", end_reason="hung_up") == 1
    assert sample("callbridge_barge_ins_total") == record.stats["barge_ins"] == 1
    assert sample("callbridge_barge_in_reaction_seconds_count") == 1
    assert sample("callbridge_tool_calls_total", tool="place_order", outcome="ok") == 1
    assert sample("callbridge_response_latency_seconds_count") == len(
        record.response_latency_ms) > 0
    assert sample("callbridge_active_calls") == 0

    # the summary line says the same
    [summary] = [r for r in caplog.records if r.getMessage().startswith(
        f"call {record.call_sid} ended: hung_up")]
    assert summary.barge_ins == 1 and summary.truncations == 1  # type: ignore[attr-defined]
    assert summary.tool_calls == record.stats["tool_calls"]  # type: ignore[attr-defined]

    # and so does the viewer
    page = render_html(record, await trio.Path(record.recording).read_bytes())
    assert page.count('class="barge-in') == 1 and "place_order" in page
    assert page.count('class="dtmf') == len(KEYPRESSES)
    assert "data:audio/wav;base64," in page


async def test_a_debug_switch_logs_one_calls_frames(
        autojump_clock: object, caplog: pytest.LogCaptureFixture) -> None:
    """`<Parameter name="callbridge_debug" value="1">` or a CallSid in
    `CALLBRIDGE_DEBUG_CALLS`: that call's frames are logged, the others' are not."""
    caplog.set_level(logging.INFO, logger="callbridge.frames")
    caplog.handler.addFilter(CallFilter())  # (what `callbridge serve`'s handlers have)
    watch = Watch(Settings(debug_calls=frozenset({"CA0000000000000000000000000000000B"})))
    callers = {
        "CA0000000000000000000000000000000A": {"callbridge_debug": "1"},
        "CA0000000000000000000000000000000B": {},
        "CA0000000000000000000000000000000C": {},
    }

    async def call(call_sid: str, parameters: dict[str, str]) -> None:
        caller = TwilioCaller(call_sid=call_sid, stream_sid="MZ" + call_sid[2:],
                              hangup_at=2.0, custom_parameters=parameters)
        twilio_end, bridge_end = memory_socket_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller.run, twilio_end)
            await run_watched(watch, bridge_end, agent=Agent(greeting="Say hello."),
                              backend=LocalRealtimeServer())

    async with trio.open_nursery() as nursery:
        for call_sid, parameters in callers.items():
            nursery.start_soon(call, call_sid, parameters)
    logged: dict[str, list[str]] = {}
    for r in caplog.records:
        if r.name == "callbridge.frames":
            logged.setdefault(getattr(r, "call_sid", ""), []).append(r.getMessage())
    assert set(logged) == {"CA0000000000000000000000000000000A",
                           "CA0000000000000000000000000000000B"}
    for lines in logged.values():
        assert lines[0].startswith("call CA") and "logging its frames" in lines[0]
        assert any(line.startswith('twilio> {"event":"media"') for line in lines)
        assert any(line.startswith("model> ") for line in lines)
        assert any(line.startswith('twilio> {"event":"stop"') for line in lines)


class StalledSink:
    """A store whose disk stalls: `save` waits until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.saved: list[str] = []

    def save(self, record: CallRecord) -> None:
        self.release.wait(timeout=60)
        self.saved.append(record.call_sid)

    def close(self) -> None:
        pass


async def test_a_stalled_store_never_holds_a_call(autojump_clock: object) -> None:
    """The writer holds one record in its save and `capacity` more; the calls after
    those end on time all the same, their records dropped and counted."""
    sink, registry = StalledSink(), CollectorRegistry()
    metrics = Metrics(registry)
    writer = RecordWriter(lambda: sink, capacity=2, retention_days=None,  # type: ignore[arg-type,return-value]
                          on_drop=lambda record: metrics.records_dropped())
    watch = Watch(Settings(), metrics=metrics, writer=writer)
    async with trio.open_nursery() as keeper:
        await watch.start(keeper)
        ended = []
        for n in range(6):
            caller = TwilioCaller(call_sid=f"CA{n:032d}", stream_sid=f"MZ{n:032d}",
                                  hangup_at=1.0)
            twilio_end, bridge_end = memory_socket_pair()
            began = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller.run, twilio_end)
                record = await run_watched(watch, bridge_end, agent=Agent(),
                                           backend=LocalRealtimeServer())
            assert record.end_reason == "caller_hangup"
            assert trio.current_time() - began < 2  # as long as the caller stayed: 1 s
            ended.append(record.call_sid)
        assert writer.dropped == 3 and sink.saved == []
        assert registry.get_sample_value("callbridge_records_dropped_total") == 3
        sink.release.set()
        await writer.settled()
        keeper.cancel_scope.cancel()
    assert sink.saved == ended[:3]


async def test_the_spools_a_killed_process_left_are_swept_at_startup(tmp_path: Path) -> None:
    old, live = tmp_path / ".spool-old", tmp_path / ".spool-live"
    for spool in (old, live):
        spool.write_bytes(b"\xff" * 16)
    a_day_ago = time.time() - 25 * 3600
    os.utime(old, (a_day_ago, a_day_ago))
    async with trio.open_nursery() as nursery:
        await Watch(Settings(record_dir=tmp_path)).start(nursery)
    assert not old.exists() and live.exists()  # (a live call's, in another worker)
