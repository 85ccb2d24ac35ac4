"""Where call records are kept: a SQLite file or PostgreSQL, written off the hot path.

Theory of operation
-------------------
A finished call's `CallRecord` goes to a **sink**, one row per media stream in the
table `calls`: the columns that are searched (SIDs, start, numbers, end reason, the
recording's file) and the whole record as JSON. A sink's methods block; they run in
a worker thread (`trio.to_thread.run_sync`), never on the trio loop. Each method is
one SQL statement in its own transaction (`DELETE ... RETURNING` reads what it
removed), so a sink needs no transaction state, and a lock serializes the calls on
its one connection, so an abandoned call (below) and the next one cannot interleave.

`RecordWriter` is how the service hands records over. `submit` is synchronous and
never waits: the record goes into a bounded trio channel, and when that is full
(the database is slow or stalled) the record is **dropped and counted**, since a
call ending must never wait for a disk or a network. The writer's task saves the
records one at a time in a thread, purges the ones past their retention at start
and every hour, and at shutdown saves what is still queued within a few seconds:
the threads' calls are abandoned at cancellation and at that deadline, so a stalled
database cannot hold up the process's exit, and the record whose save was cut short
is saved again (a save replaces its stream's row, so twice is harmless).

Durability (SQLite): WAL mode with `synchronous=FULL`. A transaction is durable
once its commit is in the WAL file; under `NORMAL` the WAL is only written (to the
OS's page cache, which already survives the process being killed), under `FULL` it
is also fsync'ed at each commit, so a record whose `save` returned survives a power
loss or a kernel crash too. It costs one fsync per call, in a worker thread: nothing
next to a call's minutes. The busy timeout lets several workers (`callbridge serve
--workers N`) share one file.

Schema migrations are a list of steps; a database's version is how many it has had
(SQLite: `PRAGMA user_version`; PostgreSQL: the table `callbridge_schema`, under an
advisory lock so two workers starting together do not both migrate). A database
from a newer callbridge (a higher version) is refused rather than written wrongly.
"""

from __future__ import annotations

import abc
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .records import CallRecord

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresSink", "RecordWriter", "Sink", "SqliteSink", "StoreError", "open_sink"]

logger = logging.getLogger("callbridge.records")

#: how long a SQLite statement waits for another process's lock
BUSY_TIMEOUT_S = 10.0
#: how long the writer goes on saving queued records once the service stops
SHUTDOWN_GRACE_S = 5.0
#: how often records past their retention are purged
PURGE_EVERY_S = 3600.0
#: the PostgreSQL advisory lock taken while migrating ("callbrdg" in ASCII)
MIGRATION_LOCK = 0x63616C6C62726467


class StoreError(Exception):
    """The database cannot be used (written by a newer callbridge, no driver)."""


class Sink(Protocol):
    """Where records are kept. Every method blocks: call it in a worker thread."""

    def save(self, record: CallRecord) -> None:
        """Keep `record` (again: its stream's row is replaced)."""

    def find(self, *, since: float | None = None, number: str | None = None,
             reason: str | None = None, limit: int = 50) -> list[CallRecord]:
        """Records newest first: begun at or after `since` (Unix time), with
        `number` as the caller's or the called number, ended for `reason`."""

    def get(self, sid: str) -> CallRecord | None:
        """The record of a call SID (its latest stream) or a stream SID."""

    def delete(self, sid: str) -> list[CallRecord]:
        """Remove every record of the call (`sid`: its call SID or one of its stream
        SIDs) and their recording files; returns what was removed."""

    def purge(self, before: float) -> int:
        """Remove the records of calls begun before `before` (Unix time), with their
        recording files; returns how many."""

    def close(self) -> None: ...


#: the schema, one list of statements per version (`{real}`: the floating-point type)
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE calls (stream_sid TEXT PRIMARY KEY, call_sid TEXT NOT NULL, "
        "started_at {real} NOT NULL, duration_s {real} NOT NULL, end_reason TEXT NOT NULL, "
        "from_number TEXT NOT NULL, to_number TEXT NOT NULL, record TEXT NOT NULL, "
        "recording TEXT)",
        "CREATE INDEX calls_started_at ON calls (started_at)",
        "CREATE INDEX calls_call_sid ON calls (call_sid)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = ("stream_sid", "call_sid", "started_at", "duration_s", "end_reason",
            "from_number", "to_number", "record", "recording")
_SAVE = (f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
         " ON CONFLICT (stream_sid) DO UPDATE SET "
         + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:]))
# a stream SID stands for its whole call, when it has one
_OF_CALL = ("stream_sid = ? OR (call_sid <> '' AND call_sid IN "
            "(SELECT call_sid FROM calls WHERE stream_sid = ? OR call_sid = ?))")


