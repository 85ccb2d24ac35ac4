"""`callbridge demo`: one simulated phone call, with a barge-in, a tool and keypresses; no keys.

The call is real where it matters: callbridge runs as `callbridge serve` runs it
(its front door in hypercorn's trio worker, here in this process), the model is the
local realtime server on a real WebSocket, the caller is the synthetic Twilio that
plays what it receives in real time and echoes marks as Twilio does, Twilio's REST
API is `LocalTwilio`'s. The script: the agent greets, the caller cuts in, the agent
answers, the caller orders; the model calls `place_order`, which is slow (2.5 s), so
the agent says a filler line while it runs, then reads the order number back and
asks the caller to press 1 then pound; the caller does (DTMF), the keys reach the
model as a user message, and the agent confirms and says goodbye, calling `end_call`
in the same response: once the goodbye has played in full (its last mark came back)
the bridge asks Twilio to end the call (REST), and Twilio stops the stream. No idle
prompt comes (the default `idle_timeout`, 8 s of silence, never passes).

The model's side is a script (`scripted_brain`), but it answers from what reaches
it: the confirmation is made of the tool's output (`Turn.function_outputs`), the
filler line is said only when the bridge asks for it out of band, and "Confirmed"
only once the keypresses arrived (`Turn.messages`); otherwise the agent says an
"(off script: ...)" line, which the timeline shows.

The timeline is built afterwards from the two peers' records, which are the ground
truth: when the caller spoke, which keys they pressed (their schedule: each key goes
with the next 20 ms media frame) and what their phone played (and when `clear` cut
it), what the model sent and received (`ServerSession.timeline`), and the REST
requests the local Twilio got (timed as they arrive). The same scenario runs without
sockets on trio's `MockClock` (`loopback=False`), which is how the test suite runs it.

`backend="vapi"` plays VAPI's call (`callbridge._demovapi`): a `Scenario` says what
differs (agent, script, caller, a platform in front of the model), the rest is shared.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from . import twilio as tw
from ._democall import Clocked, Placed, kept, place_call
from ._watch import Watch
from .agent import Agent
from .calltools import end_call
from .config import Settings
from .local import Brain, LocalRealtimeServer, LocalVapi, Reply, ToolCall, Turn, scripted_brain
from .records import CallRecord
from .testing import Heard, LocalTwilio, TwilioCaller, Utterance, babble, write_wav
from .tools import tool

__all__ = ["DemoReport", "Scenario", "run_demo"]

BYTES_PER_S = 1000 * tw.BYTES_PER_MS

#: what the demo kitchen calls every order, and how long its order system takes
ORDER_NUMBER = 4417
TOOL_SECONDS = 2.5
FILLER = "One moment while I put that in."


@tool(filler_after=1.0, filler=FILLER)
async def place_order(item: str, size: str) -> dict[str, object]:
    """Send the caller's order to the kitchen; returns its number and when it is ready.

    item: the pizza, as on the menu (e.g. "margherita")
    size: small, medium or large
    """
    await trio.sleep(TOOL_SECONDS)  # slow enough that the bridge says the filler line
    return {"order": ORDER_NUMBER, "item": f"{size} {item}", "ready_in": "twenty minutes"}


AGENT = Agent(
    instructions="Take Callbridge Pizza orders with place_order; say goodbye with end_call.",
    greeting="Greet the caller and mention today's offer.",
    tools=[place_order, end_call],
)

#: (when the caller starts, what they say, seconds), in call time
CALLER_LINES = [
    (1.6, "Hi, sorry, can I just order?", 1.2),
    (5.6, "A large margherita, please.", 1.6),
]
#: (when, key): the caller confirms once the agent has read the order back
KEYPRESSES = [(16.4, "1"), (16.9, "#")]
#: a safety bound: the agent hangs up first, once its goodbye has played (about 20 s)
CALLER_HANGS_UP_AT = 30.0

ORDER_CALL_ID = "call_demo_order"
ORDER_CALL = ToolCall("place_order", {"item": "margherita", "size": "large"},
                      call_id=ORDER_CALL_ID)
CONFIRMATION = "Order {order}: one {item}, ready in {ready_in}. Press 1 then pound to confirm."
GOODBYE = "Confirmed. Thanks for calling Callbridge Pizza, goodbye!"
GREETING = ("Hello, and thanks for calling Callbridge Pizza! Today every large pizza comes "
            "with a second one free, and our new garlic crust is back by popular demand, so")
ANSWER = "Of course, go ahead. What would you like?"


def _says(text: str, seconds: float, seed: int, *calls: ToolCall) -> Reply:
    return Reply(audio=babble(round(seconds * 1000), pitch_hz=210, seed=seed), transcript=text,
                 tool_calls=calls)


def _off_script(why: str) -> Reply:
    return _says(f"(off script: {why})", 1.0, seed=9)


def _filler(turn: Turn) -> Reply:
    if turn.out_of_band and FILLER in (turn.instructions or ""):
        return _says(FILLER, 1.8, seed=2)
    return _off_script("expected the bridge to ask for the filler line, out of band")


def _confirm(turn: Turn) -> Reply:
    output = turn.function_outputs.get(ORDER_CALL_ID)
    try:
        return _says(CONFIRMATION.format(**json.loads(output or "")), 5.0, seed=3)
    except (ValueError, KeyError, TypeError):
        return _off_script(f"place_order returned {output!r}")


def _confirmed(turn: Turn) -> Reply:
    keys = " ".join(key for _, key in KEYPRESSES)
    if any(role == "user" and f"pressed {keys}." in text for role, text in turn.messages):
        # the goodbye message first, then the call: the model's order in one response
        return _says(GOODBYE, 2.6, 4, ToolCall("end_call", {}))
    return _off_script(f"no keypresses in {list(turn.messages)}")


def _script() -> list[Reply | Brain]:
    """The model's side: one entry per response it is asked for, in turn order."""
    return [
        _says(GREETING, 5.0, seed=0), _says(ANSWER, 1.8, seed=1),
        Reply(tool_calls=[ORDER_CALL]),
        _filler, _confirm, _confirmed,
    ]


