"""`callbridge demo`: one simulated phone call with a barge-in, no keys, loopback only.

The call is real where it matters: callbridge runs as the service (under hypercorn's
trio worker, in this process), the model is the local realtime server on a real
WebSocket, and the caller is the synthetic Twilio that plays what it receives in
real time and echoes marks the way Twilio does. The script: the agent greets, the
caller cuts in, the agent answers, the caller orders, the agent confirms, the
caller hangs up.

The timeline is built afterwards from the two peers' records, which are the ground
truth: when the caller spoke and what their phone played (and when `clear` cut
it), and what the model sent and received (`ServerSession.timeline`). The same
scenario runs without sockets on trio's `MockClock` (`loopback=False`), which is how
the test suite runs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from . import twilio as tw
from .agent import Agent
from .local import LocalRealtimeServer, Reply, scripted_brain
from .testing import TwilioCaller, Utterance, simulate_call
from .testing._voice import babble
from .testing._wav import write_wav

__all__ = ["DemoReport", "run_demo"]

BYTES_PER_S = 1000 * tw.BYTES_PER_MS

AGENT = Agent(
    instructions="You take orders for Callbridge Pizza. Be brief and friendly.",
    greeting="Greet the caller and mention today's offer.",
)

#: (what the agent says, seconds): the local model's scripted replies, in turn order
AGENT_LINES = [
    ("Hello, and thanks for calling Callbridge Pizza! Today every large pizza comes "
     "with a second one free, and our new garlic crust is back by popular demand, so",
     5.0),
    ("Of course, go ahead. What would you like?", 1.8),
    ("One large margherita, ready in twenty minutes. Thanks for calling!", 2.6),
]
#: (when the caller starts, what they say, seconds), in call time
CALLER_LINES = [
    (1.6, "Hi, sorry, can I just order?", 1.2),
    (5.6, "A large margherita, please.", 1.6),
]
HANG_UP_AT = 11.0


@attrs.frozen
class Entry:
    """One line of the timeline: seconds since the call started, who, what."""

    at: float
    who: str
    what: str


@attrs.frozen(kw_only=True)
class Interruption:
    """One barge-in, as the peers saw it."""

    speech_started_at: float
    #: speech_started leaving the model -> `clear` reaching the caller (None: no clear)
    clear_ms: float | None
    item_id: str | None = None
    #: what the bridge told the model the caller heard (`audio_end_ms`)
    claimed_ms: int | None = None
    #: what the caller's phone actually played of that item
    heard_ms: float | None = None
    produced_ms: float | None = None


@attrs.frozen(kw_only=True)
class DemoReport:
    entries: list[Entry]
    interruptions: list[Interruption]
    #: per agent turn: seconds from its trigger (call start or caller silence) to audio
    response_latencies: list[float]
    caller_track: bytes = attrs.field(repr=False)
    agent_track: bytes = attrs.field(repr=False)
    files: list[Path]
    caller: TwilioCaller = attrs.field(repr=False)
    model: LocalRealtimeServer = attrs.field(repr=False)

    def timeline(self) -> str:
        lines = ["   time  who     what"]
        lines += [f"{e.at:7.3f}  {e.who:<6}  {e.what}" for e in self.entries]
        return "\n".join(lines)


def _peers() -> tuple[TwilioCaller, LocalRealtimeServer]:
    replies = [Reply(audio=babble(round(s * 1000), pitch_hz=210, seed=i), transcript=text)
               for i, (text, s) in enumerate(AGENT_LINES)]
    # a realistic pace: deltas of 100 ms, five times faster than real time
    model = LocalRealtimeServer(brain=scripted_brain(replies), chunk_ms=100, speedup=5)
    utterances = [Utterance.recorded(babble(round(s * 1000), pitch_hz=120, seed=10 + i,
                                            level=0.35), at=at)
                  for i, (at, _, s) in enumerate(CALLER_LINES)]
    caller = TwilioCaller(utterances=utterances, hangup_at=HANG_UP_AT,
                          custom_parameters={"from": "+15550100", "to": "+15550199"})
    return caller, model


async def _call_in_memory(caller: TwilioCaller, model: LocalRealtimeServer) -> str:
    await simulate_call(caller, agent=AGENT, model=model)
    return "in memory on virtual time: run_call <-> local model, no sockets"


async def _call_over_loopback(caller: TwilioCaller, model: LocalRealtimeServer) -> str:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from .app import create_app
    from .config import Settings
    from .testing import dial_twilio_stream, serve_realtime_websocket

    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_realtime_websocket, model))
        settings = Settings(openai_api_key="sk-local-demo-not-a-key",
                            openai_base_url=f"http://127.0.0.1:{port}/v1")
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        app = create_app(settings, agent=AGENT)
        binds: list[str] = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
        host = binds[0].removeprefix("http://")
        await dial_twilio_stream(caller, f"ws://{host}/media-stream")
        with trio.move_on_after(5):  # the model session ends right after the call
            await model.wait_for_sessions(lambda sessions: bool(sessions) and sessions[0].closed)
        nursery.cancel_scope.cancel()
    return (f"callbridge under hypercorn's trio worker at http://{host}, local model at "
            f"ws://127.0.0.1:{port}/v1/realtime")


async def run_demo(
    out_dir: Path | None = None,
    *,
    loopback: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoReport:
    """Play the demo call and return what happened; `echo` gets the printed lines.

    With `out_dir`, writes `caller.wav` (what the caller said) and `agent.wav` (what
    the caller heard, on the same clock) there. `loopback=False` runs the call in
    memory, for `MockClock` tests.
    """
    caller, model = _peers()
    echo("callbridge demo: a simulated phone call, no keys, nothing leaves this machine.")
    echo(f"Placing the call ({HANG_UP_AT:.0f} s of call time)...")
    how = await (_call_over_loopback if loopback else _call_in_memory)(caller, model)
    report = _report(caller, model)
    echo(f"  {how}\n")
    echo(report.timeline())
    echo("")
    echo(_summary(report))
    if out_dir is not None:
        await trio.to_thread.run_sync(_save, report, out_dir)
        echo(f"Wrote {out_dir / 'caller.wav'} (what the caller said) and "
             f"{out_dir / 'agent.wav'} (what the caller heard), "
             f"{len(report.caller_track) / BYTES_PER_S:.1f} s each on the call's clock.")
    return report


def _save(report: DemoReport, out_dir: Path) -> None:
    """Write the two tracks as WAV files (blocking: run in a thread)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, track in [("caller.wav", report.caller_track), ("agent.wav", report.agent_track)]:
        write_wav(out_dir / name, track)
        report.files.append(out_dir / name)


