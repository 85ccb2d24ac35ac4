"""Metrics: each event moves its series, who may read them, and several workers as one.

The multiprocess tests record in real subprocesses: prometheus_client picks its
value storage when first imported, and this process imported it in plain mode. The
sums are read here, which only reads the directory's files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from callbridge._calldata import CallStats
from callbridge._metrics import (
    Metrics,
    exposition,
    metrics_status,
    prepare_multiprocess,
    start_bind_server,
    worker_exited,
)

ENV = "PROMETHEUS_MULTIPROC_DIR"


def _samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def test_calls_start_and_end(registry: CollectorRegistry, metrics: Metrics) -> None:
    stats = CallStats(
        frames_in=500, frames_to_model=490, frames_dropped=10, chunks_out=120,
        barge_ins=2, truncations=1, input_tokens=300, input_audio_tokens=200,
        cached_input_tokens=64, output_tokens=150, output_audio_tokens=120,
    )
    metrics.call_started()
    metrics.call_started()
    assert registry.get_sample_value("callbridge_active_calls") == 2
    metrics.call_ended("caller_hangup", stats)
    metrics.call_ended("caller_hangup", stats)
    metrics.call_started()
    metrics.call_ended("model_error", CallStats(frames_in=5))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("callbridge_active_calls") == 0
    assert value("callbridge_calls_total", end_reason="caller_hangup") == 2
    assert value("callbridge_calls_total", end_reason="model_error") == 1
    # every end reason is there from the start
    assert value("callbridge_calls_total", end_reason="no_start") == 0
    assert value("callbridge_frames_in_total") == 1005
    assert value("callbridge_frames_to_model_total") == 980
    assert value("callbridge_frames_dropped_total") == 20
    assert value("callbridge_audio_out_total") == 240
    assert value("callbridge_barge_ins_total") == 4
    assert value("callbridge_truncations_total") == 2
    tokens = {
        "input": 600, "input_audio": 400, "cached_input": 128, "output": 300,
        "output_audio": 240,
    }
    for kind, count in tokens.items():
        assert value("callbridge_model_tokens_total", kind=kind) == count


def test_model_errors_and_connections(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.model_error("rate_limit_exceeded")
    metrics.model_error(None)
    metrics.model_error(None)
    for why in ["first", "reconnect", "reconnect", "rotation", "first"]:
        metrics.model_connected(why)
    errors = "callbridge_model_errors_total"
    assert registry.get_sample_value(errors, {"code": "rate_limit_exceeded"}) == 1
    assert registry.get_sample_value(errors, {"code": "unknown"}) == 2
    assert registry.get_sample_value("callbridge_model_reconnects_total") == 2
    assert registry.get_sample_value("callbridge_model_rotations_total") == 1


def test_tool_calls(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.tool_call("lookup_order", "ok", 0.2)
    metrics.tool_call("lookup_order", "error", 3.0)
    metrics.tool_call("end_call", "ok", 0.01)
    calls = "callbridge_tool_calls_total"
    assert registry.get_sample_value(calls, {"tool": "lookup_order", "outcome": "ok"}) == 1
    assert registry.get_sample_value(calls, {"tool": "lookup_order", "outcome": "error"}) == 1
    assert registry.get_sample_value(calls, {"tool": "end_call", "outcome": "ok"}) == 1
    duration = "callbridge_tool_duration_seconds"
    assert registry.get_sample_value(f"{duration}_count", {"tool": "lookup_order"}) == 2
    assert registry.get_sample_value(f"{duration}_sum", {"tool": "lookup_order"}) == 3.2
    assert registry.get_sample_value(
        f"{duration}_bucket", {"tool": "lookup_order", "le": "0.25"}) == 1


@pytest.mark.parametrize(
    ("method", "name", "seconds", "le_below", "le_at"),
    [
        ("response_latency", "callbridge_response_latency_seconds", 0.45, "0.4", "0.5"),
        ("barge_in_reaction", "callbridge_barge_in_reaction_seconds", 0.015, "0.01", "0.02"),
        ("forwarding_latency", "callbridge_forwarding_latency_seconds", 0.0007, "0.0005",
         "0.001"),
    ],
)
def test_latency_histograms(
    registry: CollectorRegistry, metrics: Metrics, method: str, name: str, seconds: float,
    le_below: str, le_at: str,
) -> None:
    getattr(metrics, method)(seconds)
    assert registry.get_sample_value(f"{name}_count") == 1
    assert registry.get_sample_value(f"{name}_sum") == seconds
    assert registry.get_sample_value(f"{name}_bucket", {"le": le_below}) == 0
    assert registry.get_sample_value(f"{name}_bucket", {"le": le_at}) == 1


def test_records_dropped(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.records_dropped()
    metrics.records_dropped()
    assert registry.get_sample_value("callbridge_records_dropped_total") == 2


def test_exposition_parses(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.call_started()
    metrics.call_ended("ended", CallStats(frames_in=7))
    metrics.response_latency(0.8)
    body, content_type = exposition(registry)
    assert content_type.startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert families["callbridge_calls"].type == "counter"
    assert families["callbridge_calls"].documentation
    assert families["callbridge_active_calls"].type == "gauge"
    assert families["callbridge_response_latency_seconds"].type == "histogram"
    samples = _samples(body)
    assert samples[("callbridge_calls_total", frozenset({("end_reason", "ended")}))] == 1
    assert samples[("callbridge_frames_in_total", frozenset())] == 7


def test_metrics_refuses_a_mode_set_after_import(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    # this process imported prometheus_client without the variable: its values are
    # in memory, where no multiprocess exposition would read them
    monkeypatch.setenv(ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match=ENV):
        Metrics(CollectorRegistry())


@pytest.mark.parametrize(
    ("authorization", "token", "bind", "status"),
    [
        # no token: off on the service's port, with a bind (served there) or without
        (None, None, False, 404),
        (None, None, True, 404),
        ("Bearer s3cret", None, False, 404),
        ("Bearer s3cret", None, True, 404),
        # a token: only a request bearing it, exactly
        ("Bearer s3cret", "s3cret", False, 200),
        ("Bearer s3cret", "s3cret", True, 200),
        (None, "s3cret", False, 401),
        (None, "s3cret", True, 401),
        ("", "s3cret", False, 401),
        ("Bearer wrong", "s3cret", False, 401),
        ("Bearer s3cre", "s3cret", False, 401),
        ("Bearer s3cret ", "s3cret", False, 401),
        ("bearer s3cret", "s3cret", False, 401),
        ("Basic s3cret", "s3cret", False, 401),
        ("s3cret", "s3cret", False, 401),
        ("Bearer s3crét", "s3cret", False, 401),
        ("Bearer s3crét", "s3crét", False, 200),
    ],
)
def test_metrics_status(authorization: str | None, token: str | None, bind: bool,
                        status: int) -> None:
    assert metrics_status(authorization, token, bind=bind) == status


def test_prepare_multiprocess_empties_the_directory(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv(ENV, "")  # (so that what prepare_multiprocess sets is undone)
    monkeypatch.delenv(ENV)
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("not ours")
    assert prepare_multiprocess(tmp_path) == tmp_path
    assert os.environ[ENV] == str(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def test_prepare_multiprocess_makes_a_private_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "")  # (so that what prepare_multiprocess sets is undone)
    monkeypatch.delenv(ENV)
    directory = prepare_multiprocess()
    try:
        assert os.environ[ENV] == str(directory)
        assert directory.is_dir()
        assert directory.stat().st_mode & 0o077 == 0
    finally:
        shutil.rmtree(directory)


def test_worker_exited_outside_multiprocess_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    worker_exited(os.getpid())


_WORKER = """
import os, sys
from callbridge._calldata import CallStats
from callbridge._metrics import Metrics

