"""100 concurrent calls, one in ten misbehaving, on virtual time: the good ones intact.

All calls share one local model (one server, one session per connection), so a
bridge that mixed calls up would show: every caller says its own quiet line noise
from its first frame (`hiss`), every reply of the model is noise of its own, and
each session is traced back to its caller by content alone. The misbehaving tenth:
Twilio frames that are garbage (binary, not JSON, malformed, unknown), frames of
another stream, a caller who hangs up mid-greeting, a model connection that drops.
A row of docs/faults.md.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from test_model_faults import Dropping
from test_service import hiss

from callbridge import Agent, EndReason, memory_socket_pair, run_call
from callbridge import events as ev
from callbridge.backend import RealtimeConnection
from callbridge.local import LocalRealtimeServer, Reply, ServerSession
from callbridge.testing import SimulatedCall, TwilioCaller, Utterance

FRAME = 160
CALLS = 100
AGENT = Agent(greeting="Greet the caller.", idle_timeout=None)

GARBAGE: list[str | bytes] = [
    b"\x00\x01\x02", "not json", "[]", '{"event": "media"}', '{"event": "someday"}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":7}}',
]


class Garbage:
    """Twilio's frames, with a malformed one before every tenth."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.n = inner, 0

    async def send(self, text: str) -> None:
        await self.inner.send(text)

    async def receive(self) -> str | bytes | None:
        self.n += 1
        if self.n % 10 == 0:
            return GARBAGE[self.n // 10 % len(GARBAGE)]
        return await self.inner.receive()  # type: ignore[no-any-return]

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)


class Strays(Garbage):
    """Twilio's frames, media chunks 5 to 7 relabelled as another stream's."""

    async def receive(self) -> str | bytes | None:
        text = await self.inner.receive()
        if isinstance(text, str):
            raw = json.loads(text)
            if raw["event"] == "media" and raw["media"]["chunk"] in ("5", "6", "7"):
                raw["streamSid"] = "MZ" + "f" * 32
                return json.dumps(raw)
        return text  # type: ignore[no-any-return]


class DropsFirst:
    """A call's own view of the shared model: its first connection dies `at` s in."""

    def __init__(self, inner: LocalRealtimeServer, at: float) -> None:
        self.inner, self.at, self.connections = inner, at, 0

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        self.connections += 1
        async with self.inner.connect(model) as connection:
            yield Dropping(connection, self.at) if self.connections == 1 else connection


def distinct_replies(ms: int) -> Callable[[Any], Reply]:
    """Every reply `ms` of noise no other reply shares."""
    count = itertools.count()
    return lambda turn: Reply(audio=random.Random(next(count)).randbytes(ms * 8))


def kind_of(i: int) -> str:
    """One call in ten misbehaves, each way two or three times."""
    if i % 10 != 3:
        return "good"
    return ["garbage", "strays", "hangs-up-early", "model-drops"][i // 10 % 4]


async def one_call(i: int, model: LocalRealtimeServer) -> tuple[str, SimulatedCall]:
    kind = kind_of(i)
    caller = TwilioCaller(
        # loud speech after the greeting has played (it wins over the hiss there)
        utterances=[Utterance(at=1.2, duration=0.4), Utterance.recorded(hiss(i, 4000), at=0.0)],
        hangup_at=0.3 if kind == "hangs-up-early" else 3.5,
        stream_sid=f"MZ{i:032x}", call_sid=f"CA{i:032x}")
    backend: Any = DropsFirst(model, 1.0) if kind == "model-drops" else model
    wrap: Any = {"garbage": Garbage, "strays": Strays}.get(kind, lambda s: s)
    events: list[ev.CallEvent] = []
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(wrap(bridge_end), agent=AGENT, backend=backend,
                                on_event=events.append)
    return kind, SimulatedCall(result=result, caller=caller, model=model, events=events)


def owner(session: ServerSession, callers: list[TwilioCaller]) -> list[TwilioCaller]:
    """The callers whose audio this session heard (by its first frame)."""
    first = bytes(session.input_audio[:FRAME])
    return [c for c in callers if len(first) == FRAME and first in bytes(c.sent_audio)]


async def test_100_calls_one_in_ten_misbehaving_leave_the_good_ones_bit_exact(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = LocalRealtimeServer(distinct_replies(600))
    runs: list[tuple[str, SimulatedCall]] = []

    async def run(i: int) -> None:
        runs.append(await one_call(i, model))

    async with trio.open_nursery() as nursery:
        for i in range(CALLS):
            nursery.start_soon(run, i)

    callers = [r.caller for _, r in runs]
    sessions: dict[int, list[ServerSession]] = {id(c): [] for c in callers}
    for session in model.sessions:
        [caller] = owner(session, callers)  # one caller per session, always
        sessions[id(caller)].append(session)
    assert all(s.closed for s in model.sessions)
    kinds = sorted(kind for kind, _ in runs)
    assert kinds.count("good") == 90
    assert len(model.sessions) == CALLS + kinds.count("model-drops")  # one reconnect each

    problems: dict[str, list[str]] = {}
    for kind, r in runs:
        mine = sessions[id(r.caller)]
        heard, sent = r.caller.heard_audio(), bytes(r.caller.sent_audio)
        got = b"".join(bytes(s.input_audio) for s in mine)
        said = b"".join(bytes(a) for s in mine for a in s.produced.values())
        stats, found = r.result.stats, []
        if r.result.reason is not EndReason.CALLER_HANGUP:
            found.append(f"ended {r.result.reason}")
        if r.caller.violations:
            found.append(f"Twilio would reject: {r.caller.violations[:2]}")
        if any(e["type"] == "error" for s in mine for e in map(json.loads, s.sent)):
            found.append("the model sent an error")
        expected_in = sent
        errors = stats.protocol_errors if kind == "garbage" else 0
        if kind == "strays":  # the three relabelled frames are dropped, and counted;
            errors = 3  # the hole they leave on Twilio's clock is filled with silence
            expected_in = sent[:4 * FRAME] + b"\xff" * 3 * FRAME + sent[7 * FRAME:]
        if got != expected_in:
            found.append("the model's input is not the caller's audio, whole and in order")
        if kind == "garbage" and errors < 10:
            found.append(f"{errors} garbage frames counted")
        if stats.protocol_errors != errors:
            found.append(f"{stats.protocol_errors} protocol errors, not {errors}")
        if kind == "hangs-up-early":  # what had played when it hung up, mid-greeting
            heard = r.caller.heard_audio(r.caller.t0 + r.caller.hangup_at)
            if not (heard and said.startswith(heard) and len(heard) < len(said)):
                found.append("what was heard is not a part of the greeting")
        elif heard != said or len(heard) != 2 * 600 * 8:
            found.append(f"heard {len(heard)} bytes, not the {len(said)} the model said")
        if stats.model_connections != (2 if kind == "model-drops" else 1):
            found.append(f"{stats.model_connections} model connections")
        if found:
            problems[f"{r.caller.stream_sid} ({kind})"] = found
    assert problems == {}, problems
