"""Call record sinks (SQLite and a real PostgreSQL) and the service's RecordWriter."""

from __future__ import annotations

import logging
import select
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from callbridge import _store
from callbridge._store import RecordWriter, Sink, StoreError, open_sink
from callbridge.records import CallRecord, Moment, Turn

pytest_plugins = ["_postgres"]

NOW = 1_750_000_000.0


def make_record(stream_sid: str = "MZ1", call_sid: str = "CA1", *, started_at: float = NOW,
                from_number: str = "+14155550100", to_number: str = "+14155550199",
                end_reason: str = "caller_hangup", recording: str | None = None) -> CallRecord:
    return CallRecord(
        stream_sid=stream_sid, call_sid=call_sid, started_at=started_at, duration_s=42.5,
        end_reason=end_reason, from_number=from_number, to_number=to_number, agent="pizza",
        parameters={"from": from_number, "to": to_number},
        turns=(Turn(speaker="agent", start_ms=100, end_ms=1500, text="Hello!", item_id="i1"),
               Turn(speaker="caller", start_ms=1800, end_ms=2600, text="Hi \x00 there")),
        timeline=(Moment(t_ms=0, kind="start", summary="stream MZ1 of call CA1"),),
        response_latency_ms=(320,), stats={"input_tokens": 10, "barge_ins": 0},
        recording=recording)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "calls.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sink(db: str) -> Iterator[Sink]:
    opened = open_sink(db)
    yield opened
    opened.close()


def schema_version(db: str) -> int:
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            row = conn.execute("SELECT version FROM callbridge_schema").fetchone()
            assert row is not None
            return int(row[0])
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def set_schema_version(db: str, version: int) -> None:
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            conn.execute("UPDATE callbridge_schema SET version = %s", (version,))
        return
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {version:d}")
    conn.close()


# --- sinks -------------------------------------------------------------------------------

def test_save_and_get(sink: Sink) -> None:
    record = make_record()
    sink.save(record)
    assert sink.get("MZ1") == record
    assert sink.get("CA1") == record
    assert sink.get("CA-unknown") is None


def test_save_again_replaces_the_stream(sink: Sink) -> None:
    sink.save(make_record(end_reason="twilio_closed"))
    sink.save(make_record(end_reason="hung_up"))
    assert [r.end_reason for r in sink.find()] == ["hung_up"]


def test_get_call_sid_is_its_latest_stream(sink: Sink) -> None:
    sink.save(make_record("MZ1", "CA1", started_at=NOW))
    sink.save(make_record("MZ2", "CA1", started_at=NOW + 60))
    sink.save(make_record("MZ0", "CA1", started_at=NOW - 60))
    record = sink.get("CA1")
    assert record is not None and record.stream_sid == "MZ2"
    first = sink.get("MZ1")
    assert first is not None and first.stream_sid == "MZ1"


def test_find_newest_first_with_filters(sink: Sink) -> None:
    sink.save(make_record("MZa", "CAa", started_at=NOW, from_number="+1001"))
    sink.save(make_record("MZb", "CAb", started_at=NOW + 10, to_number="+1001",
                          end_reason="hung_up"))
    sink.save(make_record("MZc", "CAc", started_at=NOW + 20, from_number="+2002"))

    def sids(found: list[CallRecord]) -> list[str]:
        return [r.stream_sid for r in found]

    assert sids(sink.find()) == ["MZc", "MZb", "MZa"]
    assert sids(sink.find(limit=2)) == ["MZc", "MZb"]
    assert sids(sink.find(since=NOW + 10)) == ["MZc", "MZb"]
    assert sids(sink.find(number="+1001")) == ["MZb", "MZa"]
    assert sids(sink.find(reason="hung_up")) == ["MZb"]
    assert sids(sink.find(number="+1001", reason="caller_hangup")) == ["MZa"]
    assert sids(sink.find(number="+3003")) == []


def test_delete_removes_the_call_and_its_recordings(sink: Sink, tmp_path: Path) -> None:
    first, second = tmp_path / "MZ1.wav", tmp_path / "MZ2.wav"
    first.write_bytes(b"RIFF")
    second.write_bytes(b"RIFF")
    kept = tmp_path / "MZ9.wav"
    kept.write_bytes(b"RIFF")
    sink.save(make_record("MZ1", "CA1", recording=str(first)))
    sink.save(make_record("MZ2", "CA1", started_at=NOW + 5, recording=str(second)))
    sink.save(make_record("MZ9", "CA9", recording=str(kept)))
    # a stream SID stands for its whole call
    removed = sink.delete("MZ1")
    assert [r.stream_sid for r in removed] == ["MZ2", "MZ1"]
    assert not first.exists() and not second.exists()
    assert sink.get("CA1") is None
    assert kept.exists() and sink.get("CA9") is not None
    assert sink.delete("CA1") == []


