"""Prometheus metrics: what the service counts, and who may read it.

Theory of operation
-------------------
One `Metrics` per process holds every metric; the service calls it as calls happen
(a call starts, ends, a tool runs, the agent's audio goes out). Per-call counters
(frames, audio messages, barge-ins, tokens) are added once, from the call's
`CallStats` when it ends, so nothing is counted per frame on the hot path. The one
per-message observation is `Metrics.forwarding_latency`, a histogram observe with
nothing around it (its cost is measured in its docstring).

Several workers (`callbridge serve --workers N`, or hypercorn's own `--workers`)
are separate processes, each with its own counters. prometheus_client's
multiprocess mode makes them one: with `PROMETHEUS_MULTIPROC_DIR` set, every value
lives in a memory-mapped file of that directory, one file per process and metric
type, and `exposition` sums the files, so whichever worker answers `/metrics`
answers for all of them. The active-calls gauge is summed over live processes only
(`livesum`): `worker_exited` deletes a dead worker's gauge file, while its counters
stay in the sums (a counter must not go down because a worker died).

prometheus_client decides how values are stored once, when it is first imported:
`prometheus_client.values.ValueClass` is a plain in-memory float without
`PROMETHEUS_MULTIPROC_DIR`, the memory-mapped one with it. So the variable must be
in the environment before a worker imports prometheus_client (importing this
module does; `import callbridge` alone does not). `prepare_multiprocess` sets it
in the supervisor, before it spawns workers, which inherit it; a `Metrics` built
in a process where the two disagree raises, rather than count into memory that no
`/metrics` answer reads.

Who may read `/metrics`
-----------------------
Not open to the world by default: with `CALLBRIDGE_METRICS_TOKEN` set, `/metrics`
on the service's port answers only requests that bear it (401 otherwise);
`CALLBRIDGE_METRICS_BIND` serves it on a separate address instead (to anyone who
can reach that address); with neither it is off (404). With both set, both work:
the service's port answers requests bearing the token, and the bind address
answers anyone who reaches it. Each setting says who may read the metrics where it
applies, so setting one does not take the other away (a scraper inside the network
uses the bind address, one outside comes through the public port with the token).
`metrics_status` holds this policy; `start_bind_server` serves the bind address.
"""

from __future__ import annotations

import hmac
import os
import tempfile
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import attrs
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)

from ._calldata import CallStats
from .events import EndReason

__all__ = [
    "BindServer",
    "Metrics",
    "exposition",
    "metrics_status",
    "prepare_multiprocess",
    "start_bind_server",
    "worker_exited",
]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: `callbridge_model_tokens_total{kind}`: the kind, and the `CallStats` field it sums
_TOKEN_KINDS = {
    "input": "input_tokens",
    "input_audio": "input_audio_tokens",
    "cached_input": "cached_input_tokens",
    "output": "output_tokens",
    "output_audio": "output_audio_tokens",
}

# Buckets where each histogram's values fall. What the caller waits for an answer is
# a few hundred ms to a few seconds; a barge-in should clear playback within tens of
# ms; forwarding the agent's audio is well under a ms unless the socket backs up.
_RESPONSE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
_REACTION_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
_FORWARDING_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_TOOL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _multiprocess_mode() -> bool:
    return _MULTIPROC_ENV in os.environ