@attrs.frozen(kw_only=True)
class Scenario:
    """What one demo call plays; `run_demo` places it and reads it back."""

    backend: str
    #: printed before the call: how long it runs, and until what
    about: str
    agent: Agent
    #: the model's side (`_script`)
    script: Callable[[], list[Reply | Brain]]
    caller_lines: list[tuple[float, str, float]]
    keypresses: list[tuple[float, str]] = attrs.field(factory=list)
    #: the voice platform in front of the model (None: the model is the backend)
    platform: Callable[[LocalRealtimeServer], LocalVapi] | None = None
    #: printed after the summary
    notes: tuple[str, ...] = ()
    #: a timeline line for a control message the platform sent (None: none)
    control: Callable[[dict[str, Any]], str | None] = lambda message: None


OPENAI = Scenario(backend="openai", agent=AGENT, script=_script, caller_lines=CALLER_LINES,
                  keypresses=KEYPRESSES,
                  about="about 20 s of call time, until the agent hangs up")

#: what the bridge's `response.create` asks for, by its `metadata.callbridge`
PURPOSES = {
    "greeting": "asks for the greeting", "reply": "asks for the answer",
    "filler": "asks for a filler line (out of band)", "line": "asks for a guardrail's line",
    "idle": "prompts the agent to check on a silent caller", "goodbye": "asks for a goodbye",
}


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
class ToolUse:
    """One function call, as the model saw it: asked for, then answered."""

    name: str
    arguments: str
    called_at: float
    #: the `function_call_output` the bridge sent back (None: never answered)
    output: str | None = None
    #: from the call (`function_call_arguments.done`) to its output reaching the model
    seconds: float | None = None
    #: filler lines the bridge asked for while it ran
    fillers: int = 0