def test_delete_with_the_recording_already_gone(sink: Sink, tmp_path: Path) -> None:
    sink.save(make_record(recording=str(tmp_path / "gone.wav")))
    assert [r.stream_sid for r in sink.delete("CA1")] == ["MZ1"]


def test_purge_by_age(sink: Sink, tmp_path: Path) -> None:
    old = tmp_path / "old.wav"
    old.write_bytes(b"RIFF")
    sink.save(make_record("MZold", "CAold", started_at=NOW - 86400 * 40, recording=str(old)))
    sink.save(make_record("MZnew", "CAnew", started_at=NOW))
    assert sink.purge(NOW - 86400 * 30) == 1
    assert not old.exists()
    assert [r.stream_sid for r in sink.find()] == ["MZnew"]
    assert sink.purge(NOW - 86400 * 30) == 0


def test_an_empty_database_is_migrated(db: str) -> None:
    open_sink(db).close()
    assert schema_version(db) == _store.SCHEMA_VERSION
    reopened = open_sink(db)  # and opens again as it is
    reopened.save(make_record())
    reopened.close()
    assert schema_version(db) == _store.SCHEMA_VERSION


def test_a_newer_database_is_refused(db: str) -> None:
    open_sink(db).close()
    set_schema_version(db, _store.SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="newer callbridge"):
        open_sink(db)


def test_workers_migrating_together(db: str) -> None:
    """Several processes' sinks opening a new database at once all get it migrated."""
    opened: list[Sink] = []
    failed: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(open_sink(db))
        except BaseException as exc:  # reported below
            failed.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failed == [] and len(opened) == 4
    for each in opened:
        each.close()
    assert schema_version(db) == _store.SCHEMA_VERSION


def test_records_survive_sigkill(tmp_path: Path) -> None:
    """A record whose save returned is there after the process is killed at once."""
    path = tmp_path / "calls.db"
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {sys.path!r}
        from callbridge._store import open_sink
        from test_store import make_record
        sink = open_sink({str(path)!r})
        sink.save(make_record("MZkilled", "CAkilled"))
        print("saved", flush=True)
        sys.stdin.read()  # until killed
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=Path(__file__).parent)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "the child did not save within 60 s"
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "saved\n", line + (child.stderr.read() if child.stderr else "")
        child.kill()  # SIGKILL: no atexit, no close, no checkpoint
        assert child.wait(timeout=30) == -9
    finally:
        child.kill()
        child.wait(timeout=30)
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    sink = open_sink(str(path))
    try:
        record = sink.get("CAkilled")
    finally:
        sink.close()
    assert record == make_record("MZkilled", "CAkilled")


def test_open_sink_picks_the_database(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path / "sub" / "dir" / "calls.db"))  # the directory is made
    assert isinstance(sink, _store.SqliteSink)
    sink.close()


# --- the writer -----------------------------------------------------------------------

class FakeSink:
    """A sink in memory whose saves can be held up, failed, and watched from trio."""

    def __init__(self, *, hold: threading.Event | None = None, fail: str = "") -> None:
        self.hold, self.fail = hold, fail
        self.saved: list[CallRecord] = []
        self.purged: list[float] = []
        self.closed = False
        self.lock = threading.Lock()  # as the real sinks: one call at a time
        self.saving = trio.Event()  # a save has begun
        self.watch_send, self.watch = trio.open_memory_channel[str](100)

    def _tell(self, what: str) -> None:
        trio.from_thread.run_sync(self.watch_send.send_nowait, what)

    def save(self, record: CallRecord) -> None:
        trio.from_thread.run_sync(self.saving.set)
        with self.lock:
            if self.hold is not None:
                assert self.hold.wait(timeout=60), "never released"
            if record.call_sid == self.fail:
                raise OSError("disk full")
            if record not in self.saved:
                self.saved.append(record)
        self._tell(f"saved {record.call_sid}")

    def find(self, *, since: float | None = None, number: str | None = None,
             reason: str | None = None, limit: int = 50) -> list[CallRecord]:
        return []

    def get(self, sid: str) -> CallRecord | None:
        return None

    def delete(self, sid: str) -> list[CallRecord]:
        return []

    def purge(self, before: float) -> int:
        self.purged.append(before)
        self._tell("purged")
        return 0

    def close(self) -> None:
        self.closed = True


def calls(n: int) -> list[CallRecord]:
    return [make_record(f"MZ{i}", f"CA{i}") for i in range(n)]


