"""The sans-I/O bridge, synchronously: frames and events in, what to send out.

No trio, no sockets, no clock: each test feeds a `Bridge` what the peers would send,
with the time, and checks what it asks to send and how it accounts for it. Races the
trio layer used to guard with cancel scopes and locks are states here (a send under
way, a playback generation), so they are tested as plain sequences.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from callbridge import Agent, CallLimits, CallRefused, EndReason
from callbridge import events as ev
from callbridge import realtime as rt
from callbridge import twilio as tw
from callbridge._bridge import Bridge
from callbridge.codec import encode

SID = "MZ" + "0" * 32
OTHER = "MZ" + "1" * 32
CHUNK = bytes(range(160))  # 20 ms of μ-law


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def media(payload: str, sid: str = SID) -> str:
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})


def start(sid: str = SID, **params: str) -> str:
    return encode(tw.Start(stream_sid=sid, account_sid="AC1", call_sid="CA1",
                           custom_parameters=params))


def stop(sid: str = SID) -> str:
    return encode(tw.Stop(stream_sid=sid))


def mark(name: str, sid: str = SID) -> str:
    return encode(tw.Mark(stream_sid=sid, name=name))


def delta(data: bytes | str, item: str = "i1", response: str = "r1") -> rt.OutputAudioDelta:
    payload = data if isinstance(data, str) else b64(data)
    return rt.OutputAudioDelta(response_id=response, item_id=item, delta=payload)


def created(response: str = "r1") -> rt.ResponseCreated:
    return rt.ResponseCreated(response={"id": response})


def done(response: str = "r1") -> rt.ResponseDone:
    return rt.ResponseDone(response={"id": response, "status": "completed"})


SPEECH = rt.SpeechStarted(audio_start_ms=0, item_id="u1")
#: the `response.create` the bridge sends for a reply (tagged: ours, and why)
REPLY = rt.ResponseCreate(response={"metadata": {"callbridge": "reply"}})


def make(*, agent: Agent | None = None, events: list[ev.CallEvent] | None = None,
         **limits: Any) -> Bridge:
    # no idle prompts unless a test asks: they add a timer and responses
    return Bridge(agent=agent or Agent(idle_timeout=None), limits=CallLimits(**limits),
                  now=100.0, wall=1_700_000_000.0,
                  on_event=None if events is None else events.append)


def drain_model(bridge: Bridge) -> list[rt.ClientEvent]:
    out = []
    while (event := bridge.next_to_model()) is not None:
        bridge.sent_to_model()
        out.append(event)
    return out


def drain_twilio(bridge: Bridge, now: float = 100.0) -> list[dict[str, Any]]:
    out = []
    while (texts := bridge.next_to_twilio()) is not None:
        bridge.sent_to_twilio(now)
        out += map(json.loads, texts)
    return out


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["event"] for m in messages]


def appended(events: list[rt.ClientEvent]) -> bytes:
    return b"".join(base64.b64decode(e.audio) for e in events
                    if isinstance(e, rt.InputAudioBufferAppend))


def talking(**limits: Any) -> Bridge:
    """A started call with its model connected and the session.update sent."""
    bridge = make(**limits)
    bridge.receive_twilio(start(), 100.0)
    bridge.model_connected(100.0)
    drain_model(bridge)
    return bridge


# --- caller audio to the model -------------------------------------------------------


def test_session_update_goes_first_then_the_greeting_then_audio_buffered_meanwhile() -> None:
    bridge = make(agent=Agent(greeting="Say hello."))
    bridge.receive_twilio(start(), 100.0)
    for n in range(3):
        bridge.receive_twilio(media(b64(bytes([n]) * 160)), 100.0 + n * 0.02)
    bridge.model_connected(100.1)
    out = drain_model(bridge)
    assert [type(e) for e in out[:2]] == [rt.SessionUpdate, rt.ResponseCreate]
    # frames that waited for the connection leave as one append, in order
    assert appended(out) == b"".join(bytes([n]) * 160 for n in range(3))
    assert bridge.stats.frames_to_model == bridge.stats.frames_in == 3


def test_an_idle_call_sends_each_frame_as_it_came() -> None:
    bridge = talking()
    for _ in range(5):
        bridge.receive_twilio(media(b64(CHUNK)), 100.0)
        [append] = drain_model(bridge)
        assert append == rt.InputAudioBufferAppend(audio=b64(CHUNK))


@pytest.mark.parametrize(("queued", "coalesce_ms", "sizes"), [
    (12, 100, [800, 800, 320]),  # behind: up to about coalesce_ms per append
    (3, 0, [160, 160, 160]),  # coalescing off
])
def test_caller_audio_that_queued_up_is_coalesced(queued: int, coalesce_ms: int,
                                                  sizes: list[int]) -> None:
    bridge = talking(coalesce_ms=coalesce_ms)
    frames = [bytes([n]) * 160 for n in range(queued)]
    for frame in frames:
        bridge.receive_twilio(media(b64(frame)), 100.0)
    out = drain_model(bridge)
    assert [len(base64.b64decode(e.audio)) for e in out] == sizes  # type: ignore[union-attr]
    assert appended(out) == b"".join(frames)


def test_a_full_caller_buffer_drops_the_oldest_and_counts() -> None:
    bridge = make(caller_buffer_frames=4)
    bridge.receive_twilio(start(), 100.0)
    for n in range(10):
        bridge.receive_twilio(media(b64(bytes([n]) * 160)), 100.0)
    bridge.model_connected(100.0)
    assert appended(drain_model(bridge)) == b"".join(bytes([n]) * 160 for n in range(6, 10))
    assert (bridge.stats.frames_in, bridge.stats.frames_dropped) == (10, 6)


# --- bad input never ends the call (and loses nothing else) -------------------------


@pytest.mark.parametrize(("payload", "silent_ms"), [
    ("*" * 216, 20),  # a garbled 20 ms frame: 20 ms of silence (216 * 3 // 4 = 162 bytes)
    ("not base64!", 1), ("AAE", 0), ("AA==AA==", 0), ("é" * 12, 1), ("QUJD\n", 0),
])
def test_caller_audio_that_is_not_base64_becomes_silence_and_is_counted(
    payload: str, silent_ms: int,
) -> None:
    events: list[ev.CallEvent] = []
    bridge = make(events=events)
    bridge.receive_twilio(start(), 100.0)
    bridge.model_connected(100.0)
    drain_model(bridge)
    good = b64(CHUNK)
    for text in [media(good), media(payload), media(good), media(good)]:
        bridge.receive_twilio(text, 100.0)
    audio = appended(drain_model(bridge))  # queued together: merged, which must not raise
    assert audio == CHUNK + b"\xff" * (silent_ms * 8) + CHUNK + CHUNK
    assert not bridge.ended
    assert (bridge.stats.bad_audio, bridge.stats.protocol_errors) == (1, 1)
    [error] = [e for e in events if isinstance(e, ev.ProtocolError)]
    assert error.source == "twilio" and "base64" in error.detail


def test_model_audio_that_is_not_base64_becomes_silence_and_keeps_offsets_true() -> None:
    bridge = talking(mark_ms=0)
    bridge.receive_model(created(), 100.0)
    for data in [b64(CHUNK), "!" * 216, b64(CHUNK)]:
        bridge.receive_model(delta(data), 100.0)
    [media_out, mark_out] = drain_twilio(bridge)  # merged into one message, no error
    played = base64.b64decode(media_out["media"]["payload"])
    assert played == CHUNK + b"\xff" * 160 + CHUNK
    assert mark_out["mark"]["name"].endswith(f":{len(played)}:i1")
    assert bridge.stats.bad_audio == 1 and not bridge.ended


@pytest.mark.parametrize("text", [
    b"\x00\x01", "not json", "[]", '{"event": "media"}', '{"no": "event"}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":7}}',
])
def test_malformed_twilio_frames_are_counted_and_ignored(text: str | bytes) -> None:
    events: list[ev.CallEvent] = []
    bridge = make(events=events)
    bridge.receive_twilio(start(), 100.0)
    bridge.receive_twilio(text, 100.0)
    assert bridge.stats.protocol_errors == 1 and not bridge.ended
    assert [type(e) for e in events] == [ev.Start, ev.ProtocolError]


def test_unknown_twilio_events_are_ignored() -> None:
    bridge = talking()
    bridge.receive_twilio('{"event": "someday", "streamSid": "MZ1"}', 100.0)
    assert bridge.stats.protocol_errors == 0 and not bridge.ended


@pytest.mark.parametrize("text", [media(b64(CHUNK), OTHER), mark("0:160:i1", OTHER), stop(OTHER),
                                  encode(tw.Dtmf(stream_sid=OTHER, digit="1"))])
def test_frames_of_another_stream_are_counted_and_not_used(text: str) -> None:
    events: list[ev.CallEvent] = []
    bridge = make(events=events)
    bridge.receive_twilio(start(), 100.0)
    bridge.model_connected(100.0)
    drain_model(bridge)
    bridge.receive_twilio(text, 100.0)
    assert drain_model(bridge) == []  # nothing reached the model
    assert not bridge.ended
    assert (bridge.stats.protocol_errors, bridge.stats.frames_in) == (1, 0)
    assert [type(e) for e in events] == [ev.Start, ev.ModelConnected, ev.ProtocolError]


def test_a_second_start_is_a_protocol_error_and_changes_nothing() -> None:
    bridge = talking()
    bridge.receive_twilio(start(OTHER), 100.0)
    assert bridge.start is not None and bridge.start.stream_sid == SID
    assert bridge.stats.protocol_errors == 1


# --- start, stop, authorize ----------------------------------------------------------


def test_stop_ends_the_call_as_a_hang_up() -> None:
    bridge = talking()
    bridge.receive_twilio(stop(), 101.0)
    assert bridge.end_reason is EndReason.CALLER_HANGUP
    result = bridge.result(101.5)
    assert (result.reason, result.stream_sid, result.call_sid) == (
        "caller_hangup", SID, "CA1")


def test_the_first_end_reason_counts() -> None:
    bridge = talking()
    bridge.end(EndReason.TWILIO_STALLED, "a send took over 10 s")
    bridge.receive_twilio(stop(), 101.0)
    assert (bridge.end_reason, bridge.end_detail) == (
        EndReason.TWILIO_STALLED, "a send took over 10 s")


def test_authorize_gates_the_model_and_can_refuse() -> None:
    def authorize(start: tw.Start) -> None:
        if start.custom_parameters.get("token") != "good":
            raise CallRefused("bad token")

    for token, reason in [("good", None), ("bad", EndReason.REFUSED)]:
        bridge = Bridge(agent=Agent(), limits=CallLimits(), now=0.0, wall=0.0,
                        authorize=authorize)
        assert not bridge.may_connect_model
        bridge.receive_twilio(start(token=token), 0.0)
        assert bridge.end_reason is reason
        assert bridge.may_connect_model is (reason is None)
        assert bridge.started is (reason is None)


def test_without_authorize_the_model_may_connect_before_start() -> None:
    bridge = make()
    assert bridge.may_connect_model and not bridge.started


# --- model audio to Twilio -----------------------------------------------------------


def test_each_chunk_goes_out_as_media_then_mark_with_mark_ms_zero() -> None:
    bridge = talking(mark_ms=0)
    bridge.receive_model(created(), 100.0)
    bridge.receive_model(delta(CHUNK), 100.0)
    out = drain_twilio(bridge)
    assert kinds(out) == ["media", "mark"]
    assert out[0] == {"event": "media", "streamSid": SID, "media": {"payload": b64(CHUNK)}}
    assert out[1]["mark"]["name"] == "0:160:i1"
    assert bridge.stats.chunks_out == 1 and bridge.stats.bytes_out == 160


def test_chunks_that_queued_up_merge_per_item_up_to_coalesce_ms() -> None:
    bridge = talking(mark_ms=0)
    bridge.receive_model(created(), 100.0)
    for _ in range(7):
        bridge.receive_model(delta(CHUNK, item="i1"), 100.0)
    bridge.receive_model(delta(CHUNK, item="i2"), 100.0)
    out = drain_twilio(bridge)
    sizes = [len(base64.b64decode(m["media"]["payload"])) for m in out if m["event"] == "media"]
    assert sizes == [800, 320, 160]  # 100 ms, the rest of i1, then i2 on its own
    assert [m["mark"]["name"] for m in out if m["event"] == "mark"] == [
        "0:800:i1", "0:1120:i1", "0:160:i2"]


def test_the_end_of_the_models_audio_is_marked() -> None:
    bridge = talking()  # mark_ms=100: a 40 ms response gets its mark only at the end
    bridge.receive_model(created(), 100.0)
    bridge.receive_model(delta(CHUNK), 100.0)
    bridge.receive_model(delta(CHUNK), 100.0)
    assert kinds(drain_twilio(bridge)) == ["media"]
    bridge.receive_model(rt.OutputAudioDone(response_id="r1", item_id="i1"), 100.0)
    bridge.receive_model(done(), 100.0)
    assert [m["mark"]["name"] for m in drain_twilio(bridge)] == ["0:320:i1"]  # once


def test_playout_full_holds_the_model_reader() -> None:
    bridge = talking(playout_buffer_chunks=3, coalesce_ms=0)
    bridge.receive_model(created(), 100.0)
    for _ in range(3):
        assert not bridge.playout.full
        bridge.receive_model(delta(CHUNK), 100.0)
    assert bridge.playout.full
    assert bridge.next_to_twilio() is not None
    bridge.sent_to_twilio(100.0)
    assert not bridge.playout.full


def test_mark_echoes_are_counted_by_outcome() -> None:
    bridge = talking(mark_ms=0)
    bridge.receive_model(created(), 100.0)
    bridge.receive_model(delta(CHUNK), 100.0)
    drain_twilio(bridge)
    bridge.receive_twilio(mark("0:160:i1"), 100.02)
    bridge.receive_twilio(mark("7:1:nope"), 100.02)
    assert (bridge.stats.marks_played, bridge.stats.marks_discarded) == (1, 0)
    bridge.receive_model(delta(CHUNK), 100.03)
    drain_twilio(bridge)
    bridge.receive_model(SPEECH, 100.035)
    bridge.receive_twilio(mark("0:320:i1"), 100.036)  # echoed by the clear
    assert (bridge.stats.marks_played, bridge.stats.marks_discarded) == (1, 1)


# --- barge-in ----------------------------------------------------------------------


def test_barge_in_drops_queued_audio_and_sends_clear_truncate_in_that_order() -> None:
    events: list[ev.CallEvent] = []
    bridge = make(events=events, mark_ms=0)
    bridge.receive_twilio(start(), 100.0)
    bridge.model_connected(100.0)
    drain_model(bridge)
    bridge.receive_model(created(), 100.0)
    bridge.receive_model(delta(CHUNK * 5), 100.0)
    drain_twilio(bridge, now=100.0)  # 100 ms at Twilio, playing from 100.0
    for _ in range(3):
        bridge.receive_model(delta(CHUNK), 100.01)  # queued here, not yet sent
    bridge.receive_twilio(media(b64(CHUNK)), 100.02)  # caller audio waiting for the model
    bridge.receive_model(SPEECH, 100.05)
    assert kinds(drain_twilio(bridge)) == ["clear"]  # the queued audio is gone
    to_model = drain_model(bridge)
    assert to_model[0] == rt.ConversationItemTruncate(item_id="i1", audio_end_ms=50)
    assert isinstance(to_model[1], rt.InputAudioBufferAppend)  # truncate went first
    assert bridge.stats.barge_ins == bridge.stats.truncations == 1
    assert [type(e) for e in events[-3:]] == [ev.SpeechStarted, ev.Truncate, ev.Clear]
    truncate = events[-2]
    assert isinstance(truncate, ev.Truncate) and truncate.audio_end_ms == 50


def test_without_auto_cancel_the_bridge_cancels_after_truncating() -> None:
    vad = rt.TurnDetection(type="server_vad", interrupt_response=False)
    bridge = make(agent=Agent(turn_detection=vad), mark_ms=0)
    bridge.receive_twilio(start(), 100.0)
    bridge.model_connected(100.0)
    drain_model(bridge)
    bridge.receive_model(created(), 100.0)
    bridge.receive_model(delta(CHUNK * 5), 100.0)
    drain_twilio(bridge)
    bridge.receive_model(SPEECH, 100.05)
    assert drain_model(bridge) == [rt.ConversationItemTruncate(item_id="i1", audio_end_ms=50),
                                   rt.ResponseCancel(response_id="r1")]


def test_a_chunk_in_flight_at_a_barge_in_is_cleared_and_recorded_nowhere() -> None:
    bridge = talking(mark_ms=0)
    bridge.receive_model(created(), 100.0)
    bridge.receive_model(delta(CHUNK), 100.0)
    assert bridge.next_to_twilio() is not None  # the writer is sending it...
    bridge.receive_model(SPEECH, 100.01)  # ...when the caller speaks
    bridge.sent_to_twilio(100.02)
    assert kinds(drain_twilio(bridge)) == ["clear"]  # it follows the audio on the socket
    assert bridge.stats.chunks_out == 0
    assert not bridge.playback.outstanding  # not in the new generation's playback
    bridge.receive_model(SPEECH, 100.5)  # a second barge-in: nothing left to clear
    assert drain_twilio(bridge) == [] and drain_model(bridge) == []


def test_two_barge_ins_before_the_writer_runs_send_one_clear() -> None:
    bridge = talking(mark_ms=0)
    bridge.receive_model(created(), 100.0)
    bridge.receive_model(delta(CHUNK), 100.0)
    drain_twilio(bridge)
    bridge.receive_model(SPEECH, 100.01)
    bridge.receive_model(done(), 100.01)
    bridge.receive_model(created("r2"), 100.02)
    bridge.receive_model(delta(CHUNK, item="i2", response="r2"), 100.02)
    bridge.receive_model(SPEECH, 100.03)  # before the writer took the first clear
    assert kinds(drain_twilio(bridge)) == ["clear"]


def test_barge_in_before_any_audio_does_nothing() -> None:
    bridge = talking()
    bridge.receive_model(created(), 100.0)
    bridge.receive_model(SPEECH, 100.0)
    assert drain_twilio(bridge) == [] and drain_model(bridge) == []
    assert bridge.stats.barge_ins == 0


# --- a second model connection takes over ------------------------------------------


def test_a_new_connection_gets_the_session_but_not_the_greeting_again() -> None:
    events: list[ev.CallEvent] = []
    bridge = make(agent=Agent(greeting="Hello!"), events=events)
    bridge.receive_twilio(start(), 100.0)
    bridge.model_connected(100.0)
    assert [type(e) for e in drain_model(bridge)] == [rt.SessionUpdate, rt.ResponseCreate]
    bridge.send_to_model(rt.ResponseCancel())  # unsent when the connection goes
    bridge.receive_twilio(media(b64(CHUNK)), 100.1)
    bridge.model_connected(101.0)
    out = drain_model(bridge)
    assert [type(e) for e in out] == [rt.SessionUpdate, rt.InputAudioBufferAppend]
    assert appended(out) == CHUNK  # the caller's audio waited for the new connection
    assert [e.connection for e in events if isinstance(e, ev.ModelConnected)] == [1, 2]
    assert bridge.stats.model_connections == 2


def test_a_new_connection_clears_the_old_ones_audio_at_twilio() -> None:
    bridge = talking(mark_ms=0)
    bridge.receive_model(created(), 100.0)
    bridge.receive_model(delta(CHUNK * 5), 100.0)
    drain_twilio(bridge)
    bridge.receive_model(delta(CHUNK), 100.01)  # queued, never sent
    bridge.model_connected(100.05)
    assert kinds(drain_twilio(bridge)) == ["clear"]
    # no truncate or cancel: those would name the old session's items
    assert [type(e) for e in drain_model(bridge)] == [rt.SessionUpdate]
    # the old session's marks are discarded; the new one's audio plays
    bridge.receive_twilio(mark("0:800:i1"), 100.06)
    bridge.receive_model(created("r9"), 100.1)
    bridge.receive_model(delta(CHUNK, item="i9", response="r9"), 100.1)
    assert kinds(drain_twilio(bridge)) == ["media", "mark"]
    assert bridge.stats.marks_discarded == 1


# --- events --------------------------------------------------------------------------


def test_events_are_typed_and_carry_both_clocks() -> None:
    events: list[ev.CallEvent] = []
    bridge = make(events=events)
    bridge.receive_twilio(start(tenant="acme"), 100.5)
    bridge.receive_twilio(encode(tw.Dtmf(stream_sid=SID, digit="7")), 101.0)
    bridge.receive_model(rt.ErrorEvent(error=rt.ErrorInfo(message="boom", code="x")), 101.5)
    bridge.end(EndReason.ENDED, "by the app")
    bridge.result(102.0)
    assert [type(e) for e in events] == [ev.Start, ev.Dtmf, ev.ModelError, ev.End]
    assert [e.at for e in events] == [100.5, 101.0, 101.5, 102.0]
    assert [e.wall - e.at for e in events] == [1_700_000_000.0 - 100.0] * 4
    first = events[0]
    assert isinstance(first, ev.Start) and first.custom_parameters == {"tenant": "acme"}
    assert [e.kind for e in events] == ["start", "dtmf", "model_error", "end"]
    last = events[-1]
    assert isinstance(last, ev.End) and last.reason is EndReason.ENDED


def test_every_event_class_has_its_own_kind() -> None:
    classes = [c for c in vars(ev).values()
               if isinstance(c, type) and issubclass(c, ev.CallEvent) and c is not ev.CallEvent]
    assert sorted(c.kind for c in classes) == sorted(ev.EventKind)


def test_caller_audio_the_old_connection_did_not_finish_sending_goes_to_the_new_one() -> None:
    bridge = talking()
    frames = [bytes([n]) * 160 for n in range(3)]
    bridge.receive_twilio(media(b64(frames[0])), 100.0)
    bridge.send_to_model(rt.InputAudioBufferCommit())
    assert isinstance(bridge.next_to_model(), rt.InputAudioBufferCommit)
    bridge.sent_to_model()
    assert bridge.next_to_model() is not None  # the writer was sending frame 0...
    for frame in frames[1:]:
        bridge.receive_twilio(media(b64(frame)), 100.02)
    bridge.model_connected(100.05)  # ...when its connection went
    out = drain_model(bridge)
    assert isinstance(out[0], rt.SessionUpdate)
    assert appended(out) == b"".join(frames)  # nothing lost, in order
    assert bridge.stats.frames_to_model == 3


def test_an_agent_that_needs_the_context_connects_after_start() -> None:
    agent = Agent(instructions=lambda c: f"Caller {c.from_number}.")
    bridge = make(agent=agent)
    assert not bridge.may_connect_model
    bridge.receive_twilio(start(**{"from": "+1555"}), 100.0)
    assert bridge.may_connect_model
    bridge.model_connected(100.0)
    [update] = drain_model(bridge)
    assert isinstance(update, rt.SessionUpdate) and update.session.instructions == "Caller +1555."


def test_an_agent_chosen_after_start_brings_its_turn_taking() -> None:
    bridge = Bridge(agent=None, limits=CallLimits(), now=0.0, wall=0.0)
    bridge.receive_twilio(start(), 0.0)
    assert not bridge.may_connect_model  # no agent yet
    vad = rt.TurnDetection(type="server_vad", interrupt_response=False)
    bridge.use_agent(Agent(turn_detection=vad))
    assert bridge.may_connect_model and not bridge.playback.auto_cancel


# --- keypresses reach the agent; one response at a time ----------------------------------


def dtmf(digit: str) -> str:
    return encode(tw.Dtmf(stream_sid=SID, digit=digit))


def pressed(text: str) -> rt.ConversationItemCreate:
    return rt.ConversationItemCreate(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})


def test_keypresses_end_at_the_terminator_and_reach_the_model_with_a_response() -> None:
    bridge = talking()
    for digit in "12#":
        bridge.receive_twilio(dtmf(digit), 100.0)
    assert drain_model(bridge) == [pressed("The caller pressed 1 2 #."), REPLY]
    assert bridge.next_deadline is None


def test_keypresses_end_when_the_caller_pauses() -> None:
    bridge = talking()
    bridge.receive_twilio(dtmf("4"), 100.0)
    bridge.receive_twilio(dtmf("2"), 101.5)  # within 2 s: the same entry
    assert bridge.next_deadline == 103.5
    bridge.tick(103.4)
    assert drain_model(bridge) == []
    bridge.tick(103.5)
    assert drain_model(bridge) == [pressed("The caller pressed 4 2."), REPLY]
    assert bridge.next_deadline is None


def test_the_response_waits_for_the_active_one_to_finish() -> None:
    bridge = talking()
    bridge.receive_model(created("r1"), 100.0)
    for digit in "7#":
        bridge.receive_twilio(dtmf(digit), 100.1)
    assert drain_model(bridge) == [pressed("The caller pressed 7 #.")]  # not while r1 speaks
    bridge.receive_model(done("r1"), 100.5)
    assert drain_model(bridge) == [REPLY]
    for digit in "8#":  # ours is on its way (no response.created yet): wait for it too
        bridge.receive_twilio(dtmf(digit), 100.6)
    assert drain_model(bridge) == [pressed("The caller pressed 8 #.")]
    bridge.receive_model(created("r2"), 100.7)
    bridge.receive_model(done("r2"), 101.0)
    assert drain_model(bridge) == [REPLY]


def test_a_new_turn_of_the_caller_answers_instead() -> None:
    bridge = talking()
    bridge.receive_model(created("r1"), 100.0)
    for digit in "5#":
        bridge.receive_twilio(dtmf(digit), 100.1)
    bridge.receive_model(SPEECH, 100.2)  # server VAD will answer this turn, digits included
    bridge.receive_model(done("r1"), 100.3)
    assert [type(e) for e in drain_model(bridge)] == [rt.ConversationItemCreate]


def test_keypresses_before_the_model_connects_wait_for_it_and_the_greeting() -> None:
    bridge = make(agent=Agent(greeting="Hello!"))
    bridge.receive_twilio(start(), 100.0)
    for digit in "9#":
        bridge.receive_twilio(dtmf(digit), 100.0)
    bridge.model_connected(100.2)
    out = drain_model(bridge)
    assert [type(e) for e in out] == [rt.SessionUpdate, rt.ResponseCreate,
                                      rt.ConversationItemCreate]  # one response: the greeting
    bridge.receive_model(created("g"), 100.3)
    bridge.receive_model(done("g"), 101.0)
    assert drain_model(bridge) == [REPLY]  # then the digits' answer


def test_on_dtmf_takes_the_digits_instead_of_the_model() -> None:
    taken: list[tuple[str, object]] = []
    agent = Agent(on_dtmf=lambda digits, call: taken.append((digits, call)), dtmf_timeout=1.0)
    handle = object()
    bridge = Bridge(agent=agent, limits=CallLimits(), now=0.0, wall=0.0, handle=handle)
    bridge.receive_twilio(start(), 0.0)
    bridge.model_connected(0.0)
    drain_model(bridge)
    for digit in "1234":
        bridge.receive_twilio(dtmf(digit), 0.5)
    bridge.tick(1.5)
    assert taken == [("1234", handle)]
    assert drain_model(bridge) == []


def test_keypresses_can_be_kept_from_the_model() -> None:
    bridge = make(agent=Agent(dtmf_timeout=None, idle_timeout=None))
    bridge.receive_twilio(start(), 100.0)
    bridge.model_connected(100.0)
    drain_model(bridge)
    for digit in "1#":
        bridge.receive_twilio(dtmf(digit), 100.0)
    assert drain_model(bridge) == [] and bridge.next_deadline is None


def test_on_raw_sees_every_message_as_it_came() -> None:
    raws: list[ev.Raw] = []
    bridge = Bridge(agent=Agent(), limits=CallLimits(), now=0.0, wall=0.0, on_raw=raws.append)
    frames = [start(), b"\x00binary", "not json", media(b64(CHUNK))]
    for n, text in enumerate(frames):
        bridge.receive_twilio(text, float(n))
    unknown = rt.UnknownServerEvent(type="response.output_text.delta", raw={"delta": "hi"})
    bridge.receive_model(unknown, 9.0)
    assert raws == [ev.Raw(source="twilio", message=text, at=float(n))
                    for n, text in enumerate(frames)] + [
        ev.Raw(source="model", message=unknown, at=9.0)]


def test_an_on_dtmf_that_raises_is_logged_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def on_dtmf(digits: str, call: object) -> None:
        raise RuntimeError("the PIN service is down")

    bridge = make(agent=Agent(on_dtmf=on_dtmf))
    bridge.receive_twilio(start(), 100.0)
    for digit in "1#":
        bridge.receive_twilio(dtmf(digit), 100.0)
    assert not bridge.ended
    assert "on_dtmf('1#') raised" in caplog.text and "the PIN service is down" in caplog.text


def test_the_models_token_usage_is_summed_over_its_responses() -> None:
    bridge = talking()
    usage = {"total_tokens": 300, "input_tokens": 200, "output_tokens": 100,
             "input_token_details": {"text_tokens": 50, "audio_tokens": 150,
                                     "cached_tokens": 64},
             "output_token_details": {"text_tokens": 20, "audio_tokens": 80}}
    for response, reported in [("r1", usage), ("r2", usage), ("r3", None),
                               ("r4", {"input_tokens": "many", "output_tokens": -1})]:
        bridge.receive_model(rt.ResponseCreated(response={"id": response}), 100.0)
        bridge.receive_model(rt.ResponseDone(response={"id": response, "status": "completed",
                                                       "usage": reported}), 100.0)
    stats = bridge.stats
    assert (stats.input_tokens, stats.input_audio_tokens, stats.cached_input_tokens,
            stats.output_tokens, stats.output_audio_tokens) == (400, 300, 128, 200, 160)
