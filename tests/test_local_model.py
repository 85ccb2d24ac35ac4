"""The local realtime server: a faithful OpenAI Realtime GA peer on trio's MockClock.

Every server event these tests receive is validated against the openai SDK's GA
server-event models (pydantic), with no fields the schema lacks, so the local
peer cannot drift from the real wire shapes unnoticed.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pydantic
import pytest
import trio
import trio.testing
from openai.types.realtime.realtime_server_event import RealtimeServerEvent

from callbridge import _mulaw, codec
from callbridge import realtime as rt
from callbridge._sockets import MemorySocket, memory_socket_pair
from callbridge.agent import Agent
from callbridge.backend import RealtimeBackend
from callbridge.local import (
    LocalRealtimeServer,
    Reply,
    echo_brain,
    pattern_audio,
    scripted_brain,
    tone_brain,
)
from callbridge.local._audio import SpeechDetector, tone

# --- schema validation ---------------------------------------------------------------

_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeServerEvent)
_MODELS = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(RealtimeServerEvent)[0])
}
# the real session.created / session.updated carry these too; the SDK type does not
_ALLOWED_EXTRAS = {"session.id", "session.object"}


def _extras(value: Any, path: str) -> list[str]:
    """Fields present on the wire but unknown to the SDK model (it allows extras)."""
    if isinstance(value, pydantic.BaseModel):
        found = [f"{path}.{key}".lstrip(".") for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _extras(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in _extras(v, f"{path}[{i}]")]
    return []


def validate_server_event(text: str) -> dict[str, Any]:
    raw = json.loads(text)
    model = _ADAPTER.validate_python(raw)
    assert type(model) is _MODELS[raw["type"]], raw["type"]
    unknown = set(_extras(model, "")) - _ALLOWED_EXTRAS
    assert not unknown, f"{raw['type']} has fields the GA schema lacks: {sorted(unknown)}"
    assert raw["event_id"].startswith("event_")
    return typing.cast(dict[str, Any], raw)


def test_validator_rejects_what_the_real_api_would_not_send() -> None:
    good = ('{"type":"input_audio_buffer.speech_started","event_id":"event_1",'
            '"audio_start_ms":1,"item_id":"item_1"}')
    validate_server_event(good)
    with pytest.raises(pydantic.ValidationError):
        validate_server_event(good.replace('"audio_start_ms":1,', ""))
    with pytest.raises(AssertionError, match="lacks"):
        validate_server_event(good.replace('"audio_start_ms"', '"extra":0,"audio_start_ms"'))


# --- helpers ---------------------------------------------------------------------------

SILENCE = b"\xff" * 8  # 1 ms


def silence(ms: int) -> bytes:
    return SILENCE * ms


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def vad_update(
    *, prefix: int = 300, silence_ms: int = 500, create: bool = True, interrupt: bool = True
) -> rt.SessionUpdate:
    return rt.SessionUpdate(session=rt.Session(audio=rt.AudioConfig(input=rt.AudioInput(
        turn_detection=rt.TurnDetection(
            type="server_vad", threshold=0.5, prefix_padding_ms=prefix,
            silence_duration_ms=silence_ms, create_response=create, interrupt_response=interrupt),
    ))))


class Client:
    """The bridge's side, speaking raw JSON frames; every event is schema-checked."""

    def __init__(self, socket: MemorySocket) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []

    async def send(self, event: rt.ClientEvent | str | bytes) -> None:
        text = event if isinstance(event, (str, bytes)) else codec.encode(event)
        await self.socket.send(text)

    async def append(self, audio: bytes, frame: int = 160) -> None:
        for i in range(0, len(audio), frame):
            await self.send(rt.InputAudioBufferAppend(audio=b64(audio[i : i + frame])))

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(30):  # virtual seconds: a missing event fails, never hangs
            text = await self.socket.receive()
        assert isinstance(text, str), "server closed"
        event = validate_server_event(text)
        self.events.append(event)
        self.times.append(trio.current_time())
        return event

    async def recv_until(self, kind: str) -> list[dict[str, Any]]:
        events = [await self.recv()]
        while events[-1]["type"] != kind:
            events.append(await self.recv())
        return events

    async def update(self, event: rt.SessionUpdate | str) -> dict[str, Any]:
        await self.send(event)
        (updated,) = await self.recv_until("session.updated")
        return updated


