"""`callbridge calls`: list, show and delete the call records in a database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callbridge._callscli import clock
from callbridge._cli import main
from callbridge._store import open_sink
from callbridge.records import CallRecord, Moment, Turn

pytest_plugins = ["_postgres"]

NOW = time.time()


def a_call(stream_sid: str, call_sid: str, *, ago_s: float, from_number: str = "+14155550100",
           end_reason: str = "caller_hangup", recording: str | None = None) -> CallRecord:
    return CallRecord(
        stream_sid=stream_sid, call_sid=call_sid, started_at=NOW - ago_s, duration_s=83.4,
        end_reason=end_reason, from_number=from_number, to_number="+14155550199",
        agent="pizza",
        turns=(
            Turn(speaker="agent", start_ms=3120, end_ms=4900, text="Hello, how can I help?",
                 item_id="i1", heard_ms=1200, cut=True),
            Turn(speaker="caller", start_ms=5400, end_ms=6600, text="A table for two"),
        ),
        timeline=(
            Moment(t_ms=0, kind="start", summary=f"stream {stream_sid} of call {call_sid}"),
            Moment(t_ms=5400, kind="barge_in",
                   summary="the caller spoke over the agent; playback cleared in 12 ms",
                   data={"reaction_ms": 12}),
            Moment(t_ms=7010, kind="tool_call", summary="book_table: ok in 210 ms",
                   data={"name": "book_table", "arguments": '{"n": 2}', "output": "booked",
                         "outcome": "ok", "duration_ms": 210}),
            Moment(t_ms=83400, kind="end", summary="ended: caller_hangup"),
        ),
        response_latency_ms=(400, 800, 600), barge_in_reaction_ms=(12,),
        stats={"input_tokens": 1200, "input_audio_tokens": 1000, "output_tokens": 800,
               "output_audio_tokens": 700, "barge_ins": 1},
        recording=recording)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite file with three calls: CA1 (two streams, 1 h ago), CA2 (1 day ago,
    another caller, the agent hung up), CA3 (10 days ago)."""
    path = str(tmp_path / "calls.db")
    recording = tmp_path / "MZ1b.wav"
    recording.write_bytes(b"RIFF....WAVE")
    sink = open_sink(path)
    sink.save(a_call("MZ1a", "CA1", ago_s=3700))
    sink.save(a_call("MZ1b", "CA1", ago_s=3600, recording=str(recording)))
    sink.save(a_call("MZ2", "CA2", ago_s=86400, from_number="+442071838750",
                     end_reason="hung_up"))
    sink.save(a_call("MZ3", "CA3", ago_s=10 * 86400))
    sink.close()
    return path


def listed(out: str) -> list[str]:
    """The call SIDs of `calls`' table, in order."""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["started", "call", "SID"]
    return [line.split()[2] for line in lines[1:]]


def test_list(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "--db", db]) == 0
    out = capsys.readouterr().out
    assert listed(out) == ["CA1", "CA1", "CA2", "CA3"]
    row = out.splitlines()[1].split()
    # started (date, time), SID, from, to, duration, ended, turns, barge-ins, tools
    assert row[3:] == ["+14155550100", "+14155550199", "1:23", "caller_hangup", "2", "1", "1"]


@pytest.mark.parametrize(("options", "sids"), [
    (["--since", "2h"], ["CA1", "CA1"]),
    (["--since", "2d"], ["CA1", "CA1", "CA2"]),
    (["--number", "+442071838750"], ["CA2"]),
    (["--number", "+14155550199"], ["CA1", "CA1", "CA2", "CA3"]),
    (["--reason", "hung_up"], ["CA2"]),
    (["--limit", "1"], ["CA1"]),
])
def test_list_filters(db: str, capsys: pytest.CaptureFixture[str], options: list[str],
                      sids: list[str]) -> None:
    assert main(["calls", "--db", db, *options]) == 0
    assert listed(capsys.readouterr().out) == sids


