"""What the service keeps of its calls: their records, metrics, recordings and debug logs.

`Watch` is the service's (one per worker): the metrics (`callbridge._metrics`), the
call-record writer (`callbridge._store.RecordWriter`) and the settings that say what
to keep. `Watch.call(began, wall)` gives each call its `CallWatch`, whose `on_event`
is the call's `run_call(on_event=...)`: it runs synchronously inside the bridge's
decisions, so it only updates memory. Nothing is written while the call runs:

* the `RecordBuilder` (`callbridge.records`) follows the call, and the metrics get
  each latency as it is measured, each tool call, model error and reconnection;
* with `CALLBRIDGE_RECORD_DIR`, a `Recording` (`callbridge._recording`) lays both
  sides' audio on the call clock: the agent's from the `AgentAudio` events, the
  caller's frames as the bridge takes them (`Call.watch_caller_audio`, set by
  `attach` before the call runs: no message is decoded twice);
* a call whose CallSid is in `CALLBRIDGE_DEBUG_CALLS`, or whose stream has the
  `<Parameter>` `callbridge_debug` = 1, logs every frame that arrives from Twilio
  and the model (`callbridge.frames`, at INFO), from its `start` on, and only that
  call's: `CallWatch` sets the call's raw-message hook (`Call.watch_raw`) then.

`CallWatch.finish` runs when the call is over: the WAV is written in a worker thread,
the record goes to the writer's bounded queue (a slow store drops records, counted;
it never holds a call), and the call's counters go to the metrics.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from . import events as ev
from ._calldata import CallLimits, CallStats
from ._recording import Recording, Spool
from .events import EndReason
from .records import CallRecord, RecordBuilder

if TYPE_CHECKING:
    from ._call import Call
    from ._calldata import CallResult
    from ._metrics import Metrics
    from ._sockets import MessageSocket
    from ._store import RecordWriter
    from ._twilioctl import TwilioControl
    from .agent import Agent
    from .backend import RealtimeBackend
    from .config import Settings

__all__ = ["CallWatch", "Watch", "run_watched"]

frames_log = logging.getLogger("callbridge.frames")
summary_log = logging.getLogger("callbridge.app")
log = logging.getLogger("callbridge.records")

#: the `<Parameter>` that turns a call's frame log on
DEBUG_PARAMETER = "callbridge_debug"
#: a logged frame longer than this is cut (the rest is audio)
FRAME_LOG_CHARS = 400


class Watch:
    """One worker's view of its calls (see the module docstring)."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None,
                 writer: RecordWriter | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.writer = writer
        #: calls over and kept so far, and the last one's record
        self.finished = 0
        self.last: CallRecord | None = None
        self._changed = trio.lowlevel.ParkingLot()

    async def wait_finished(self, count: int) -> None:
        """Until `count` calls are over and kept."""
        while self.finished < count:
            await self._changed.park()

    def _kept(self, record: CallRecord) -> None:
        self.finished += 1
        self.last = record
        self._changed.unpark_all()

    @classmethod
    def from_settings(cls, settings: Settings) -> Watch:
        """What the settings ask for: metrics when `/metrics` is served somewhere
        (`CALLBRIDGE_METRICS_TOKEN` or `_BIND`), records when `CALLBRIDGE_DB` is set.
        Start the record writer with `start`."""
        metrics = None
        if settings.metrics_token is not None or settings.metrics_bind is not None:
            metrics = process_metrics()
        writer = None
        db = settings.db
        if db is not None:
            from ._store import RecordWriter, open_sink

            writer = RecordWriter(functools.partial(open_sink, db),
                                  retention_days=settings.retention_days,
                                  on_drop=None if metrics is None
                                  else lambda record: metrics.records_dropped())
        return cls(settings, metrics=metrics, writer=writer)

    async def start(self, nursery: trio.Nursery) -> None:
        """Run the record writer in `nursery` (the service's), once its store is open
        (one that cannot be opened fails here: the service does not start); remove
        the recording spools a killed process left behind."""
        if self.writer is not None:
            await nursery.start(self.writer.run)
        if self.settings.record_dir is not None:
            await trio.to_thread.run_sync(_sweep_spools, self.settings.record_dir)

    def call(self, began: float | None = None, wall: float | None = None) -> CallWatch:
        """A call's watch; `began` and `wall`: when it began (now by default)."""
        return CallWatch(self, trio.current_time() if began is None else began,
                         time.time() if wall is None else wall)