@attrs.frozen(kw_only=True)
class HangUp:
    """The goodbye said with `end_call`, then the hang-up requests Twilio got (call time)."""

    requests: list[float]
    goodbye_played_at: float | None  # when the caller's phone was done playing it
    heard_ms: float
    produced_ms: float


@attrs.frozen(kw_only=True)
class DemoReport:
    entries: list[Entry]
    interruptions: list[Interruption]
    #: per agent turn heard: seconds from what made the agent speak (the call's start,
    #: the caller's silence or keypress, a filler asked for, a tool's output) to its audio
    response_latencies: list[float]
    #: the agent's tools (`end_call` is in `hang_up`)
    tool_uses: list[ToolUse]
    #: the keys the caller pressed, and the user messages the model got
    keypresses: str
    user_messages: list[str]
    hang_up: HangUp | None
    #: how the call ended: the bridge's `CallResult.reason`
    reason: str | None
    #: what the service kept of the call (None: nothing)
    record: CallRecord | None
    caller_track: bytes = attrs.field(repr=False)
    agent_track: bytes = attrs.field(repr=False)
    files: list[Path]
    caller: TwilioCaller = attrs.field(repr=False)
    model: LocalRealtimeServer = attrs.field(repr=False)
    twilio: LocalTwilio = attrs.field(repr=False)
    #: the voice platform in front of the model (None: none, OpenAI mode)
    vapi: LocalVapi | None = attrs.field(default=None, repr=False)
    notes: tuple[str, ...] = ()

    def timeline(self) -> str:
        return "\n".join(["   time  who     what"]
                         + [f"{e.at:7.3f}  {e.who:<6}  {e.what}" for e in self.entries])


def _peers(scenario: Scenario) -> tuple[TwilioCaller, LocalRealtimeServer]:
    # a realistic pace: deltas of 100 ms, five times faster than real time
    model = LocalRealtimeServer(brain=scripted_brain(scenario.script()), chunk_ms=100,
                                speedup=5)
    utterances = [Utterance.recorded(babble(round(s * 1000), pitch_hz=120, seed=10 + i,
                                            level=0.35), at=at)
                  for i, (at, _, s) in enumerate(scenario.caller_lines)]
    caller = TwilioCaller(utterances=utterances, hangup_at=CALLER_HANGS_UP_AT,
                          dtmf=scenario.keypresses,
                          custom_parameters={"from": "+15550100", "to": "+15550199"})
    return caller, model


async def run_demo(
    out_dir: Path | None = None,
    *,
    loopback: bool = True,
    echo: Callable[[str], None] = print,
    settings: Settings | None = None,
    watch: Watch | None = None,
    backend: str = "openai",
) -> DemoReport:
    """Play the demo call and return what happened; `echo` gets the printed lines.

    With `out_dir`, writes `caller.wav` (what the caller said) and `agent.wav` (what
    the caller heard, on the same clock) there, and the service's recording of the
    call. `settings` say what the service keeps of the call (`db`; `record_dir`
    defaults to `out_dir`): `Settings()` by default, which keeps no record.
    `loopback=False` runs the call in memory, for `MockClock` tests, kept by `watch`
    (by default: what `settings` ask for). `backend`: "openai", or "vapi" for the
    VAPI scenario (`callbridge._demovapi`).
    """
    settings = settings or Settings()
    if out_dir is not None and settings.record_dir is None:
        settings = attrs.evolve(settings, record_dir=out_dir)
    watch = watch or Watch.from_settings(settings)
    from ._demovapi import VAPI  # (built on this module)

    scenario = {"openai": OPENAI, "vapi": VAPI}[backend]
    caller, model = _peers(scenario)
    vapi = None if scenario.platform is None else scenario.platform(model)
    echo("callbridge demo: a simulated phone call, no keys, nothing leaves this machine.")
    echo(f"Placing the call ({scenario.about})...")
    twilio, clocked = LocalTwilio(), Clocked()
    placed = await place_call(caller, scenario.agent, vapi or model, twilio, clocked,
                              loopback=loopback, settings=settings, watch=watch)
    report = _Timeline(caller, model, twilio, scenario, clocked).report(placed, vapi)
    echo(f"  {placed.how}\n")
    echo(report.timeline())
    echo("\n" + _summary(report))
    if out_dir is not None:
        await trio.to_thread.run_sync(_save, report, out_dir)
        echo(f"Wrote {out_dir / 'caller.wav'} (what the caller said) and "
             f"{out_dir / 'agent.wav'} (what the caller heard), "
             f"{len(report.caller_track) / BYTES_PER_S:.1f} s each on the call's clock.")
    echo(kept(placed, settings))
    return report