def _pending(version: int) -> list[list[str]]:
    """The steps a database at `version` still needs; refuses a newer one."""
    if version > SCHEMA_VERSION:
        raise StoreError(f"the database was written by a newer callbridge (schema version "
                         f"{version}; this one knows up to {SCHEMA_VERSION}): upgrade "
                         "callbridge, or point CALLBRIDGE_DB elsewhere")
    return MIGRATIONS[version:]


def _remove_recordings(paths: Iterable[str | None]) -> None:
    """Remove the recording files of removed records (after their rows are gone:
    a failed delete must not leave a record whose recording is lost)."""
    for path in paths:
        if not path:
            continue
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not remove the recording %s: %s", path, exc)


class _SqlSink(abc.ABC):
    """The queries both databases share, written with `?` placeholders."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; its rows."""

    def save(self, record: CallRecord) -> None:
        self._run(_SAVE, (record.stream_sid, record.call_sid, record.started_at,
                          record.duration_s, record.end_reason, record.from_number,
                          record.to_number, record.to_json(), record.recording))

    def find(self, *, since: float | None = None, number: str | None = None,
             reason: str | None = None, limit: int = 50) -> list[CallRecord]:
        where, params = ["TRUE"], list[object]()
        if since is not None:
            where.append("started_at >= ?")
            params.append(since)
        if number is not None:
            where.append("(from_number = ? OR to_number = ?)")
            params += [number, number]
        if reason is not None:
            where.append("end_reason = ?")
            params.append(reason)
        rows = self._run(f"SELECT record FROM calls WHERE {' AND '.join(where)} "
                         "ORDER BY started_at DESC, stream_sid LIMIT ?", [*params, limit])
        return [CallRecord.from_json(row[0]) for row in rows]

    def get(self, sid: str) -> CallRecord | None:
        rows = self._run("SELECT record FROM calls WHERE stream_sid = ? OR call_sid = ? "
                         "ORDER BY started_at DESC LIMIT 1", (sid, sid))
        return CallRecord.from_json(rows[0][0]) if rows else None

    def delete(self, sid: str) -> list[CallRecord]:
        rows = self._run(f"DELETE FROM calls WHERE {_OF_CALL} RETURNING record, recording",
                         (sid, sid, sid))
        _remove_recordings(row[1] for row in rows)
        removed = [CallRecord.from_json(row[0]) for row in rows]
        return sorted(removed, key=lambda r: r.started_at, reverse=True)

    def purge(self, before: float) -> int:
        rows = self._run("DELETE FROM calls WHERE started_at < ? RETURNING recording",
                         (before,))
        _remove_recordings(row[0] for row in rows)
        return len(rows)


class SqliteSink(_SqlSink):
    """Records in a SQLite file (stdlib `sqlite3`); see the module docstring."""

    def __init__(self, path: str) -> None:
        super().__init__()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # autocommit (isolation_level=None): each statement is its own transaction;
        # the connection moves between the writer's threads, one call at a time
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        # IMMEDIATE: the write lock first, so the version read is the one migrated
        # from, even with another process migrating the same file
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for step in _pending(version):
                for statement in step:
                    self._db.execute(statement.format(real="REAL"))
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresSink(_SqlSink):
    """Records in PostgreSQL (psycopg 3); the connection is reopened when lost."""

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:
            raise StoreError("CALLBRIDGE_DB is a PostgreSQL URL: install psycopg "
                             "(pip install 'callbridge[postgres]')") from None
        self._url = url
        self._psycopg = psycopg
        self._conn = self._connect()
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return self._psycopg.connect(self._url, autocommit=True, connect_timeout=10)

    def _migrate(self) -> None:
        conn = self._conn
        with conn.transaction():
            # released at the transaction's end: a second worker waits here, then
            # finds the schema already migrated
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS callbridge_schema "
                         "(version integer NOT NULL)")
            row = conn.execute("SELECT version FROM callbridge_schema").fetchone()
            if row is None:
                conn.execute("INSERT INTO callbridge_schema (version) VALUES (0)")
            for step in _pending(row[0] if row is not None else 0):
                for statement in step:
                    conn.execute(statement.format(real="DOUBLE PRECISION").encode())
            conn.execute("UPDATE callbridge_schema SET version = %s", (SCHEMA_VERSION,))

    def _run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._conn.closed:  # lost (a server restart): once more, anew
                self._conn = self._connect()
            with self._conn.cursor() as cursor:
                cursor.execute(sql.replace("?", "%s").encode(), params)
                return cursor.fetchall() if cursor.description is not None else []

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_sink(db: str) -> Sink:
    """The sink for `CALLBRIDGE_DB`: a `postgresql://` URL, else a SQLite file.
    Blocks (it connects and migrates): call it in a worker thread."""
    if db.startswith(("postgresql://", "postgres://")):
        return PostgresSink(db)
    return SqliteSink(db)