def _summary(report: DemoReport) -> str:
    n = len(report.interruptions)
    lines = [f"{len(report.response_latencies)} agent turns, {n} barge-in{'s' * (n != 1)}."]
    for i in report.interruptions:
        if i.clear_ms is not None:
            lines.append(f"Barge-in: playback cleared {i.clear_ms:.1f} ms after the model "
                         "heard the caller.")
        if i.claimed_ms is not None and i.heard_ms is not None:
            lines.append(f"Truncation: the bridge told the model {i.claimed_ms} ms were heard; "
                         f"the caller's phone played {i.heard_ms:.0f} ms "
                         f"of the {i.produced_ms:.0f} ms produced.")
    return "\n".join(lines)


# --- building the timeline from the peers' records -------------------------------------


def _report(caller: TwilioCaller, model: LocalRealtimeServer) -> DemoReport:
    t0 = caller.t0
    entries: list[Entry] = [Entry(0.0, "twilio", f"call starts: stream {caller.stream_sid}")]
    # what the caller's phone played, per assistant item: (receive time, Heard)
    media = [(t, m) for t, m in caller.received if isinstance(m, tw.Media)]
    heard = list(zip([t for t, _ in media], caller.heard, strict=True))
    first_delta: dict[str, float] = {}
    item_of: dict[str, str] = {}
    transcripts = {r.id: r.transcript for s in model.sessions for r in s.responses}
    produced = {k: len(v) for s in model.sessions for k, v in s.produced.items()}
    # what the model sent and received, when (one session: the demo's call)
    log = [(at, direction, json.loads(text)) for s in model.sessions
           for at, direction, text in s.timeline]
    for at, direction, event in log:
        if direction == "out" and event["type"] == "response.output_audio.delta":
            first_delta.setdefault(event["item_id"], at)
            item_of.setdefault(event["item_id"], event["response_id"])
    starts = sorted((at, item) for item, at in first_delta.items())

    def item_at(t: float) -> str | None:
        found = None
        for at, item in starts:
            if at <= t:
                found = item
        return found

    played: dict[str, list[tuple[float, Any]]] = {}
    for t, h in heard:
        item = item_at(t)
        if item is not None:
            played.setdefault(item, []).append((t, h))

    def heard_ms(item: str) -> float:
        end = t0 + HANG_UP_AT
        return sum(len(h.played(end)) for _, h in played.get(item, [])) / tw.BYTES_PER_MS

    triggers: list[tuple[float, str]] = [(t0, "the call started")]
    for (at, text, _), u in zip(CALLER_LINES, caller.utterances, strict=True):
        entries.append(Entry(at, "caller", f'"{text}" ({u.duration:.1f} s)'))
        triggers.append((t0 + at + u.duration, "the caller stopped"))

    interruptions: list[Interruption] = []
    latencies: list[float] = []
    for at, direction, event in log:
        kind, rel = event["type"], at - t0
        if direction == "in" and kind == "session.update":
            entries.append(Entry(rel, "bridge", "session.update: audio/pcmu both ways, server VAD"))
        elif direction == "in" and kind == "response.create":
            entries.append(Entry(rel, "bridge", "asks for the greeting (response.create)"))
        elif direction == "out" and kind == "input_audio_buffer.speech_started":
            what = f"hears the caller: speech_started (input audio at {event['audio_start_ms']} ms)"
            if not any(h.start <= at < h.end for _, h in heard):
                entries.append(Entry(rel, "model", what))
                continue
            entries.append(Entry(rel, "model", f"{what}, while the agent is playing: BARGE-IN"))
            clear = next((c for c in caller.clears if c >= at), None)
            clear_ms = None if clear is None else (clear - at) * 1000
            interruptions.append(Interruption(speech_started_at=rel, clear_ms=clear_ms))
            if clear is not None:
                entries.append(Entry(clear - t0, "twilio", f"clear: the phone stops playing "
                                     f"{clear_ms:.1f} ms after speech_started"))
        elif direction == "in" and kind == "conversation.item.truncate":
            item, claimed = event["item_id"], event["audio_end_ms"]
            done_ms = produced.get(item, 0) / tw.BYTES_PER_MS
            entries.append(Entry(rel, "bridge", f"truncate {item} at {claimed} ms "
                                 f"(the caller heard {heard_ms(item):.0f} ms of "
                                 f"{done_ms:.0f} ms produced)"))
            if interruptions:
                interruptions[-1] = attrs.evolve(interruptions[-1], item_id=item,
                                                 claimed_ms=claimed, heard_ms=heard_ms(item),
                                                 produced_ms=done_ms)
        elif direction == "out" and kind == "input_audio_buffer.speech_stopped":
            entries.append(Entry(rel, "model", "caller finished (speech_stopped after the "
                                 "VAD's silence): answering"))
        elif direction == "out" and kind == "response.done":
            response = event["response"]
            items = [o["id"] for o in response["output"]]
            made = sum(produced.get(i, 0) for i in items) / BYTES_PER_S
            if response["status"] == "cancelled":
                reason = (response.get("status_details") or {}).get("reason")
                entries.append(Entry(rel, "model", f"response cancelled ({reason}) after "
                                     f"{made:.1f} s of audio"))
            elif items and items[0] in first_delta:
                took = at - first_delta[items[0]]
                entries.append(Entry(rel, "model", f"done generating: {made:.1f} s of audio "
                                     f"in {took:.1f} s (the phone plays it in real time)"))
        elif direction == "out" and kind == "response.output_audio.delta":
            item = event["item_id"]
            if first_delta.get(item) != at or item not in played:
                continue
            start = played[item][0][1].start
            trigger_at, why = max((t, w) for t, w in triggers if t <= start)
            latencies.append(start - trigger_at)
            text = transcripts.get(item_of[item], "")
            entries.append(Entry(start - t0, "agent", f'"{text}" '
                                 f"(audio {(start - trigger_at) * 1000:.0f} ms after {why})"))
    entries.append(Entry(HANG_UP_AT, "caller", "hangs up (stop)"))
    entries.sort(key=lambda e: e.at)

    nbytes = len(caller.sent_audio)
    agent = bytearray(b"\xff" * nbytes)
    for _, h in heard:
        audio = h.played(t0 + HANG_UP_AT)
        pos = round((h.start - t0) * BYTES_PER_S)
        agent[pos : pos + len(audio)] = audio[: max(0, nbytes - pos)]
    return DemoReport(entries=entries, interruptions=interruptions, response_latencies=latencies,
                      caller_track=bytes(caller.sent_audio), agent_track=bytes(agent[:nbytes]),
                      files=[], caller=caller, model=model)