@asynccontextmanager
async def open_client(server: LocalRealtimeServer) -> AsyncIterator[Client]:
    client_end, server_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, server_end)
        client = Client(client_end)
        first = await client.recv()
        assert first["type"] == "session.created"
        yield client
        await client_end.aclose()
    assert server.sessions[-1].closed


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def audio_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events
                    if e["type"] == "response.output_audio.delta")


RESPONSE_HEAD = ["response.created", "response.output_item.added", "conversation.item.added",
                 "response.content_part.added"]
RESPONSE_TAIL = ["response.output_audio.done", "response.output_audio_transcript.done",
                 "response.content_part.done", "response.output_item.done",
                 "conversation.item.done", "response.done"]


# --- μ-law and brains (synchronous) ------------------------------------------------------


def test_mulaw_decode_matches_g711() -> None:
    assert _mulaw.decode(b"\xff\x7f\x00\x80") == [0, 0, -32124, 32124]
    for sample in (-32768, -1000, -1, 0, 1, 1000, 32767):
        decoded = _mulaw.decode(bytes([_mulaw.encode_sample(sample)]))[0]
        assert abs(decoded - sample) <= max(16, abs(sample) // 16)
    assert _mulaw.dbfs(silence(20)) == -math.inf
    assert -10 < _mulaw.dbfs(tone(20)) < -8


def test_pattern_audio_is_deterministic_prefix_stable_and_never_silent() -> None:
    a = pattern_audio(3, 4000)
    assert a == pattern_audio(3, 4000) == pattern_audio(3, 8000)[:4000]
    assert a != pattern_audio(4, 4000)
    assert b"\xff" not in pattern_audio(0, 80000) and b"\x7f" not in pattern_audio(0, 80000)
    assert _mulaw.dbfs(a) > -20


def test_speech_detector_fires_on_the_input_clock() -> None:
    detector = SpeechDetector()
    audio = bytearray()
    seen: list[tuple[int, str, int]] = []
    for chunk in [silence(100), tone(40), silence(20), tone(100), silence(300)]:
        for i in range(0, len(chunk), 160):
            audio += chunk[i : i + 160]
            events = detector.feed(audio, threshold_db=-35, min_speech_ms=60, silence_ms=200)
            seen += [(len(audio) // 8, kind, ms) for kind, ms in events]
    # the 40 ms blip is too short; speech starts at 160 ms, declared once 60 ms long
    assert seen == [(220, "speech_started", 160), (460, "speech_stopped", 460)]


def test_brains() -> None:
    one, two = Reply(audio=b"\x01" * 8, transcript="one"), Reply(audio=b"\x02" * 8)
    scripted = scripted_brain([one, two])
    assert [scripted(b""), scripted(b"x"), scripted(b"")] == [one, two, None]
    toned = tone_brain(300)(b"")
    assert toned is not None and toned.audio == tone(300)
    speech = tone(100, hz=300)
    echoed = echo_brain()(silence(60) + speech + silence(200))
    assert echoed is not None and echoed.audio == speech
    assert echo_brain()(silence(500)) is None


# --- session ---------------------------------------------------------------------------


async def test_session_created_first_then_updates_merge(autojump_clock: Any) -> None:
    server = LocalRealtimeServer()
    async with open_client(server) as client:
        created = client.events[0]["session"]
        assert created["id"].startswith("sess_") and created["type"] == "realtime"
        assert created["model"] == "gpt-realtime"
        assert created["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert created["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        assert created["audio"]["input"]["turn_detection"]["type"] == "server_vad"

        agent = Agent()
        updated = (await client.update(agent.session_update()))["session"]
        assert updated["id"] == created["id"] and updated["instructions"] == agent.instructions
        assert updated["audio"]["input"]["turn_detection"] == {
            "type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 300,
            "silence_duration_ms": 600, "idle_timeout_ms": None, "create_response": True,
            "interrupt_response": True}
        assert updated["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
        assert updated["audio"]["output"]["voice"] == "marin"
        assert updated["tools"] == [] and updated["max_output_tokens"] == "inf"  # kept

        # a partial turn_detection replaces the object; omitted fields take defaults
        partial = ('{"type":"session.update","session":{"type":"realtime","audio":{"input":'
                   '{"turn_detection":{"type":"server_vad","silence_duration_ms":800}}}}}')
        vad = (await client.update(partial))["session"]["audio"]["input"]["turn_detection"]
        assert (vad["threshold"], vad["prefix_padding_ms"], vad["silence_duration_ms"]) == (
            0.5, 300, 800)
        assert "event_id" not in updated  # session.updated does not echo the client's id
    state = server.sessions[0]
    assert state.session_updates == 2 and not state.appends_before_session_update


async def test_audio_before_session_update_is_recorded(autojump_clock: Any) -> None:
    server = LocalRealtimeServer()
    async with open_client(server) as client:
        await client.append(silence(40))
        await client.update(vad_update())
        await client.append(silence(40))
    state = server.sessions[0]
    assert state.appends_before_session_update and state.input_ms == 80


# --- VAD -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "silence_ms", "start", "end"),
    [(300, 500, 700, 2000), (0, 200, 1000, 1700), (600, 1000, 400, 2500), (1500, 500, 0, 2000)],
)
async def test_vad_timings_follow_the_input_clock(
    autojump_clock: Any, prefix: int, silence_ms: int, start: int, end: int
) -> None:
    server = LocalRealtimeServer()
    caller = silence(1000) + tone(500) + silence(1000)
    async with open_client(server) as client:
        await client.update(vad_update(prefix=prefix, silence_ms=silence_ms, create=False))
        t0 = trio.current_time()
        await client.append(caller)
        events = await client.recv_until("conversation.item.done")
        assert trio.current_time() == t0  # driven by appends, not by sleeping
    assert types(events) == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    started, stopped, committed, added, _ = events
    assert started["audio_start_ms"] == start and stopped["audio_end_ms"] == end
    item_id = started["item_id"]
    assert item_id.startswith("item_")
    assert stopped["item_id"] == committed["item_id"] == added["item"]["id"] == item_id
    assert added["item"]["role"] == "user"
    state = server.sessions[0]
    # speech_started went out when the append reaching 1060 ms arrived (60 ms of speech)
    assert state.vad_log == [("input_audio_buffer.speech_started", start, 1060),
                             ("input_audio_buffer.speech_stopped", end, end)]
    assert state.turns == [caller[start * 8 : end * 8]]
    assert state.responses == []


async def test_vad_turn_is_answered_by_the_brain(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(echo_brain())
    speech = tone(500, hz=300)
    async with open_client(server) as client:
        await client.update(vad_update())
        await client.append(silence(1000) + speech + silence(600))
        events = await client.recv_until("response.done")
    assert types(events)[-len(RESPONSE_TAIL):] == RESPONSE_TAIL
    assert audio_of(events) == speech
    assert events[-1]["response"]["status"] == "completed"


async def test_silent_brain_means_no_response(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(scripted_brain([]))
    async with open_client(server) as client:
        await client.update(vad_update())
        await client.append(silence(200) + tone(300) + silence(600))
        await client.recv_until("conversation.item.done")
        await client.send(rt.ResponseCancel(event_id="probe"))
        (error,) = await client.recv_until("error")
        assert error["error"]["code"] == "response_cancel_not_active"
    assert server.sessions[0].responses == []


async def test_vad_off_manual_commit_and_response(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(echo_brain())
    speech = tone(200, hz=500)
    async with open_client(server) as client:
        # `turn_detection: null` (realtime.py cannot express it: None means "omit")
        off = ('{"type":"session.update","session":{"type":"realtime",'
               '"audio":{"input":{"turn_detection":null}}}}')
        assert (await client.update(off))["session"]["audio"]["input"]["turn_detection"] is None
        await client.append(silence(40))
        await client.send(rt.InputAudioBufferCommit(event_id="c1"))
        (error,) = await client.recv_until("error")
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["message"] == (
            "Error committing input audio buffer: buffer too small. Expected at least 100ms "
            "of audio, but buffer only has 40.00ms of audio.")
        assert error["error"]["event_id"] == "c1"
        await client.append(speech + silence(100))
        await client.send(rt.InputAudioBufferCommit())
        events = await client.recv_until("conversation.item.done")
        assert types(events)[0] == "input_audio_buffer.committed"  # no VAD events
        await client.send(rt.ResponseCreate())
        events = await client.recv_until("response.done")
        assert audio_of(events) == speech  # the brain heard the committed turn
        await client.append(silence(200))
        await client.send(rt.InputAudioBufferClear())
        assert types(await client.recv_until("input_audio_buffer.cleared")) == [
            "input_audio_buffer.cleared"]
    assert server.sessions[0].turns == [silence(40) + speech + silence(100)]


# --- responses -------------------------------------------------------------------------


async def test_response_events_in_order_and_faster_than_real_time(autojump_clock: Any) -> None:
    server = LocalRealtimeServer()  # no brain: 1 s of pattern_audio(0, ...)
    async with open_client(server) as client:
        t0 = trio.current_time()
        await client.send(rt.ResponseCreate(response={"instructions": "Greet the caller."}))
        events = await client.recv_until("response.done")
        elapsed = trio.current_time() - t0
    assert types(events) == RESPONSE_HEAD + ["response.output_audio.delta"] * 10 + RESPONSE_TAIL
    created, added = events[0], events[1]
    response_id, item_id = created["response"]["id"], added["item"]["id"]
    assert response_id.startswith("resp_") and item_id.startswith("item_")
    assert created["response"]["status"] == "in_progress"
    for event in events[1:-1]:
        assert event.get("response_id", response_id) == response_id
        assert event.get("item_id", item_id) == item_id
    audio = audio_of(events)
    assert audio == pattern_audio(0, 8000)
    assert {len(base64.b64decode(e["delta"])) for e in events[4:14]} == {800}
    # 1 s of audio in 0.1 s of virtual time: 100 ms chunks, 10 ms apart
    assert elapsed == pytest.approx(0.1)
    delta_times = client.times[-len(events) + 4 : -len(RESPONSE_TAIL)]
    assert [round(b - a, 6) for a, b in itertools.pairwise(delta_times)] == [0.01] * 9
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["status_details"] is None
    assert done["output"][0]["id"] == item_id and done["output"][0]["status"] == "completed"
    assert server.sessions[0].produced[item_id] == audio
    ids = [e["event_id"] for e in client.events]
    assert len(ids) == len(set(ids))


async def test_second_response_create_while_active_is_rejected(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(tone_brain(500))
    async with open_client(server) as client:
        await client.send(rt.ResponseCreate())
        await client.send(rt.ResponseCreate(event_id="evt_second"))
        events = await client.recv_until("error")
        assert types(events) == [*RESPONSE_HEAD, "error"]
        response_id = events[0]["response"]["id"]
        assert events[-1]["error"] == {
            "type": "invalid_request_error", "code": "conversation_already_has_active_response",
            "message": f"Conversation already has an active response in progress: {response_id}. "
                       "Wait until the response is finished before creating a new one.",
            "event_id": "evt_second"}
        events = await client.recv_until("response.done")
        assert events[-1]["response"]["status"] == "completed"
        assert audio_of(events) == tone(500)
        # once done, a new response is fine
        await client.send(rt.ResponseCreate())
        assert (await client.recv_until("response.done"))[-1]["response"]["status"] == "completed"


async def test_cancel_with_nothing_active(autojump_clock: Any) -> None:
    async with open_client(LocalRealtimeServer()) as client:
        await client.send(rt.ResponseCancel(event_id="evt_c"))
        (error,) = await client.recv_until("error")
    assert error["error"] == {"type": "invalid_request_error", "code": "response_cancel_not_active",
                              "message": "Cancellation failed: no active response found",
                              "event_id": "evt_c"}


async def test_client_cancel_stops_streaming(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(tone_brain(3000))
    async with open_client(server) as client:
        await client.send(rt.ResponseCreate())
        await client.recv_until("response.output_audio.delta")
        await client.send(rt.ResponseCancel(response_id="resp_other"))
        assert (await client.recv())["error"]["code"] == "response_cancel_not_active"
        await client.send(rt.ResponseCancel())
        events = await client.recv_until("response.done")
        assert types(events) == RESPONSE_TAIL
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["output"][0]["status"] == "incomplete"
        await trio.sleep(1)  # nothing more comes: the stream really stopped
    record = server.sessions[0].responses[0]
    assert (record.status, record.reason) == ("cancelled", "client_cancelled")
    assert server.sessions[0].produced[record.item_id] == tone(3000)[:800]
    assert client.events[-1]["type"] == "response.done"


async def test_speech_cancels_the_active_response(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(tone_brain(5000), speedup=2.0)
    async with open_client(server) as client:
        await client.update(vad_update())
        await client.send(rt.ResponseCreate())
        head = await client.recv_until("response.output_audio.delta")
        await client.recv()  # a second delta: 200 ms produced
        first_response = head[0]["response"]["id"]
        await client.append(tone(100))
        events = await client.recv_until("response.done")
        assert types(events) == ["input_audio_buffer.speech_started", *RESPONSE_TAIL]
        done = events[-1]["response"]
        assert done["id"] == first_response and done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        item_id = done["output"][0]["id"]
        assert server.sessions[0].produced[item_id] == tone(5000)[:1600]

        # the bridge truncates what the caller heard; not beyond what was produced
        await client.send(rt.ConversationItemTruncate(item_id=item_id, audio_end_ms=250))
        assert (await client.recv())["error"]["message"] == (
            "Audio content of 200ms is already shorter than 250ms")
        await client.send(rt.ConversationItemTruncate(item_id=item_id, audio_end_ms=150))
        truncated = await client.recv()
        assert truncated["type"] == "conversation.item.truncated"
        assert truncated["audio_end_ms"] == 150

        # the caller's turn ends: a new response, and no delta of the cancelled one
        await client.append(silence(600))
        events = await client.recv_until("response.done")
        deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
        assert deltas and {e["response_id"] for e in deltas} == {events[-1]["response"]["id"]}
        assert events[-1]["response"]["id"] != first_response
    assert server.sessions[0].truncations == [(item_id, 150)]


async def test_no_interrupt_when_interrupt_response_is_off(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(tone_brain(2000))
    async with open_client(server) as client:
        await client.update(vad_update(interrupt=False))
        await client.send(rt.ResponseCreate())
        await client.recv_until("response.output_audio.delta")
        await client.append(tone(100) + silence(600))
        events = await client.recv_until("response.done")
    assert "input_audio_buffer.speech_started" in types(events)
    assert events[-1]["response"]["status"] == "completed"
    assert audio_of(client.events) == tone(2000)
    assert len(server.sessions[0].responses) == 1  # busy when the turn ended: no new response


# --- truncation --------------------------------------------------------------------------


async def test_truncate_rules(autojump_clock: Any) -> None:
    server = LocalRealtimeServer()
    async with open_client(server) as client:
        await client.send(rt.ResponseCreate())
        item_id = (await client.recv_until("response.content_part.added"))[1]["item"]["id"]

        # nothing produced yet (the first delta is still being generated)
        await client.send(
            rt.ConversationItemTruncate(item_id=item_id, audio_end_ms=0, event_id="t0"))
        error = (await client.recv())["error"]
        assert error == {"type": "invalid_request_error", "code": "unsupported_content_type",
                         "message": "Only model output audio messages can be truncated",
                         "event_id": "t0"}
        await client.recv_until("response.done")  # 1000 ms produced

        await client.send(rt.ConversationItemTruncate(item_id="item_nope", audio_end_ms=10))
        error = (await client.recv())["error"]
        assert error["code"] == "item_truncate_invalid_item_id" and "item_nope" in error["message"]

        await client.send(rt.ConversationItemTruncate(item_id=item_id, audio_end_ms=1001))
        error = (await client.recv())["error"]
        assert (error["type"], error["message"]) == (
            "invalid_request_error", "Audio content of 1000ms is already shorter than 1001ms")

        await client.send(rt.ConversationItemTruncate(item_id=item_id, audio_end_ms=1000))
        assert await client.recv() == {
            "type": "conversation.item.truncated", "event_id": client.events[-1]["event_id"],
            "item_id": item_id, "content_index": 0, "audio_end_ms": 1000}
        await client.send(rt.ConversationItemTruncate(item_id=item_id, audio_end_ms=400))
        assert (await client.recv())["audio_end_ms"] == 400
        await client.send(rt.ConversationItemTruncate(item_id=item_id, audio_end_ms=500))
        assert (await client.recv())["error"]["message"] == (
            "Audio content of 400ms is already shorter than 500ms")

        # a user message is not model audio
        await client.send(rt.ConversationItemCreate(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Caller pressed 1"}]}))
        added, _ = await client.recv_until("conversation.item.done")
        assert added["previous_item_id"] == item_id
        await client.send(rt.ConversationItemTruncate(item_id=added["item"]["id"], audio_end_ms=0))
        assert (await client.recv())["error"]["code"] == "unsupported_content_type"

        await client.send(rt.ConversationItemDelete(item_id=added["item"]["id"]))
        assert (await client.recv())["type"] == "conversation.item.deleted"
        await client.send(rt.ConversationItemDelete(item_id=added["item"]["id"]))
        assert (await client.recv())["error"]["code"] == "item_delete_invalid_item_id"
    assert server.sessions[0].truncations == [(item_id, 1000), (item_id, 400)]


# --- bad input -------------------------------------------------------------------------

_BAD_INPUT = [
    ("not json", "invalid_json", None),
    ("[1, 2]", "invalid_json", None),
    (b"\x00\xff", "invalid_json", None),
    ('{"event_id": "e1"}', "missing_required_parameter", "type"),
    ('{"type": "response.audio.delta", "event_id": "e2"}', "invalid_value", "type"),
    ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_value", "audio"),
    ('{"type": "input_audio_buffer.append", "audio": 123}', "invalid_type", "audio"),
    ('{"type": "input_audio_buffer.append"}', "missing_required_parameter", "audio"),
    (('{"type": "conversation.item.truncate", "item_id": "x", "content_index": 0,'
      ' "audio_end_ms": "12"}'), "invalid_type", "audio_end_ms"),
    ('{"type": "session.update", "session": {"instructions": "hi"}}',
     "missing_required_parameter", "session.type"),
    (('{"type": "session.update", "session": {"type": "realtime", "audio": {"input":'
      ' {"turn_detection": {"type": "magic"}}}}}'), "invalid_value",
     "session.audio.input.turn_detection.type"),
    ('{"type": "response.create", "response": "now"}', "invalid_type", "response"),
    (('{"type": "conversation.item.create", "item": {"type": "message", "role": "assistant",'
      ' "content": [{"type": "output_audio", "audio": ""}]}}'), "invalid_value", "item.content"),
]


@pytest.mark.parametrize(("frame", "code", "param"), _BAD_INPUT)
async def test_bad_input_gets_an_error_and_the_session_goes_on(
    autojump_clock: Any, frame: str | bytes, code: str, param: str | None
) -> None:
    server = LocalRealtimeServer()
    async with open_client(server) as client:
        await client.send(frame)
        (error,) = await client.recv_until("error")
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == code
        assert error["error"].get("param") == param
        assert error["error"]["message"]
        if isinstance(frame, str) and '"event_id"' in frame:
            assert error["error"]["event_id"] == json.loads(frame)["event_id"]
        await client.update(vad_update())  # still serving
    text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
    assert server.received[0] == text


async def test_unknown_type_message_lists_the_supported_events(autojump_clock: Any) -> None:
    async with open_client(LocalRealtimeServer()) as client:
        await client.send('{"type": "response.audio.delta"}')
        message = (await client.recv())["error"]["message"]
    assert message.startswith("Invalid value: 'response.audio.delta'. Supported values are: ")
    assert "'input_audio_buffer.append'" in message


# --- the backend seam --------------------------------------------------------------------


async def test_connect_is_a_realtime_backend(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(chunk_ms=250)
    backend: RealtimeBackend = server
    async with backend.connect("gpt-realtime-mini") as model:
        created = await model.receive()
        assert isinstance(created, rt.SessionCreated)
        assert created.session["model"] == "gpt-realtime-mini"
        await model.send(rt.ResponseCreate())
        received: list[rt.ServerEvent] = []
        while not isinstance(event := await model.receive(), rt.ResponseDone):
            assert event is not None
            received.append(event)
        assert event.status == "completed"
    deltas = [e for e in received if isinstance(e, rt.OutputAudioDelta)]
    assert [len(base64.b64decode(d.delta)) for d in deltas] == [2000] * 4
    assert server.sessions[0].closed and server.received == ['{"type":"response.create"}']

    with pytest.raises(KeyError, match="boom"):  # the body's exception, not a group
        async with server.connect("gpt-realtime"):
            raise KeyError("boom")
    assert server.sessions[1].closed


async def test_wait_for_sessions_wakes_as_sessions_connect_and_close(
        autojump_clock: Any) -> None:
    server = LocalRealtimeServer()
    seen: list[str] = []

    async def waiter() -> None:
        await server.wait_for_sessions(lambda sessions: len(sessions) == 2)
        seen.append("two connected")
        await server.wait_for_sessions(lambda sessions: all(s.closed for s in sessions))
        seen.append("all closed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        async with server.connect("gpt-realtime"):
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []
            async with server.connect("gpt-realtime"):
                await trio.testing.wait_all_tasks_blocked()
                assert seen == ["two connected"]
            await trio.testing.wait_all_tasks_blocked()
            assert seen == ["two connected"]  # one is still open
    assert seen == ["two connected", "all closed"]
    # true at once: returns without waiting
    await server.wait_for_sessions(lambda sessions: len(sessions) == 2)


async def test_every_event_sent_matches_the_ga_schema(autojump_clock: Any) -> None:
    """A busy session (VAD, barge-in, errors, truncation) sends only schema-valid events."""
    server = LocalRealtimeServer(tone_brain(1500), speedup=4.0)
    async with open_client(server) as client:
        await client.update(Agent().session_update())
        await client.send(rt.ResponseCreate(response={"metadata": {"k": "v"}}))
        await client.recv_until("response.output_audio.delta")
        await client.append(silence(100) + tone(300) + silence(700))
        await client.send(rt.ResponseCancel())
        await client.send("garbage")
        events = await client.recv_until("error")
    reasons = [e["response"]["status_details"]["reason"] for e in events
               if e["type"] == "response.done"]
    assert reasons == ["turn_detected", "client_cancelled"]
    sent = server.sessions[0].sent
    assert len(sent) > 20
    kinds = {validate_server_event(text)["type"] for text in sent}
    assert {"session.created", "session.updated", "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
            "response.output_audio.delta", "response.done", "error"} <= kinds


async def test_run_call_against_the_local_server(autojump_clock: Any) -> None:
    """End to end: synthetic Twilio <-> run_call <-> this server; the strict peer sees no error."""
    from callbridge._call import run_call
    from callbridge.testing._twilio import TwilioCaller, Utterance

    caller = TwilioCaller(
        utterances=[Utterance(at=3.0, duration=0.6), Utterance(at=5.0, duration=0.6)],
        hangup_at=9.0)
    server = LocalRealtimeServer(tone_brain(1500))
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(bridge_end, backend=server, agent=Agent(greeting="Hello!"))
    assert result.reason == "caller_hangup" and not caller.violations
    state = server.sessions[0]
    assert not state.appends_before_session_update
    assert [kind for kind, _, _ in state.vad_log] == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"] * 2
    assert [r.status for r in state.responses] == ["completed"] * 3  # greeting + two turns
    # the second turn barged in on the first answer while it was playing: truncated
    ((item_id, audio_end_ms),) = state.truncations
    assert item_id == state.responses[1].item_id
    assert 0 < audio_end_ms <= len(state.produced[item_id]) // 8
    assert all(json.loads(text)["type"] != "error" for text in state.sent)