def test_list_since_an_iso_time(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime

    since = datetime.fromtimestamp(NOW - 2 * 86400).isoformat(timespec="seconds")
    assert main(["calls", "--db", db, "--since", since]) == 0
    assert listed(capsys.readouterr().out) == ["CA1", "CA1", "CA2"]


def test_list_since_refuses_nonsense(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["calls", "--db", db, "--since", "yesterday"])
    assert exited.value.code == 2
    assert "expected an ISO date or time" in capsys.readouterr().err


def test_list_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "--db", db, "--json", "--reason", "caller_hangup"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [CallRecord.from_json(line) for line in lines]
    assert [r.stream_sid for r in records] == ["MZ1b", "MZ1a", "MZ3"]


def test_list_nothing(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "--db", db, "--number", "+10000000000"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no calls" in captured.err


def test_show(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "show", "CA1", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "call CA1  stream MZ1b" in out  # the call's latest stream
    assert "from +14155550100 to +14155550199" in out
    assert "ended: caller_hangup" in out
    lines = out.splitlines()
    expected = [
        "0:00.000  start     stream MZ1b of call CA1",
        '0:03.120  agent     "Hello, how can I help?" (1.8 s, cut off: heard 1200 ms of it)',
        "0:05.400  barge-in  the caller spoke over the agent; playback cleared in 12 ms",
        '0:05.400  caller    "A table for two" (1.2 s)',
        '0:07.010  tool      book_table {"n": 2} -> ok in 210 ms: booked',
        "1:23.400  end       ended: caller_hangup",
    ]
    at = [lines.index(line) for line in expected]
    assert at == sorted(at) and at == list(range(at[0], at[0] + len(expected)))
    assert ("latency   response: median 600 ms, max 800 ms (3); "
            "barge-in reaction: median 12 ms, max 12 ms (1)") in lines
    assert ("usage     input tokens 1200 (audio 1000, cached 0), "
            "output tokens 800 (audio 700)") in lines


def test_show_a_stream(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "--db", db, "show", "MZ1a"]) == 0
    assert "call CA1  stream MZ1a" in capsys.readouterr().out


def test_show_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "show", "MZ2", "--json", "--db", db]) == 0
    record = CallRecord.from_json(capsys.readouterr().out)
    assert record.call_sid == "CA2" and record.end_reason == "hung_up"


def test_show_html(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "call.html"
    assert main(["calls", "show", "CA1", "--html", str(page), "--db", db]) == 0
    text = page.read_text(encoding="utf-8")
    assert "Hello, how can I help?" in text
    assert f"wrote {page}" in capsys.readouterr().err


def test_show_unknown(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "show", "CAnope", "--db", db]) == 1
    assert "no call with SID CAnope" in capsys.readouterr().err


def test_delete(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "delete", "CA1", "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("deleted the record of stream MZ1b (call CA1")
    assert out[0].endswith(f"and its recording {tmp_path / 'MZ1b.wav'}")
    assert out[1].startswith("deleted the record of stream MZ1a (call CA1")
    assert not (tmp_path / "MZ1b.wav").exists()
    assert main(["calls", "--db", db]) == 0
    assert listed(capsys.readouterr().out) == ["CA2", "CA3"]
    assert main(["calls", "delete", "CA1", "--db", db]) == 1
    assert "no call with SID CA1" in capsys.readouterr().err


def test_db_from_the_environment(db: str, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALLBRIDGE_DB", db)
    assert main(["calls", "--limit", "1"]) == 0
    assert listed(capsys.readouterr().out) == ["CA1"]


def test_db_off(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALLBRIDGE_DB", "off")
    assert main(["calls"]) == 2
    assert "call records are off" in capsys.readouterr().err


def test_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.db"
    assert main(["calls", "--db", str(missing)]) == 2
    assert "no call records at" in capsys.readouterr().err
    assert not missing.exists()  # not made by looking


def test_postgres(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    sink = open_sink(postgres_url)
    sink.save(a_call("MZ9", "CA9", ago_s=60))
    sink.close()
    assert main(["calls", "--db", postgres_url]) == 0
    assert listed(capsys.readouterr().out) == ["CA9"]
    assert main(["calls", "show", "CA9", "--db", postgres_url]) == 0
    assert "0:07.010  tool" in capsys.readouterr().out


def test_the_command(db: str) -> None:
    """`python -m callbridge calls ...`, as a person runs it."""
    done = subprocess.run([sys.executable, "-m", "callbridge", "calls", "--db", db, "--json",
                           "--limit", "1"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stream_sid"] == "MZ1b"


@pytest.mark.parametrize(("ms", "text"), [(0, "0:00.000"), (3120, "0:03.120"),
                                          (83400, "1:23.400"), (3_600_000, "60:00.000")])
def test_clock(ms: int, text: str) -> None:
    assert clock(ms) == text