def _save(report: DemoReport, out_dir: Path) -> None:
    """Write the two tracks as WAV files (blocking: run in a thread)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, track in [("caller.wav", report.caller_track), ("agent.wav", report.agent_track)]:
        write_wav(out_dir / name, track)
        report.files.append(out_dir / name)


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def _summary(report: DemoReport) -> str:
    counts = [_plural(len(report.response_latencies), "agent turn"),
              _plural(len(report.interruptions), "barge-in")]
    if report.tool_uses:
        calls = ", ".join(u.name + ("" if u.seconds is None else f", {u.seconds:.1f} s")
                          for u in report.tool_uses)
        fillers = sum(u.fillers for u in report.tool_uses)
        counts.append(f"{_plural(len(report.tool_uses), 'tool call')} ({calls})"
                      + (f" with {_plural(fillers, 'filler line')}" if fillers else ""))
    if report.keypresses:
        counts.append(f"keypresses {' '.join(report.keypresses)}")
    bye = report.hang_up
    if bye is not None and bye.requests:
        counts.append("the agent hung up after its goodbye played "
                      + ("in full" if bye.heard_ms >= bye.produced_ms else "in part"))
    lines = [", ".join(counts) + "."]
    for i in report.interruptions:
        if i.clear_ms is not None:
            lines.append(f"Barge-in: playback cleared {i.clear_ms:.1f} ms after the model "
                         "heard the caller.")
        if i.claimed_ms is not None and i.heard_ms is not None:
            lines.append(f"Truncation: the bridge told the model {i.claimed_ms} ms were heard; "
                         f"the caller's phone played {i.heard_ms:.0f} ms "
                         f"of the {i.produced_ms:.0f} ms produced.")
    lines += [f"Tool: {u.name}({u.arguments}) " + (
        "never answered: no output reached the model." if u.output is None
        else f"ran {u.seconds:.1f} s; the model got back {u.output}") for u in report.tool_uses]
    if report.keypresses:
        got = ("the user message " + "; ".join(f'"{m}"' for m in report.user_messages)
               if report.user_messages else "no user message")
        lines.append(f"Keypresses: the caller pressed {' '.join(report.keypresses)}; "
                     f"the model got {got}")
    if bye is not None and bye.requests and bye.goodbye_played_at is not None:
        lines.append(f"Hang-up: the caller heard {bye.heard_ms:.0f} ms of the "
                     f"{bye.produced_ms:.0f} ms goodbye; Twilio was asked to hang up "
                     f"{_after(bye.requests[0] - bye.goodbye_played_at)} it had played.")
    lines += report.notes
    lines += [f"The call ended: {report.reason}."] if report.reason is not None else []
    return "\n".join(lines)


def _after(seconds: float) -> str:
    return f"{abs(seconds) * 1000:.0f} ms {'after' if seconds >= 0 else 'BEFORE'}"


# --- building the timeline from the peers' records -------------------------------------


class _Timeline:
    """The peers' records read into timeline entries and the report's measures.

    The model's log (`ServerSession.timeline`: every frame, in and out, in order) is
    walked once; each event kind it tells of has its handler. The caller's records
    say what was played when: a `media` chunk belongs to the assistant item whose
    first delta the model sent last before the chunk reached the phone.
    """

    def __init__(self, caller: TwilioCaller, model: LocalRealtimeServer, twilio: LocalTwilio,
                 scenario: Scenario, clocked: Clocked) -> None:
        self.caller, self.model, self.t0 = caller, model, caller.t0
        self.twilio, self.request_times = twilio, clocked.requests
        self.scenario, self.controls = scenario, list(clocked.controls)
        # who sends the model its client events: callbridge, or the platform in front
        self.client = "bridge" if scenario.platform is None else scenario.backend
        # the stream ended (`stop`) where the caller's audio did: after its last frame
        self.end = caller.t0 + len(caller.sent_audio) / BYTES_PER_S
        self.goodbye: str | None = None  # the response that called end_call
        self.entries: list[Entry] = [Entry(0.0, "twilio",
                                           f"call starts: stream {caller.stream_sid}")]
        self.interruptions: list[Interruption] = []
        self.latencies: list[float] = []
        self.tools: dict[str, ToolUse] = {}  # call_id -> the call, in call order
        self.user_messages: list[str] = []
        # what the caller's phone played: (receive time, Heard)
        media = [t for t, m in caller.received if isinstance(m, tw.Media)]
        self.heard = list(zip(media, caller.heard, strict=True))
        self.transcripts = {r.id: r.transcript for s in model.sessions for r in s.responses}
        self.produced = {k: len(v) for s in model.sessions for k, v in s.produced.items()}
        # what the model sent and received, when (one session: the demo's call)
        self.log = [(at, direction, json.loads(text)) for s in model.sessions
                    for at, direction, text in s.timeline]
        self.first_delta: dict[str, float] = {}
        self.response_of: dict[str, str] = {}
        for at, direction, event in self.log:
            if direction == "out" and event["type"] == "response.output_audio.delta":
                self.first_delta.setdefault(event["item_id"], at)
                self.response_of.setdefault(event["item_id"], event["response_id"])
        starts = sorted((at, item) for item, at in self.first_delta.items())
        self.played: dict[str, list[Heard]] = {}
        for t, h in self.heard:
            item = next((item for at, item in reversed(starts) if at <= t), None)
            if item is not None:
                self.played.setdefault(item, []).append(h)
        # what may have made the agent speak: its latency runs from the latest one
        self.triggers: list[tuple[float, str]] = [(self.t0, "the call started")]
        self._handlers: dict[tuple[str, str], Callable[[float, dict[str, Any]], None]] = {
            ("in", "session.update"): self._session_update,
            ("in", "response.create"): self._response_create,
            ("in", "conversation.item.create"): self._item_create,
            ("in", "conversation.item.truncate"): self._truncate,
            ("out", "input_audio_buffer.speech_started"): self._speech_started,
            ("out", "input_audio_buffer.speech_stopped"): self._speech_stopped,
            ("out", "response.function_call_arguments.done"): self._function_call,
            ("out", "response.output_audio.delta"): self._audio_delta,
            ("out", "response.done"): self._response_done,
        }

    def add(self, at: float, who: str, what: str) -> None:
        """An entry at trio time `at`."""
        self.entries.append(Entry(at - self.t0, who, what))

    def _controls_before(self, at: float, *, until: bool = False) -> None:
        """The platform's messages that came before `at` (or `until` it): after what
        the model did to make them, before what callbridge did about them."""
        while self.controls and (self.controls[0][0] <= at if until
                                 else self.controls[0][0] < at):
            when, message = self.controls.pop(0)
            if (what := self.scenario.control(message)) is not None:
                self.add(when, self.client, what)

    def heard_ms(self, item: str) -> float:
        return sum(len(h.played(self.end)) for h in self.played.get(item, [])) / tw.BYTES_PER_MS

    def report(self, placed: Placed, vapi: LocalVapi | None) -> DemoReport:
        caller, t0 = self.caller, self.t0
        for (at, text, _), u in zip(self.scenario.caller_lines, caller.utterances, strict=True):
            self.add(t0 + at, "caller", f'"{text}" ({u.duration:.1f} s)')
            self.triggers.append((t0 + at + u.duration, "the caller stopped"))
        for at, key in caller.dtmf:
            self.add(t0 + at, "caller", f"presses {key} (dtmf)")
            self.triggers.append((t0 + at, f"the caller pressed {key}"))
        for at, direction, event in self.log:
            self._controls_before(at)
            handler = self._handlers.get((direction, event["type"]))
            if handler is not None:
                handler(at, event)
        self._controls_before(float("inf"))
        hang_up = self._hang_up()
        ended = caller.call_sid in self.twilio.hangups  # by Twilio: the caller did not hang up
        self.add(self.end, *(("twilio", "stop (the call ends)") if ended
                             else ("caller", "hangs up (stop)")))
        self.entries.sort(key=lambda e: e.at)

        nbytes = len(caller.sent_audio)
        agent = bytearray(b"\xff" * nbytes)
        for _, h in self.heard:
            audio = h.played(self.end)
            pos = round((h.start - t0) * BYTES_PER_S)
            agent[pos : pos + len(audio)] = audio[: max(0, nbytes - pos)]
        return DemoReport(
            entries=self.entries, interruptions=self.interruptions,
            response_latencies=self.latencies,
            tool_uses=[u for u in self.tools.values() if u.name != end_call.name],
            keypresses="".join(key for _, key in caller.dtmf), user_messages=self.user_messages,
            hang_up=hang_up, reason=placed.reason, record=placed.record,
            caller_track=bytes(caller.sent_audio), agent_track=bytes(agent[:nbytes]),
            files=[], caller=caller, model=self.model, twilio=self.twilio, vapi=vapi,
            notes=self.scenario.notes)

    def _hang_up(self) -> HangUp | None:
        """The hang-up requests the local Twilio got, against the goodbye's playing."""
        items = [i for i, r in self.response_of.items() if r == self.goodbye]
        played_at = max((h.end if h.cut_at is None else h.cut_at
                         for i in items for h in self.played.get(i, [])), default=None)
        asked = [t for t, r in zip(self.request_times, self.twilio.requests, strict=False)
                 if r.get("Status") == "completed"]
        for at in asked:
            when = "" if played_at is None else (
                f", {_after(at - played_at)} the goodbye's last audio played")
            self.add(at, "bridge", f"asks Twilio to hang up (REST Status=completed){when}")
        return None if self.goodbye is None else HangUp(
            requests=[t - self.t0 for t in asked],
            goodbye_played_at=None if played_at is None else played_at - self.t0,
            heard_ms=sum(self.heard_ms(i) for i in items),
            produced_ms=sum(self.produced.get(i, 0) for i in items) / tw.BYTES_PER_MS)

    # --- what the bridge sent the model ----------------------------------------------

    def _session_update(self, at: float, event: dict[str, Any]) -> None:
        names = [t.get("name", t.get("type")) for t in event["session"].get("tools") or []]
        tools = f"; tools: {', '.join(names)}" if names else ""
        what = "audio/pcmu both ways, server VAD" if self.client == "bridge" else "its assistant"
        self.add(at, self.client, f"session.update: {what}{tools}")

    def _response_create(self, at: float, event: dict[str, Any]) -> None:
        purpose = ((event.get("response") or {}).get("metadata") or {}).get("callbridge", "")
        what = (PURPOSES.get(purpose, "asks for a response") if self.client == "bridge"
                else "asks for its assistant's first message")
        self.add(at, self.client, f"{what}: response.create, metadata {purpose or 'none'}")
        if purpose == "filler":
            self.triggers.append((at, "the bridge asked for it"))
            running = [k for k, use in self.tools.items() if use.output is None]
            if running:
                use = self.tools[running[-1]]
                self.tools[running[-1]] = attrs.evolve(use, fillers=use.fillers + 1)

    def _item_create(self, at: float, event: dict[str, Any]) -> None:
        item = event["item"]
        if item["type"] == "function_call_output":
            use = self.tools.get(item["call_id"])
            if use is not None:
                self.tools[item["call_id"]] = attrs.evolve(
                    use, output=item["output"], seconds=at - self.t0 - use.called_at)
            self.triggers.append((at, "the tool returned"))
            name = "an unknown call" if use is None else use.name
            self.add(at, "bridge", f"function_call_output of {name}: {item['output']}")
        elif item["type"] == "message":
            text = "\n".join(p.get("text", "") for p in item.get("content") or [])
            if item.get("role") == "user":
                self.user_messages.append(text)
            self.add(at, "bridge", f'{item.get("role")} message: "{text}"')

    def _truncate(self, at: float, event: dict[str, Any]) -> None:
        item, claimed = event["item_id"], event["audio_end_ms"]
        done_ms = self.produced.get(item, 0) / tw.BYTES_PER_MS
        self.add(at, "bridge", f"truncate {item} at {claimed} ms (the caller heard "
                 f"{self.heard_ms(item):.0f} ms of {done_ms:.0f} ms produced)")
        if self.interruptions:
            self.interruptions[-1] = attrs.evolve(
                self.interruptions[-1], item_id=item, claimed_ms=claimed,
                heard_ms=self.heard_ms(item), produced_ms=done_ms)

    # --- what the model sent ---------------------------------------------------------

    def _speech_started(self, at: float, event: dict[str, Any]) -> None:
        what = f"hears the caller: speech_started (input audio at {event['audio_start_ms']} ms)"
        if not any(h.start <= at < h.end for _, h in self.heard):
            self.add(at, "model", what)
            return
        self.add(at, "model", f"{what}, while the agent is playing: BARGE-IN")
        clear = next((c for c in self.caller.clears if c >= at), None)
        clear_ms = None if clear is None else (clear - at) * 1000
        self.interruptions.append(Interruption(speech_started_at=at - self.t0,
                                               clear_ms=clear_ms))
        if clear is not None:
            self._controls_before(clear, until=True)
            self.add(clear, "twilio", f"clear: the phone stops playing {clear_ms:.1f} ms "
                     "after speech_started")

    def _speech_stopped(self, at: float, event: dict[str, Any]) -> None:
        self.add(at, "model", "caller finished (speech_stopped after the VAD's silence): "
                 "answering")

    def _function_call(self, at: float, event: dict[str, Any]) -> None:
        self.tools[event["call_id"]] = ToolUse(name=event["name"], arguments=event["arguments"],
                                               called_at=at - self.t0)
        bye = event["name"] == end_call.name
        self.goodbye = event["response_id"] if bye else self.goodbye
        self.add(at, "model", f"calls {event['name']}({event['arguments']}) "
                 f"{'after its goodbye, in the same response ' * bye}"
                 "(function_call_arguments.done)")

    def _audio_delta(self, at: float, event: dict[str, Any]) -> None:
        item = event["item_id"]
        if self.first_delta.get(item) != at or item not in self.played:
            return  # an item's first delta stands for it, once its audio was played
        start = self.played[item][0].start
        trigger_at, why = max((t, w) for t, w in self.triggers if t <= start)
        self.latencies.append(start - trigger_at)
        text = self.transcripts.get(self.response_of[item], "")
        self.add(start, "agent", f'"{text}" (audio {(start - trigger_at) * 1000:.0f} ms '
                 f"after {why})")

    def _response_done(self, at: float, event: dict[str, Any]) -> None:
        response = event["response"]
        items = [o["id"] for o in response["output"]]
        made = sum(self.produced.get(i, 0) for i in items) / BYTES_PER_S
        if response["status"] == "cancelled":
            reason = (response.get("status_details") or {}).get("reason")
            self.add(at, "model", f"response cancelled ({reason}) after {made:.1f} s of audio")
        elif items and items[0] in self.first_delta:
            took = at - self.first_delta[items[0]]
            self.add(at, "model", f"done generating: {made:.1f} s of audio in {took:.1f} s "
                     "(the phone plays it in real time)")