async def run_watched(watch: Watch, socket: MessageSocket, *, agent: Agent,
                      backend: RealtimeBackend, limits: CallLimits | None = None,
                      twilio: TwilioControl | None = None) -> CallRecord:
    """`run_call`, kept by `watch` as the service keeps its calls (the demo's call in
    memory, tests): its record."""
    from ._call import Call

    seen = watch.call()
    call = Call(socket, agent=agent, backend=backend, limits=limits or CallLimits(),
                on_event=seen.on_event, authorize=None, twilio=twilio)
    async with trio.open_nursery() as nursery:
        seen.attach(call, nursery)
        result = await call._run(trio.TASK_STATUS_IGNORED)
    return await seen.finish(result)


#: a spool this old is no call's (calls last `CallLimits.max_call_s`, 2 h by default)
STALE_SPOOL_S = 24 * 3600


def _sweep_spools(record_dir: Path) -> None:
    """Remove the spools of calls whose process was killed before writing their WAV."""
    for spool in record_dir.glob(".spool-*"):
        try:
            if time.time() - spool.stat().st_mtime > STALE_SPOOL_S:
                spool.unlink()
                log.info("removed %s, the spool of a call that never finished", spool)
        except OSError:
            pass  # (gone meanwhile: another worker swept it)


@functools.cache
def process_metrics() -> Metrics:
    """The process's metrics (prometheus-client's registry is the process's: one set)."""
    from ._metrics import Metrics

    return Metrics()


class CallWatch:
    """What the service keeps of one call while it runs (see the module docstring)."""

    def __init__(self, watch: Watch, began: float, wall: float) -> None:
        self._watch = watch
        self.metrics = watch.metrics
        self.began = began
        self.builder = RecordBuilder(began, wall)
        record_dir = watch.settings.record_dir
        self.recording = Recording(began) if record_dir is not None else None
        #: the live call (`attach`), for its raw-message and caller-audio hooks
        self.call: Call | None = None
        self.spool: Spool | None = None  # where the recording's settled audio goes
        if self.metrics is not None:
            self.metrics.call_started()

    def attach(self, call: Call, nursery: trio.Nursery | None = None) -> None:
        """The call this watch keeps, before it runs: its caller audio goes to the
        recording, whose settled audio is spooled to disk by a task in `nursery` (the
        call's: it ends with the call; without one the recording stays in memory)."""
        self.call = call
        recording, record_dir = self.recording, self._watch.settings.record_dir
        if recording is not None:
            call.watch_caller_audio(self._caller_audio)
            if nursery is not None and record_dir is not None:
                self.spool = Spool(record_dir / f".spool-{uuid.uuid4().hex}")
                nursery.start_soon(self.spool.run)

    def _caller_audio(self, payload: str, timestamp: int | None, at: float) -> None:
        recording = self.recording
        assert recording is not None
        recording.caller_frame(payload, timestamp, at)
        if self.spool is not None and (chunk := recording.settled(at)) is not None:
            self.spool.put(chunk)

    def on_event(self, event: ev.CallEvent) -> None:
        builder, metrics, recording = self.builder, self.metrics, self.recording
        if type(event) is ev.AgentAudio:  # the per-message path
            heard = len(builder.latencies)
            plays_at = builder.agent_audio(event)
            if recording is not None:
                recording.agent_audio(plays_at, event.payload)
            if metrics is not None:
                metrics.forwarding_latency(event.at - event.received)
                if len(builder.latencies) > heard:
                    metrics.response_latency(builder.latencies[-1] / 1000)
            return
        reactions = len(builder.reactions)
        builder.event(event)
        if type(event) is ev.End and self.spool is not None:
            self.spool.close()  # the call is over: what is spooled is all there is
        if type(event) is ev.Clear:
            if recording is not None:
                recording.clear(event.at)
            if metrics is not None and len(builder.reactions) > reactions:
                metrics.barge_in_reaction(builder.reactions[-1] / 1000)
        elif type(event) is ev.Start:
            self._started(event)
        elif metrics is None:
            pass
        elif type(event) is ev.ToolResult:
            metrics.tool_call(event.name, event.outcome, event.duration)
        elif type(event) is ev.ModelError:
            metrics.model_error(event.code)
        elif type(event) is ev.ModelConnected:
            metrics.model_connected(event.why)

    def _started(self, start: ev.Start) -> None:
        flag = start.custom_parameters.get(DEBUG_PARAMETER, "").strip().lower()
        if start.call_sid in self._watch.settings.debug_calls or flag in ("1", "true", "yes"):
            frames_log.info("call %s: logging its frames (stream %s, parameters %s)",
                            start.call_sid, start.stream_sid, dict(start.custom_parameters),
                            extra={"call_sid": start.call_sid, "stream_sid": start.stream_sid})
            if self.call is not None:
                self.call.watch_raw(self.on_raw)

    def on_raw(self, raw: ev.Raw) -> None:
        """Every message as it arrived, for the frame log of a call being debugged."""
        message = raw.message
        text = message if isinstance(message, str) else repr(message)
        if len(text) > FRAME_LOG_CHARS:
            text = f"{text[:FRAME_LOG_CHARS]}... ({len(text)} characters)"
        frames_log.info("%s> %s", raw.source, text)

    def failed(self) -> None:
        """The call raised (a bug): it is over, with no result (nor recording)."""
        if self.spool is not None:
            self.spool.path.unlink(missing_ok=True)
        if self.metrics is not None:
            call = self.call
            self.metrics.call_ended("error", call.stats if call is not None else CallStats())

    async def finish(self, result: CallResult) -> CallRecord:
        """The call is over: log its summary line, write its recording, queue its
        record, count it."""
        log_summary(result, trio.current_time() - self.began)
        recording, path = self.recording, None
        record_dir = self._watch.settings.record_dir
        if recording is not None and record_dir is not None and result.stream_sid:
            path = record_dir.absolute() / f"{result.call_sid}-{result.stream_sid}.wav"
            spooled = self.spool.path if self.spool is not None and recording.spooled else None
            try:
                await trio.to_thread.run_sync(recording.write, path, spooled)
            except OSError as exc:
                log.error("call %s: its recording could not be written to %s: %s",  # noqa: TRY400
                          result.call_sid, path, exc)
                path = None
            if spooled is not None:
                await trio.to_thread.run_sync(functools.partial(spooled.unlink, missing_ok=True))
        call = self.call
        if call is not None and call.agent is not None:
            self.builder.agent = call.agent.name
        record = self.builder.record(result, recording=None if path is None else str(path))
        if self._watch.writer is not None:
            self._watch.writer.submit(record)
        if self.metrics is not None:
            self.metrics.call_ended(str(result.reason), result.stats)
        self._watch._kept(record)
        return record


