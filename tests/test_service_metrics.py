"""`callbridge serve --workers 2` with metrics and records: whichever worker takes a call,
`/metrics` (any worker's, or the main process's `CALLBRIDGE_METRICS_BIND`) adds up
every worker's calls, and both workers' records land in one store."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from test_service_drain import log_on_failure, until

from callbridge._cli import main
from callbridge._store import open_sink
from callbridge.app import create_app
from callbridge.config import Settings
from callbridge.testing import TwilioCaller, dial_twilio_stream, server_process

TOKEN = "metrics-token-for-the-test"
#: calls placed one after another until both workers have taken one; with the kernel
#: spreading connections over two sockets, 40 all going to one is a 2**-39 chance
MAX_CALLS = 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.slow
async def test_two_workers_metrics_add_up(tmp_path: Path) -> None:
    db, bind = tmp_path / "calls.db", free_port()
    command = [sys.executable, "-m", "callbridge", "serve", "--host", "127.0.0.1",
               "--port", "{port}", "--workers", "2"]
    env = {"CALLBRIDGE_METRICS_TOKEN": TOKEN, "CALLBRIDGE_METRICS_BIND": f"127.0.0.1:{bind}",
           "CALLBRIDGE_DB": str(db), "OPENAI_API_KEY": ""}
    ended = re.compile(r"\[(\d+)\] \[INFO\] callbridge\.app: call (CA\w+) ended: caller_hangup")
    with trio.fail_after(120):
        async with server_process(command, env) as server:
            with log_on_failure(server):
                ready = re.compile(r"\[(\d+)\] \[INFO\] callbridge\.app: callbridge ready")
                await until(lambda: len(set(ready.findall(server.log()))) == 2)
                placed: list[str] = []
                while len({pid for pid, _ in ended.findall(server.log())}) < 2:
                    assert len(placed) < MAX_CALLS, "one worker took every call"
                    call_sid = f"CA{len(placed):032d}"
                    caller = TwilioCaller(call_sid=call_sid, stream_sid=f"MZ{len(placed):032d}",
                                          hangup_at=0.3)
                    await dial_twilio_stream(caller, f"ws://{server.host}/media-stream")
                    placed.append(call_sid)
                    await until(lambda: call_sid in server.log())  # noqa: B023
                async with httpx.AsyncClient() as client:
                    url = f"http://{server.host}/metrics"
                    assert (await client.get(url)).status_code == 401
                    wrong = await client.get(url, headers={"Authorization": "Bearer nope"})
                    assert wrong.status_code == 401
                    answers = [await client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
                               for _ in range(4)]  # (either worker may answer each)
                    answers.append(await client.get(f"http://127.0.0.1:{bind}/metrics"))
                for answer in answers:
                    assert answer.status_code == 200
                    seen = samples(answer.text)
                    hangups = ("callbridge_calls_total", frozenset({("end_reason",
                                                                      "caller_hangup")}))
                    assert seen[hangups] == len(placed), answer.text
                    assert seen[("callbridge_active_calls", frozenset())] == 0
                    assert seen[("callbridge_frames_in_total", frozenset())] > 0
                server.send_signal(signal.SIGTERM)
                assert await server.wait() == 0
                assert "Traceback" not in server.log()
    # both workers' records, in the one SQLite file
    sink = await trio.to_thread.run_sync(open_sink, str(db))
    try:
        stored = await trio.to_thread.run_sync(lambda: sink.find(limit=100))
    finally:
        sink.close()
    assert sorted(r.call_sid for r in stored) == sorted(placed)


@pytest.mark.parametrize(("token", "bind", "authorization", "status"), [
    (None, None, None, 404),  # neither: off
    (None, ("127.0.0.1", 0), f"Bearer {TOKEN}", 404),  # the bind serves it instead
    (TOKEN, None, None, 401),
    (TOKEN, None, "Bearer nope", 401),
    (TOKEN, None, f"Bearer {TOKEN}", 200),
])
async def test_metrics_on_the_service_port(token: str | None, bind: tuple[str, int] | None,
                                           authorization: str | None, status: int) -> None:
    app = create_app(Settings(metrics_token=token, metrics_bind=bind))
    app.serves_metrics_bind = False  # (the policy of the service's port only)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        headers = {"Authorization": authorization} if authorization else {}
        answer = await client.get("/metrics", headers=headers)
        assert answer.status_code == status
        if status == 401:
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        if status == 200:
            text = (await answer.get_data()).decode()
            assert "# TYPE callbridge_active_calls gauge" in text


def test_serve_stops_on_a_store_it_cannot_open(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALLBRIDGE_DB", "/proc/no-such-dir/calls.db")
    assert main(["serve", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "configuration error: CALLBRIDGE_DB='/proc/no-such-dir/calls.db': cannot open it" in err
