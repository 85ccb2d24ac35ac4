"""`callbridge demo`: the scenarios (OpenAI's, VAPI's) on virtual time, and the command
in memory and over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _schema import validate_client_event

from callbridge._cli import main
from callbridge._demo import ANSWER, FILLER, GOODBYE, GREETING, ORDER_NUMBER, TOOL_SECONDS, run_demo
from callbridge._demovapi import GOODBYE as VAPI_GOODBYE
from callbridge.testing import read_wav
from callbridge.twilio import Media
from callbridge.vapi_rest import VapiAudioFormat

FRAME = 160

CONFIRMATION = (f"Order {ORDER_NUMBER}: one large margherita, ready in twenty minutes. "
                "Press 1 then pound to confirm.")
#: what the model said, per response: greeting, answer, the tool call, filler, ...
TRANSCRIPTS = [
    "Hello, and thanks for calling Callbridge Pizza! Today every large pizza comes with a "
    "second one free, and our new garlic crust is back by popular demand, so",
    ANSWER,
    "",
    FILLER,
    CONFIRMATION,
    GOODBYE,
]


async def test_the_demo_call_on_virtual_time(autojump_clock: object, tmp_path: Path) -> None:
    printed: list[str] = []
    report = await run_demo(tmp_path, loopback=False, echo=printed.append)

    caller, [session] = report.caller, report.model.sessions
    received = [json.loads(text) for text in session.received]
    assert caller.violations == []
    assert [e for e in map(json.loads, session.sent) if e["type"] == "error"] == []
    for event in received:
        validate_client_event(event)
    assert session.violations == []
    assert [r.transcript for r in session.responses] == TRANSCRIPTS
    # all complete: the greeting was generated before the caller cut in (then truncated)
    assert [r.status for r in session.responses] == ["completed"] * len(TRANSCRIPTS)
    creates = [e["response"] for e in received if e["type"] == "response.create"]
    # no idle prompt: the caller was never silent for `idle_timeout`
    assert [c["metadata"]["callbridge"] for c in creates] == [
        "greeting", "filler", "reply", "reply"]

    # one barge-in, during the greeting, cleared at once and truncated at what was heard
    [cut] = report.interruptions
    assert cut.clear_ms == 0.0  # virtual time: the same instant as speech_started
    assert cut.item_id is not None and cut.item_id == session.responses[0].item_id
    assert cut.claimed_ms is not None and cut.heard_ms is not None and cut.produced_ms
    assert abs(cut.claimed_ms - cut.heard_ms) <= FRAME / 8
    assert cut.claimed_ms <= cut.produced_ms
    assert session.truncations == [(cut.item_id, cut.claimed_ms)]
    # every spoken agent turn was heard, the first right after the call began
    assert len(report.response_latencies) == len([t for t in TRANSCRIPTS if t])
    assert report.response_latencies[0] < 0.1

    # the tool ran once, and its output reached the model, which read it back
    call, bye_call = session.tool_calls
    assert (call.name, json.loads(call.arguments)) == (
        "place_order", {"item": "margherita", "size": "large"})
    output, bye_output = [e["item"] for e in received if e["type"] == "conversation.item.create"
                          and e["item"]["type"] == "function_call_output"]
    assert output["call_id"] == call.call_id
    assert json.loads(output["output"])["order"] == ORDER_NUMBER
    assert session.function_outputs == {call.call_id: output["output"],
                                        bye_call.call_id: bye_output["output"]}
    [use] = report.tool_uses
    assert use.seconds == pytest.approx(TOOL_SECONDS) and use.fillers == 1

    # the filler: out of band, said while the tool ran, heard whole before the answer
    filler, answer = session.responses[3], session.responses[4]
    assert creates[1]["conversation"] == "none" and filler.out_of_band
    assert FILLER in creates[1]["instructions"]
    heard = caller.heard_audio()
    filler_audio, answer_audio = (bytes(session.produced[str(r.item_id)])
                                  for r in (filler, answer))
    assert heard.index(filler_audio) + len(filler_audio) <= heard.index(answer_audio)

    # the keypresses reached the model as a user message, then a response answered them
    keyed = _after(received, lambda e: e["type"] == "conversation.item.create"
                   and e["item"]["type"] == "message")
    assert keyed[0]["item"]["role"] == "user"
    assert keyed[0]["item"]["content"] == [{"type": "input_text",
                                            "text": "The caller pressed 1 #."}]
    assert keyed[1]["type"] == "response.create"
    assert keyed[1]["response"]["metadata"] == {"callbridge": "reply"}
    assert report.keypresses == "1#" and report.user_messages == ["The caller pressed 1 #."]

    # the goodbye: said with end_call in one response, heard in full, then the hang-up
    goodbye = session.responses[5]
    assert [o.call and o.call.name for o in goodbye.outputs] == [None, "end_call"]
    assert (bye_call.name, bye_call.arguments, bye_output["call_id"]) == (
        "end_call", "{}", bye_call.call_id)
    goodbye_audio = bytes(session.produced[str(goodbye.item_id)])
    assert heard.endswith(goodbye_audio)  # all of it, and nothing after it
    twilio, bye = report.twilio, report.hang_up
    assert bye is not None and bye.heard_ms == bye.produced_ms == len(goodbye_audio) / 8
    # exactly one hang-up request reached the local Twilio, and it ended the call
    [hang_up] = twilio.requests
    assert (hang_up.method, hang_up.path, hang_up.form, hang_up.status) == (
        "POST", f"/2010-04-01/Accounts/{twilio.account_sid}/Calls/{caller.call_sid}.json",
        (("Status", "completed"),), 200)
    assert twilio.hangups == [caller.call_sid] and len(bye.requests) == 1
    assert twilio.calls[caller.call_sid].statuses == ["in-progress", "completed"]
    # it came once the phone had played the goodbye's last byte (its mark echoed), at once
    last_played = max(h.end if h.cut_at is None else h.cut_at for h in caller.heard)
    assert last_played == max(t for t, _ in caller.echoes)  # the last mark came back then
    assert bye.goodbye_played_at == last_played - caller.t0
    assert 0 <= bye.requests[0] - bye.goodbye_played_at < 0.2
    assert report.reason == "hung_up" and not caller.closed_by_server  # `stop`, then close
    # no reply was asked for after end_call's output
    assert "response.create" not in [e["type"] for e in _after(
        received, lambda e: e["type"] == "conversation.item.create" and e["item"] == bye_output)]

    # the tracks: on the call's clock, the agent track is exactly what the phone played
    caller_wav, agent_wav = (read_wav(tmp_path / n) for n in ("caller.wav", "agent.wav"))
    assert caller_wav == bytes(caller.sent_audio) == bytes(session.input_audio)
    assert len(agent_wav) == len(caller_wav)
    assert 19.5 < len(caller_wav) / 8000 < 21  # until the hang-up, not the caller's 30 s
    assert agent_wav.replace(b"\xff", b"") == heard.replace(b"\xff", b"")
    greeting = bytes(session.produced[cut.item_id])
    start = round(report.response_latencies[0] * 8000)
    assert agent_wav[start : start + cut.claimed_ms * 8] == greeting[: cut.claimed_ms * 8]

    text = "\n".join(printed)
    for expected in ["BARGE-IN", "clear: the phone stops playing", f"truncate {cut.item_id}",
                     'calls place_order({"item":"margherita","size":"large"})',
                     "asks for a filler line (out of band)",
                     f'function_call_output of place_order: {output["output"]}',
                     "presses # (dtmf)", 'user message: "The caller pressed 1 #."',
                     f'"{CONFIRMATION}"', "1 tool call (place_order, 2.5 s) with 1 filler line",
                     "keypresses 1 #", "calls end_call({}) after its goodbye",
                     "function_call_output of end_call",
                     "asks Twilio to hang up (REST Status=completed), 0 ms after the goodbye's",
                     "twilio  stop (the call ends)",
                     "the agent hung up after its goodbye played in full",
                     "The call ended: hung_up.", "caller.wav", "agent.wav"]:
        assert expected in text
    assert "off script" not in text


def _after(events: list[dict[str, Any]], first: Any) -> list[dict[str, Any]]:
    """`events` from the first one `first` holds for on."""
    return events[next(i for i, e in enumerate(events) if first(e)):]


async def test_the_vapi_demo_call_on_virtual_time(autojump_clock: object,
                                                  tmp_path: Path) -> None:
    """VAPI's assistant greets, is cut off, answers, and hangs up itself after its
    goodbye; callbridge clears at once, cannot truncate, and ends the call hung_up."""
    printed: list[str] = []
    report = await run_demo(tmp_path, loopback=False, echo=printed.append, backend="vapi")

    caller, vapi, [session] = report.caller, report.vapi, report.model.sessions
    assert vapi is not None
    assert caller.violations == [] and session.violations == []
    assert [r.transcript for r in session.responses] == [GREETING, ANSWER, VAPI_GOODBYE]
    # the platform's own session: its end-call tool, its first message; nothing of the
    # bridge's (no greeting instructions, no tools of callbridge's, no truncation)
    received = [json.loads(text) for text in session.received]
    assert [e["type"] for e in received if e["type"] != "input_audio_buffer.append"] == [
        "session.update", "response.create"]
    assert [t["name"] for t in received[0]["session"]["tools"]] == ["end_call"]
    assert session.truncations == [] and report.tool_uses == [] and report.keypresses == ""
    # one VAPI call, created over its REST API, PCM 16 kHz both ways
    [created] = vapi.rest.calls.values()
    assert created.audio_format == VapiAudioFormat()
    [record] = vapi.platform.calls
    # the platform got the caller's audio (transcoded up, then down for its model) until
    # it hung up, the words where the caller said them (less the VAD's 300 ms padding)
    assert bytes(session.input_audio) == bytes(record.received)
    assert 7.2 * 8000 < len(record.received) < len(caller.sent_audio)
    assert [json.loads(t)["audio_start_ms"] for _, way, t in session.timeline if way == "out"
            and json.loads(t)["type"] == "input_audio_buffer.speech_started"] == [1300, 5300]

    # one barge-in, during the greeting: Twilio's queue cleared at once, no truncation
    [cut] = report.interruptions
    assert cut.clear_ms == 0.0 and cut.claimed_ms is None
    [cleared] = caller.clears
    answer_at = [at for at, way, t in session.timeline
                 if way == "out" and json.loads(t)["type"] == "response.created"][1]
    media = [at for at, m in caller.received if isinstance(m, Media)]
    assert [t for t in media if t < cleared] and not [t for t in media
                                                      if cleared < t < answer_at]
    assert len(report.response_latencies) == 3 and report.response_latencies[0] < 0.1

    # the goodbye: the platform hung up after it (status-update ended), the caller heard
    # all of it, then callbridge had Twilio end the call: hung_up
    assert record.platform_hung_up and not record.client_hung_up
    assert record.controls_in == []  # (callbridge had no end-call to send: VAPI ended it)
    assert record.controls_out[-1] == {"type": "status-update", "status": "ended",
                                       "endedReason": "assistant-ended-call"}
    bye = report.hang_up
    assert bye is not None and bye.heard_ms == bye.produced_ms == 4400
    assert bye.goodbye_played_at is not None and len(bye.requests) == 1
    assert 0 <= bye.requests[0] - bye.goodbye_played_at < 0.2
    assert report.twilio.hangups == [caller.call_sid]
    assert report.reason == "hung_up" and not caller.closed_by_server
    assert report.record is not None and report.record.end_reason == "hung_up"
    assert 12 < len(read_wav(tmp_path / "agent.wav")) / 8000 < 13

    text = "\n".join(printed)
    for expected in ["BARGE-IN", "vapi    speech-update: the caller started speaking",
                     "clear: the phone stops playing 0.0 ms after speech_started",
                     "vapi    session.update: its assistant; tools: end_call",
                     "calls end_call({}) after its goodbye",
                     "status-update ended (assistant-ended-call)",
                     "asks Twilio to hang up (REST Status=completed), 0 ms after the goodbye's",
                     "twilio  stop (the call ends)", f'"{VAPI_GOODBYE}"',
                     "the agent hung up after its goodbye played in full",
                     "No truncation: VAPI cannot be told what the caller heard",
                     "no keypresses", "The call ended: hung_up."]:
        assert expected in text
    for unexpected in ["off script", "truncate ", "Truncation:", "dtmf", "Tool:"]:
        assert unexpected not in text


def test_demo_command_in_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--in-memory", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "BARGE-IN" in out and "in memory on virtual time" in out
    assert (tmp_path / "out" / "agent.wav").stat().st_size > 44


def test_demo_command_in_memory_with_vapi(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--in-memory", "--backend", "vapi",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "in memory on virtual time: run_call <-> the local VAPI" in out
    assert "BARGE-IN" in out and "status-update ended" in out and "No truncation" in out
    assert "The call ended: hung_up." in out
    assert (tmp_path / "out" / "agent.wav").stat().st_size > 44


@pytest.mark.slow
def test_demo_command_over_loopback(tmp_path: Path) -> None:
    """The README's newcomer command, as a user runs it (about 20 s of real time).

    Real clock, maybe a loaded machine: only what must hold however late a frame
    comes is checked, never a timing."""
    done = subprocess.run(
        [sys.executable, "-m", "callbridge._cli", "demo", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # where its record goes by default: ./callbridge.db
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "hypercorn's trio worker" in out
    assert "BARGE-IN" in out and "clear: the phone stops playing" in out
    assert "Truncation: the bridge told the model" in out
    assert "calls place_order(" in out and "function_call_output of place_order" in out
    assert 'user message: "The caller pressed 1 #."' in out
    assert f"Order {ORDER_NUMBER}" in out and GOODBYE in out
    # the agent hung up through the local Twilio, once its goodbye had played in full
    assert "calls end_call({})" in out and "asks Twilio to hang up (REST Status=completed)" in out
    assert "twilio  stop (the call ends)" in out and "hangs up (stop)" not in out
    assert "the agent hung up after its goodbye played in full" in out
    assert len(read_wav(tmp_path / "agent.wav")) < 30 * 8000  # never the caller's bound

    # what the service kept: the record (`callbridge calls show` prints it and writes
    # its viewer page), the recording, the metrics read back from /metrics
    call_sid = "CA00000000000000000000000000000001"
    assert f"The service kept call {call_sid}:" in out
    assert 'callbridge_calls_total{end_reason="hung_up"} 1.0' in out
    assert "callbridge_barge_ins_total 1.0" in out
    assert f"{tmp_path}/{call_sid}-MZ00000000000000000000000000000001.wav" in out
    shown = subprocess.run(
        [sys.executable, "-m", "callbridge._cli", "calls", "show", call_sid,
         "--html", str(tmp_path / "call.html")],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "barge-in" in shown.stdout and "place_order" in shown.stdout
    page = (tmp_path / "call.html").read_text()
    assert call_sid in page and "data:audio/wav;base64," in page


@pytest.mark.slow
def test_demo_command_over_loopback_with_vapi(tmp_path: Path) -> None:
    """`callbridge demo --backend vapi`: the local VAPI's call socket on loopback too
    (about 13 s of real time); only what holds however late a frame comes."""
    done = subprocess.run(
        [sys.executable, "-m", "callbridge._cli", "demo", "--backend", "vapi",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "hypercorn's trio worker" in out and "the local VAPI (its REST API in memory, " \
        "its call socket at ws://127.0.0.1:" in out
    assert "BARGE-IN" in out and "clear: the phone stops playing" in out
    assert "speech-update: the caller started speaking" in out
    assert "Truncation:" not in out and "No truncation" in out
    assert "status-update ended (assistant-ended-call)" in out and VAPI_GOODBYE in out
    assert "asks Twilio to hang up (REST Status=completed)" in out
    assert "the agent hung up after its goodbye played in full" in out
    assert 'callbridge_calls_total{end_reason="hung_up"} 1.0' in out
    assert "callbridge_barge_ins_total 1.0" in out
    assert len(read_wav(tmp_path / "agent.wav")) < 30 * 8000
