"""`callbridge demo`: the scenario on virtual time, and the command over loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from callbridge._cli import main
from callbridge._demo import AGENT_LINES, HANG_UP_AT, run_demo
from callbridge.testing import read_wav

FRAME = 160


async def test_the_demo_call_on_virtual_time(autojump_clock: object, tmp_path: Path) -> None:
    printed: list[str] = []
    report = await run_demo(tmp_path, loopback=False, echo=printed.append)

    caller, [session] = report.caller, report.model.sessions
    assert caller.violations == []
    assert [e for e in session.sent if '"type":"error"' in e.replace(" ", "")] == []
    assert [r.transcript for r in session.responses] == [text for text, _ in AGENT_LINES]

    # one barge-in, during the greeting, cleared at once and truncated at what was heard
    [cut] = report.interruptions
    assert cut.clear_ms == 0.0  # virtual time: the same instant as speech_started
    assert cut.item_id == session.responses[0].item_id
    assert cut.claimed_ms is not None and cut.heard_ms is not None and cut.produced_ms
    assert abs(cut.claimed_ms - cut.heard_ms) <= FRAME / 8
    assert cut.claimed_ms <= cut.produced_ms
    assert session.truncations == [(cut.item_id, cut.claimed_ms)]
    # every agent turn was heard, the first right after the call began
    assert len(report.response_latencies) == len(AGENT_LINES)
    assert report.response_latencies[0] < 0.1

    # the tracks: on the call's clock, the agent track is exactly what the phone played
    caller_wav, agent_wav = (read_wav(tmp_path / n) for n in ("caller.wav", "agent.wav"))
    assert caller_wav == bytes(caller.sent_audio) == bytes(session.input_audio)
    assert len(agent_wav) == len(caller_wav) == HANG_UP_AT * 8000
    heard = b"".join(h.played(caller.t0 + HANG_UP_AT) for h in caller.heard)
    assert agent_wav.replace(b"\xff", b"") == heard.replace(b"\xff", b"")
    greeting = bytes(session.produced[cut.item_id])
    start = round(report.response_latencies[0] * 8000)
    assert agent_wav[start : start + cut.claimed_ms * 8] == greeting[: cut.claimed_ms * 8]

    text = "\n".join(printed)
    for expected in ["BARGE-IN", "clear: the phone stops playing", f"truncate {cut.item_id}",
                     "hangs up", "caller.wav", "agent.wav"]:
        assert expected in text


def test_demo_command_in_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--in-memory", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "BARGE-IN" in out and "in memory on virtual time" in out
    assert (tmp_path / "out" / "agent.wav").stat().st_size > 44


@pytest.mark.slow
def test_demo_command_over_loopback(tmp_path: Path) -> None:
    """The README's newcomer command, as a user runs it (about 11 s of real time)."""
    done = subprocess.run(
        [sys.executable, "-m", "callbridge._cli", "demo", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=90, env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "hypercorn's trio worker" in done.stdout
    assert "BARGE-IN" in done.stdout and "clear: the phone stops playing" in done.stdout
    assert "Truncation: the bridge told the model" in done.stdout
    assert len(read_wav(tmp_path / "agent.wav")) == HANG_UP_AT * 8000