metrics = Metrics()
for _ in range(int(sys.argv[1])):
    metrics.call_started()
    metrics.call_ended("caller_hangup", CallStats(frames_in=10))
    metrics.forwarding_latency(0.001)
metrics.call_started()  # still in progress when the worker goes
print(os.getpid())
"""


def _record_in_worker(directory: Path, calls: int) -> int:
    env = {**os.environ, ENV: str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(calls)],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    return int(done.stdout)


@pytest.mark.slow
def test_workers_sum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = _record_in_worker(tmp_path, 2)
    second = _record_in_worker(tmp_path, 3)
    monkeypatch.setenv(ENV, str(tmp_path))

    def summed() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return _samples(exposition()[0])

    samples = summed()
    hangups = ("callbridge_calls_total", frozenset({("end_reason", "caller_hangup")}))
    assert samples[hangups] == 5
    assert samples[("callbridge_frames_in_total", frozenset())] == 50
    forwarding = "callbridge_forwarding_latency_seconds"
    assert samples[(f"{forwarding}_count", frozenset())] == 5
    assert samples[(f"{forwarding}_bucket", frozenset({("le", "0.001")}))] == 5
    active = ("callbridge_active_calls", frozenset())
    assert samples[active] == 2

    worker_exited(first)
    samples = summed()
    assert samples[active] == 1  # only the live worker's call
    assert samples[hangups] == 5  # a dead worker's counts stay

    # the bind address, as the supervisor serves it, answers with the same sums
    response = from_a_bind_server()
    assert response.status_code == 200
    assert _samples(response.content)[hangups] == 5
    assert second != first


def from_a_bind_server() -> httpx.Response:
    """`/metrics` from a bind server started for the request."""
    stop = start_bind_server("127.0.0.1", 0)
    try:
        with httpx.Client(timeout=10) as client:
            return client.get(f"http://127.0.0.1:{stop.port}/metrics")
    finally:
        stop()


def test_bind_server_serves_the_text_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    response = from_a_bind_server()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert "python_info" in names  # the default registry's