class RecordWriter:
    """Saves the service's call records off the hot path; see the module docstring.

    `sink_factory` opens the sink (in a worker thread, when `run` starts); records
    are kept `retention_days` (None: forever); `on_drop` is told of each record
    dropped (the queue was full, the save failed, or the writer had stopped)."""

    def __init__(self, sink_factory: Callable[[], Sink], *, capacity: int = 256,
                 retention_days: float | None,
                 on_drop: Callable[[CallRecord], None] | None = None) -> None:
        self._sink_factory = sink_factory
        self._retention_s = retention_days * 86400 if retention_days else None
        self._on_drop = on_drop
        self._send, self._receive = trio.open_memory_channel[CallRecord](capacity)
        #: records not saved
        self.dropped = 0
        #: records saved
        self.saved = 0
        #: the record being saved (cancelled mid-save, it is saved again at shutdown)
        self._pending: CallRecord | None = None
        self._submitted = 0
        self._done = trio.lowlevel.ParkingLot()  # wakes `settled` as records are handled

    def submit(self, record: CallRecord) -> bool:
        """Queue `record` to be saved; never waits. False: it was dropped."""
        self._submitted += 1
        try:
            self._send.send_nowait(record)
        except trio.WouldBlock:
            self._drop(record, "the queue of records to save is full")
            return False
        except trio.ClosedResourceError:
            self._drop(record, "the record writer has stopped")
            return False
        return True

    async def settled(self) -> None:
        """Until every record submitted so far is saved or dropped (with no deadline:
        the demo's call on virtual time waits for its record so, where a shutdown's
        grace period would pass at once)."""
        while self.saved + self.dropped < self._submitted:
            await self._done.park()

    def _drop(self, record: CallRecord, why: str) -> None:
        self.dropped += 1
        self._done.unpark_all()
        logger.warning("dropped the record of call %s: %s (%d dropped so far)",
                       record.call_sid or record.stream_sid, why, self.dropped)
        if self._on_drop is not None:
            self._on_drop(record)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Open the sink (its errors are raised before `started`: a database that
        cannot be used stops the service's startup), then save records until
        cancelled; then the queued ones, for up to `SHUTDOWN_GRACE_S`."""
        try:
            sink = await trio.to_thread.run_sync(self._sink_factory)
        except BaseException:
            self._send.close()
            raise
        try:
            task_status.started()
            await self._serve(sink)
        finally:
            self._send.close()  # from now on, submit drops
            with trio.CancelScope(shield=True):
                await self._flush(sink)
                with trio.move_on_after(SHUTDOWN_GRACE_S):
                    await trio.to_thread.run_sync(sink.close, abandon_on_cancel=True)

    async def _serve(self, sink: Sink) -> None:
        next_purge = trio.current_time() if self._retention_s is not None else math.inf
        while True:
            if trio.current_time() >= next_purge:
                await self._purge(sink)
                next_purge = trio.current_time() + PURGE_EVERY_S
            with trio.move_on_at(next_purge):
                self._pending = await self._receive.receive()
            if self._pending is not None:
                await self._save(sink, self._pending)
                self._pending = None

    async def _flush(self, sink: Sink) -> None:
        """Save the record being saved when the writer was cancelled (again: a save
        replaces its stream's row) and the queued ones, within `SHUTDOWN_GRACE_S`;
        drop the rest."""
        with trio.move_on_after(SHUTDOWN_GRACE_S):
            while True:
                if self._pending is None:
                    try:
                        self._pending = self._receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._save(sink, self._pending)
                self._pending = None
        left = [self._pending] if self._pending is not None else []
        self._pending = None
        while True:
            try:
                left.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        for record in left:  # the grace ran out (the first one may yet be saved)
            self._drop(record, "the service stopped before it was saved")

    async def _save(self, sink: Sink, record: CallRecord) -> None:
        # abandon_on_cancel: a stalled save cannot hold up the shutdown; it is left to
        # its thread, and the sink's lock keeps the next call behind it
        try:
            await trio.to_thread.run_sync(sink.save, record, abandon_on_cancel=True)
        except Exception as exc:
            self._drop(record, f"could not save it: {exc!r}")
        else:
            self.saved += 1
            self._done.unpark_all()

    async def _purge(self, sink: Sink) -> None:
        assert self._retention_s is not None
        before = time.time() - self._retention_s  # Unix time: not trio's clock
        try:
            purged = await trio.to_thread.run_sync(sink.purge, before, abandon_on_cancel=True)
        except Exception as exc:
            logger.warning("could not purge the records older than %g days: %s",
                           self._retention_s / 86400, exc)
        else:
            if purged:
                logger.info("purged %d records older than %g days", purged,
                            self._retention_s / 86400)