async def test_a_stalled_sink_does_not_block_submit() -> None:
    hold = threading.Event()
    sink = FakeSink(hold=hold)
    dropped: list[CallRecord] = []
    writer = RecordWriter(lambda: sink, capacity=2, retention_days=None,
                          on_drop=dropped.append)
    records = calls(5)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            assert writer.submit(records[0])
            await sink.saving.wait()  # the writer is stuck in that save
            assert writer.submit(records[1]) and writer.submit(records[2])  # queued
            assert not writer.submit(records[3])  # full: dropped at once
            assert not writer.submit(records[4])
            assert writer.dropped == 2 and dropped == records[3:]
            hold.set()
            for _ in range(3):
                assert (await sink.watch.receive()).startswith("saved")
            assert sink.saved == records[:3]
            nursery.cancel_scope.cancel()
    finally:
        hold.set()
    assert sink.closed and writer.dropped == 2 and writer.saved == 3


def test_a_full_queue_is_logged_with_the_call(caplog: pytest.LogCaptureFixture) -> None:
    writer = RecordWriter(FakeSink, capacity=0, retention_days=None)  # not running
    with caplog.at_level(logging.WARNING, logger="callbridge.records"):
        assert not writer.submit(make_record("MZ7", "CA7"))
        assert not writer.submit(make_record("MZ8", "CA8"))
    assert "CA7" in caplog.records[0].getMessage()
    assert "2 dropped so far" in caplog.records[1].getMessage()


async def test_a_failing_save_is_dropped_and_the_writer_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    sink = FakeSink(fail="CA1")
    dropped: list[CallRecord] = []
    writer = RecordWriter(lambda: sink, retention_days=None, on_drop=dropped.append)
    records = calls(3)
    with caplog.at_level(logging.WARNING, logger="callbridge.records"):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for record in records:
                assert writer.submit(record)
            assert await sink.watch.receive() == "saved CA0"
            assert await sink.watch.receive() == "saved CA2"
            nursery.cancel_scope.cancel()
    assert dropped == [records[1]] and writer.dropped == 1
    assert any("CA1" in r.getMessage() and "disk full" in r.getMessage()
               for r in caplog.records)


async def test_shutdown_saves_what_is_queued() -> None:
    sink = FakeSink()
    writer = RecordWriter(lambda: sink, retention_days=None)
    records = calls(10)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for record in records:
            assert writer.submit(record)
        nursery.cancel_scope.cancel()  # before the writer has had a turn
    assert sink.saved == records and sink.closed
    assert not writer.submit(make_record("MZlate", "CAlate"))  # stopped: dropped
    assert writer.dropped == 1


async def test_shutdown_gives_up_after_its_grace(autojump_clock: trio.abc.Clock) -> None:
    hold = threading.Event()
    sink = FakeSink(hold=hold)
    writer = RecordWriter(lambda: sink, retention_days=None)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for record in calls(3):
                assert writer.submit(record)
            await sink.saving.wait()
            began = trio.current_time()
            nursery.cancel_scope.cancel()
        # (virtual time: the grace, then the close's deadline, passed at once)
        assert trio.current_time() - began <= 2 * _store.SHUTDOWN_GRACE_S
        # the one being saved (it is not known to be) and the two queued
        assert writer.dropped == 3 and writer.saved == 0
    finally:
        hold.set()  # the abandoned save's thread ends


async def test_retention_purges_at_start_and_hourly(autojump_clock: trio.abc.Clock) -> None:
    sink = FakeSink()
    writer = RecordWriter(lambda: sink, retention_days=30)
    async with trio.open_nursery() as nursery:
        began = trio.current_time()
        await nursery.start(writer.run)
        assert await sink.watch.receive() == "purged"
        assert sink.purged[0] <= time.time() - 30 * 86400
        assert sink.purged[0] > time.time() - 30 * 86400 - 3600
        assert writer.submit(make_record())  # saves go on between purges
        assert await sink.watch.receive() == "saved CA1"
        assert await sink.watch.receive() == "purged"
        assert trio.current_time() - began >= _store.PURGE_EVERY_S
        nursery.cancel_scope.cancel()


async def test_a_database_that_cannot_be_opened_fails_the_start(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    open_sink(db).close()
    set_schema_version(db, _store.SCHEMA_VERSION + 1)
    writer = RecordWriter(lambda: open_sink(db), retention_days=None)
    with pytest.raises(StoreError, match="newer callbridge"):
        await writer.run()
    assert not writer.submit(make_record())


async def test_the_writer_saves_to_sqlite(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    writer = RecordWriter(lambda: open_sink(db), retention_days=None)
    records = calls(3)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for record in records:
            assert writer.submit(record)
        nursery.cancel_scope.cancel()
    sink = open_sink(db)
    try:
        assert sorted(r.call_sid for r in sink.find()) == ["CA0", "CA1", "CA2"]
    finally:
        sink.close()