#: how a call may end without anything having gone wrong (the others are logged as
#: warnings: a fault, or a call refused)
NORMAL_ENDS = frozenset({EndReason.CALLER_HANGUP, EndReason.HUNG_UP, EndReason.TRANSFERRED,
                         EndReason.ENDED, EndReason.IDLE, EndReason.TIME_LIMIT})


def log_summary(result: CallResult, duration: float) -> None:
    """The one line a call leaves when it is over (its counters as fields too, for
    `CALLBRIDGE_LOG_FORMAT=json`): a warning when it ended in a fault."""
    stats = result.stats
    summary_log.log(logging.INFO if result.reason in NORMAL_ENDS else logging.WARNING,
            "call %s ended: %s %s (%.1f s; frames in %d, to the model %d, dropped %d; "
            "audio chunks out %d; barge-ins %d, truncations %d; tool calls %d, failed %d; "
            "model connections %d, errors %d; tokens in %d (audio %d, cached %d), out %d "
            "(audio %d))", result.call_sid, result.reason, result.detail,
            duration, stats.frames_in, stats.frames_to_model, stats.frames_dropped,
            stats.chunks_out, stats.barge_ins, stats.truncations, stats.tool_calls,
            stats.tool_failures, stats.model_connections, stats.model_errors,
            stats.input_tokens, stats.input_audio_tokens, stats.cached_input_tokens,
            stats.output_tokens, stats.output_audio_tokens,
            extra={"call_sid": result.call_sid or "", "stream_sid": result.stream_sid or "",
                   "end_reason": str(result.reason), "end_detail": result.detail,
                   "duration_s": round(duration, 3), **attrs.asdict(stats)})