class Metrics:
    """The service's metrics, one per process (each name registers once per registry).

    The methods are what happened, in the service's words; which series they move
    is this class's business. Labels take only bounded values (end reasons, error
    codes, tool names, outcomes), never a call's identifiers.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = REGISTRY
        stored_in_files = bool(getattr(values.ValueClass, "_multiprocess", False))
        if stored_in_files != _multiprocess_mode():
            raise RuntimeError(
                f"{_MULTIPROC_ENV} was set or unset after prometheus_client was imported: "
                "set it (prepare_multiprocess) before the worker imports callbridge"
            )

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"callbridge_{name}", doc, labels, registry=registry)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
        ) -> Histogram:
            return Histogram(
                f"callbridge_{name}", doc, labels, registry=registry, buckets=buckets
            )

        self._active = Gauge(
            "callbridge_active_calls",
            "Calls in progress (summed over live workers)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._calls = counter("calls", "Calls ended, by why they ended", ("end_reason",))
        # Every reason is there from the start, at 0, so rate() sees the first one.
        for reason in EndReason:
            self._calls.labels(reason)
        self._frames_in = counter("frames_in", "Caller audio frames received from Twilio")
        self._frames_to_model = counter(
            "frames_to_model", "Caller audio frames sent on to the model")
        self._frames_dropped = counter(
            "frames_dropped", "Caller audio frames dropped (model connecting or stalled)")
        self._audio_out = counter("audio_out", "Agent audio messages sent to Twilio")
        self._barge_ins = counter("barge_ins", "Times the caller spoke over the agent")
        self._truncations = counter(
            "truncations", "Agent responses cut where the caller stopped hearing them")
        self._tokens = counter(
            "model_tokens", "Model tokens used, by kind (from response.done usage)", ("kind",))
        for kind in _TOKEN_KINDS:
            self._tokens.labels(kind)
        self._model_errors = counter("model_errors", "Error events from the model", ("code",))
        self._reconnects = counter(
            "model_reconnects", "Model connections reopened after one was lost")
        self._rotations = counter(
            "model_rotations", "Model sessions replaced because they grew old")
        self._tool_calls = counter(
            "tool_calls", "Tool calls answered, by tool and outcome", ("tool", "outcome"))
        self._tool_duration = histogram(
            "tool_duration_seconds", "How long tool calls took", _TOOL_BUCKETS, ("tool",))
        self._response_latency = histogram(
            "response_latency_seconds",
            "The caller stopped speaking -> the agent's first audio sent to Twilio",
            _RESPONSE_BUCKETS,
        )
        self._barge_in_reaction = histogram(
            "barge_in_reaction_seconds",
            "The model heard the caller start speaking -> playback cleared at Twilio",
            _REACTION_BUCKETS,
        )
        self._forwarding = histogram(
            "forwarding_latency_seconds",
            "Agent audio: arrived from the model -> sent to Twilio",
            _FORWARDING_BUCKETS,
        )
        self._records_dropped = counter(
            "records_dropped", "Call records lost because the writer could not keep up")

    def call_started(self) -> None:
        self._active.inc()

    def call_ended(self, reason: str, stats: CallStats) -> None:
        """Count a finished call: its end reason and all its per-call counters."""
        self._active.dec()
        self._calls.labels(reason).inc()
        self._frames_in.inc(stats.frames_in)
        self._frames_to_model.inc(stats.frames_to_model)
        self._frames_dropped.inc(stats.frames_dropped)
        self._audio_out.inc(stats.chunks_out)
        self._barge_ins.inc(stats.barge_ins)
        self._truncations.inc(stats.truncations)
        for kind, field in _TOKEN_KINDS.items():
            self._tokens.labels(kind).inc(getattr(stats, field))

    def model_error(self, code: str | None) -> None:
        self._model_errors.labels(code or "unknown").inc()

    def model_connected(self, why: str) -> None:
        """Count a model connection by `ModelConnected.why`; a call's first counts as
        nothing (`calls_total` counts those)."""
        if why == "reconnect":
            self._reconnects.inc()
        elif why == "rotation":
            self._rotations.inc()

    def tool_call(self, name: str, outcome: str, seconds: float) -> None:
        self._tool_calls.labels(name, outcome).inc()
        self._tool_duration.labels(name).observe(seconds)

    def response_latency(self, seconds: float) -> None:
        self._response_latency.observe(seconds)

    def barge_in_reaction(self, seconds: float) -> None:
        self._barge_in_reaction.observe(seconds)

    def forwarding_latency(self, seconds: float) -> None:
        """Observe one agent audio message's time from the model to Twilio.

        Called per message (up to 50 a second per call), so it is a bare observe.
        Measured with timeit (CPython 3.11, prometheus_client 0.26, the dev box),
        per call: 0.8 µs in plain mode; 2.0 µs in multiprocess mode, where each
        observe writes its bucket and its sum into the worker's memory-mapped file
        (no system call, but a lock, a pid check and a struct pack per value).
        """
        self._forwarding.observe(seconds)

    def records_dropped(self) -> None:
        self._records_dropped.inc()


def exposition(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The body and content type of a `/metrics` answer.

    In multiprocess mode the answer sums every worker's files (the registry is not
    read: this process's values are in the files too); it reads the directory, so
    from a trio task call it in a thread.
    """
    if _multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    elif registry is None:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def metrics_status(authorization: str | None, token: str | None, *, bind: bool) -> int:
    """The HTTP status of a `/metrics` request on the service's own port.

    404 without a token, bind or not (a bind serves the metrics elsewhere, and the
    service's port says it has none); 401 unless `Authorization` is exactly
    `Bearer <token>`; 200 then. `bind` does not change the answer (both work when
    both are set, see the module's docstring); it is passed so that the call site
    hands over both settings and the whole policy is here.
    """
    if token is None:
        return 404
    if authorization is None:
        return 401
    # Bytes: compare_digest refuses str with non-ASCII characters, which a header
    # may carry; surrogatepass encodes any str.
    given = authorization.encode("utf-8", "surrogatepass")
    expected = f"Bearer {token}".encode("utf-8", "surrogatepass")
    return 200 if hmac.compare_digest(given, expected) else 401


def prepare_multiprocess(directory: Path | None = None) -> Path:
    """Put this process and the workers it spawns next in multiprocess mode.

    Call it in the supervisor before spawning workers (they inherit the variable,
    and must import prometheus_client after it is set). Without a directory, a
    fresh one private to this user is made; the caller removes it at exit. Old
    `*.db` files are deleted, so counts from an earlier run do not carry over.
    """
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="callbridge-metrics-"))
    else:
        directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[_MULTIPROC_ENV] = str(directory)
    return directory


def worker_exited(pid: int) -> None:
    """Take a dead worker's calls out of `callbridge_active_calls` (its counters
    stay in the sums); nothing outside multiprocess mode."""
    if _multiprocess_mode():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@attrs.frozen
class BindServer:
    """`/metrics` served on its own address, from a daemon thread.

    Call it to shut it down (it is a `Callable[[], None]`); `port` is the port it
    listens on, the chosen one when it was asked for port 0.
    """

    host: str
    port: int
    _httpd: WSGIServer
    _thread: threading.Thread

    def __call__(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def start_bind_server(host: str, port: int) -> BindServer:
    """Serve `/metrics` (any path, in fact) on `host:port` to anyone who reaches it.

    In multiprocess mode it answers with every worker's sums, so the supervisor can
    run it; else with this process's default registry.
    """
    registry = REGISTRY
    if _multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return BindServer(host, httpd.server_port, httpd, thread)
