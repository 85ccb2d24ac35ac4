"""The synthetic Twilio against the protocol reference (protocols.md, part A): what it
sends, field by field, and how it plays what it receives (marks, `clear`)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import trio

from callbridge import memory_socket_pair
from callbridge._sockets import MemorySocket
from callbridge.testing import TwilioCaller, Utterance

SID = "MZ00000000000000000000000000000001"


async def run_with(caller: TwilioCaller, bridge: Any) -> list[tuple[float, dict[str, Any]]]:
    """Run `caller` against `bridge(socket, inbox)`; returns what the caller sent, timed."""
    twilio_end, bridge_end = memory_socket_pair()
    inbox: list[tuple[float, dict[str, Any]]] = []

    async def read() -> None:
        while (text := await bridge_end.receive()) is not None:
            assert isinstance(text, str)
            inbox.append((trio.current_time(), json.loads(text)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(bridge, bridge_end, inbox)
        await caller.run(twilio_end)
        nursery.cancel_scope.cancel()
    return inbox


async def idle(socket: MemorySocket, inbox: list[Any]) -> None:
    await trio.sleep_forever()


async def test_what_the_caller_sends_matches_the_reference(autojump_clock: object) -> None:
    caller = TwilioCaller(utterances=[Utterance(at=0.1, duration=0.1)], hangup_at=0.3,
                          dtmf=[(0.15, "5")], custom_parameters={"FirstName": "Jane"})
    inbox = await run_with(caller, idle)
    events = [m for _, m in inbox]
    assert events[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = events[1]
    assert start == {
        "event": "start", "sequenceNumber": "1", "streamSid": SID,
        "start": {"accountSid": caller.account_sid, "streamSid": SID,
                  "callSid": caller.call_sid, "tracks": ["inbound"],
                  "customParameters": {"FirstName": "Jane"},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                  "channels": 1}}}
    # every message after `connected` counts, as a string, from "1"
    assert [m["sequenceNumber"] for m in events[1:]] == [str(n) for n in range(1, len(events))]
    media = [(t, m) for t, m in inbox if m["event"] == "media"]
    assert len(media) == 15  # 300 ms of 20 ms frames
    for n, (t, m) in enumerate(media):
        assert set(m) == {"event", "sequenceNumber", "media", "streamSid"}
        assert m["media"]["track"] == "inbound" and m["media"]["chunk"] == str(n + 1)
        assert m["media"]["timestamp"] == str(20 * n) and t == pytest.approx(0.02 * n)
        assert len(base64.b64decode(m["media"]["payload"])) == 160
    [dtmf] = [m for m in events if m["event"] == "dtmf"]
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert events[-1] == {"event": "stop", "sequenceNumber": events[-1]["sequenceNumber"],
                          "streamSid": SID, "stop": {"accountSid": caller.account_sid,
                                                     "callSid": caller.call_sid}}
    assert b"".join(base64.b64decode(m["media"]["payload"]) for _, m in media) == bytes(
        caller.sent_audio)


def media(payload: bytes) -> str:
    return json.dumps({"event": "media", "streamSid": SID,
                       "media": {"payload": base64.b64encode(payload).decode()}})


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": name}})


async def test_marks_echo_after_the_audio_before_them_has_played(autojump_clock: object) -> None:
    async def bridge(socket: MemorySocket, inbox: list[Any]) -> None:
        await trio.sleep(0.1)
        await socket.send(mark("idle"))  # nothing queued: echoed at once
        await socket.send(media(b"\x01" * 8000))  # one second
        await socket.send(mark("one-second"))
        await socket.send(media(b"\x02" * 800))
        await socket.send(mark("then-100ms"))

    caller = TwilioCaller(hangup_at=2.0)
    inbox = await run_with(caller, bridge)
    echoes = {m["mark"]["name"]: t for t, m in inbox if m["event"] == "mark"}
    assert echoes == pytest.approx({"idle": 0.1, "one-second": 1.1, "then-100ms": 1.2})
    assert caller.heard_audio() == b"\x01" * 8000 + b"\x02" * 800
    assert caller.violations == []


async def test_clear_discards_unplayed_audio_and_echoes_every_pending_mark(
        autojump_clock: object) -> None:
    async def bridge(socket: MemorySocket, inbox: list[Any]) -> None:
        await trio.lowlevel.checkpoint()  # let `start` go first
        for n in range(5):
            await socket.send(media(bytes([n + 1]) * 1600))  # 200 ms each
            await socket.send(mark(f"m{n}"))
        await trio.sleep(0.5)
        await socket.send(json.dumps({"event": "clear", "streamSid": SID}))

    caller = TwilioCaller(hangup_at=2.0)
    inbox = await run_with(caller, bridge)
    echoes = [(t, m["mark"]["name"]) for t, m in inbox if m["event"] == "mark"]
    assert [name for _, name in echoes] == ["m0", "m1", "m2", "m3", "m4"]
    assert [t for t, _ in echoes] == pytest.approx([0.2, 0.4, 0.5, 0.5, 0.5])
    assert caller.clears == [0.5]
    assert caller.heard_audio() == b"\x01" * 1600 + b"\x02" * 1600 + b"\x03" * 800


async def test_what_twilio_would_reject_is_recorded(autojump_clock: object) -> None:
    async def bridge(socket: MemorySocket, inbox: list[Any]) -> None:
        await trio.sleep(0.1)  # after `start`: anything earlier is a violation of its own
        await socket.send(json.dumps({"event": "media", "streamSid": SID,
                                      "media": {"payload": "AAAA", "track": "outbound"}}))
        await socket.send(json.dumps({"event": "mark", "streamSid": "MZwrong",
                                      "mark": {"name": "x"}}))
        await socket.send(json.dumps({"event": "hello", "streamSid": SID}))

    caller = TwilioCaller(hangup_at=0.5)
    await run_with(caller, bridge)
    assert len(caller.violations) == 3, caller.violations
