"""What a response streams and what the brain is asked: transcript deltas, `Turn`'s request
fields, out-of-band responses, one response at a time, metadata.

Protocol-level, on MockClock, through the schema-checking client of test_local_model:
every server event received is validated against the openai SDK's GA models, and
every client event these tests mean to be valid is validated against the SDK's
client-event models before it is sent.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pydantic
import pytest
import trio
from _schema import validate_client_event
from openai.types.realtime import ResponseAudioTranscriptDeltaEvent
from test_local_model import (
    RESPONSE_HEAD,
    RESPONSE_TAIL,
    Client,
    audio_of,
    open_client,
    silence,
    types,
    vad_update,
)

from callbridge import codec
from callbridge import realtime as rt
from callbridge.local import LocalRealtimeServer, Reply, ResponseRecord, Turn, scripted_brain
from callbridge.local._audio import tone
from callbridge.local._records import Output
from callbridge.local._responses import pieces

TRANSCRIPT_DELTA = "response.output_audio_transcript.delta"
AUDIO_DELTA = "response.output_audio.delta"
GREETING = "Thanks for calling Acme. How can I help you today?"


async def send(client: Client, event: rt.ClientEvent | str) -> None:
    """Send a client event the real API accepts: checked against the SDK first."""
    text = event if isinstance(event, str) else codec.encode(event)
    validate_client_event(text)
    await client.send(text)


async def send_invalid(client: Client, event: dict[str, Any]) -> None:
    """Send an event that is wrong on purpose (and that the SDK's schema rejects too)."""
    with pytest.raises(pydantic.ValidationError):
        validate_client_event(event)
    await client.send(json.dumps(event))


def say(text: str, role: str = "user") -> rt.ConversationItemCreate:
    return rt.ConversationItemCreate(item={
        "type": "message", "role": role, "content": [{"type": "input_text", "text": text}]})


def streamed(events: list[dict[str, Any]], transcript: str, audio: bytes) -> str:
    """The transcript deltas' text, checked against the audio deltas as they come: before
    each audio delta, the words so far cover at least as much of the transcript as the
    audio so far covers of the audio, and end at a word's end."""
    said, heard = "", 0
    for event in events:
        if event["type"] == TRANSCRIPT_DELTA:
            said += event["delta"]
        elif event["type"] == AUDIO_DELTA:
            heard += len(base64.b64decode(event["delta"]))
            assert len(said) * len(audio) >= heard * len(transcript), (said, heard)
            assert len(said) == len(transcript) or transcript[len(said)].isspace(), said
    assert transcript.startswith(said)
    return said


def final_transcripts(events: list[dict[str, Any]]) -> set[str]:
    """The message's transcript as each closing event reports it."""
    kinds = {"response.output_audio_transcript.done": lambda e: e["transcript"],
             "response.content_part.done": lambda e: e["part"]["transcript"],
             "response.output_item.done": lambda e: e["item"]["content"][0]["transcript"],
             "response.done": lambda e: e["response"]["output"][0]["content"][0]["transcript"]}
    found = [kinds[e["type"]](e) for e in events if e["type"] in kinds]
    assert len(found) == len(kinds)
    return set(found)


# --- transcript deltas: how a reply is split (synchronous) -------------------------------


@pytest.mark.parametrize(("transcript", "audio_bytes", "chunk", "texts"), [
    # 18 characters over 3 chunks: a third (6) falls inside "there", two thirds in "friend"
    ("Hello there friend", 2400, 800, ["Hello there", " friend", ""]),
    ("Hi", 800, 800, ["Hi"]),
    ("Supercalifragilistic", 1600, 800, ["Supercalifragilistic", ""]),
    ("", 1600, 800, ["", ""]),
    # the last chunk is short: 800 of 1000 bytes needs 80% of the 27 characters
    ("one two three four five six", 1000, 800, ["one two three four five", " six"]),
    # rounding up keeps the words a little ahead of the audio
    ("a b c d e f g h", 6400, 800, ["a b", " c", " d", " e", " f", " g", " h", ""]),
    # no audio: a word per step, trailing whitespace with the last word
    ("One moment, please. ", 0, 800, ["One", " moment,", " please. "]),
    ("  ", 0, 800, ["  "]),
    ("", 0, 800, []),
])
def test_pieces_split_the_transcript_over_the_audio(
    transcript: str, audio_bytes: int, chunk: int, texts: list[str]
) -> None:
    audio = tone(audio_bytes // 8)
    record = ResponseRecord(id="resp_1", item_id="item_1", audio=audio, transcript=transcript,
                            options={})
    steps = pieces(record, Output(index=0, item_id="item_1"), chunk)
    assert [text for text, _ in steps] == texts
    assert "".join(text for text, _ in steps) == transcript
    assert b"".join(piece for _, piece in steps) == audio
    assert all(0 < len(piece) <= chunk for _, piece in steps) or not audio


# --- transcript deltas on the wire ---------------------------------------------------------


async def test_transcript_deltas_lead_the_audio_deltas(autojump_clock: Any) -> None:
    audio = tone(1000)
    server = LocalRealtimeServer(scripted_brain([Reply(audio=audio, transcript=GREETING)]))
    async with open_client(server) as client:
        await send(client, rt.ResponseCreate())
        events = await client.recv_until("response.done")
        times = client.times[-len(events):]
    middle = types(events)[len(RESPONSE_HEAD) : -len(RESPONSE_TAIL)]
    assert types(events) == RESPONSE_HEAD + middle + RESPONSE_TAIL
    assert middle.count(AUDIO_DELTA) == 10 and middle[0] == TRANSCRIPT_DELTA
    assert set(middle) == {TRANSCRIPT_DELTA, AUDIO_DELTA}
    response_id, item_id = events[0]["response"]["id"], events[1]["item"]["id"]
    for i, event in enumerate(events):
        if event["type"] == TRANSCRIPT_DELTA:
            ResponseAudioTranscriptDeltaEvent.model_validate(event, strict=True)
            assert (event["response_id"], event["item_id"], event["output_index"],
                    event["content_index"]) == (response_id, item_id, 0, 0)
            assert event["delta"]
            # sent with the audio it covers, at the same instant
            assert events[i + 1]["type"] == AUDIO_DELTA and times[i + 1] == times[i]
    assert streamed(events, GREETING, audio) == GREETING
    assert final_transcripts(events) == {GREETING}
    assert audio_of(events) == audio
    # the codec decodes them for the bridge
    decoded = [codec.decode_server_event(text) for text in server.sessions[0].sent]
    deltas = [e for e in decoded if isinstance(e, rt.OutputAudioTranscriptDelta)]
    assert "".join(d.delta for d in deltas) == GREETING
    assert {(d.response_id, d.item_id) for d in deltas} == {(response_id, item_id)}


async def test_a_transcript_without_audio_streams_as_deltas(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(scripted_brain([Reply(transcript="One moment, please.")]))
    async with open_client(server) as client:
        await send(client, rt.ResponseCreate())
        events = await client.recv_until("response.done")
    assert types(events) == RESPONSE_HEAD + [TRANSCRIPT_DELTA] * 3 + RESPONSE_TAIL
    assert [e["delta"] for e in events if e["type"] == TRANSCRIPT_DELTA] == [
        "One", " moment,", " please."]
    assert final_transcripts(events) == {"One moment, please."}
    assert audio_of(events) == b""


@pytest.mark.parametrize("how", ["client", "speech"])
async def test_cancel_stops_the_transcript_and_the_item_keeps_what_was_streamed(
    autojump_clock: Any, how: str
) -> None:
    audio = tone(3000)
    server = LocalRealtimeServer(scripted_brain([Reply(audio=audio, transcript=GREETING)]))
    async with open_client(server) as client:
        await client.update(vad_update())
        await send(client, rt.ResponseCreate())
        head = await client.recv_until(AUDIO_DELTA)
        head += await client.recv_until(AUDIO_DELTA)  # 200 of 3000 ms produced
        if how == "client":
            await send(client, rt.ResponseCancel())
        else:
            await client.append(tone(100))
        tail = await client.recv_until("response.done")
        if how == "speech":
            assert tail.pop(0)["type"] == "input_audio_buffer.speech_started"
        assert types(tail) == RESPONSE_TAIL
        await trio.sleep(1)  # nothing more comes: the stream really stopped
        assert client.events[-1]["type"] == "response.done"
    said = streamed(head, GREETING, audio)
    # 2 of 30 chunks: at least a fifteenth of the words, ended at a word's end
    assert said == "Thanks for calling Acme."[: len(said)] and 0 < len(said) < len(GREETING)
    assert final_transcripts(tail) == {said}
    assert tail[-1]["response"]["output"][0]["status"] == "incomplete"
    record = server.sessions[0].responses[0]
    assert record.status == "cancelled" and record.transcript == GREETING
    assert server.sessions[0].produced[record.item_id] == audio[:1600]


# --- what the brain is asked -------------------------------------------------------------


def test_turn_carries_the_request() -> None:
    turn = Turn(b"\x01", {"call_1": "ok"}, messages=[("user", "pressed 1")],
                instructions="Read it back.", metadata={"purpose": "dtmf"}, out_of_band=True)
    assert turn == b"\x01" and isinstance(turn, bytes)
    assert dict(turn.function_outputs) == {"call_1": "ok"}
    assert turn.messages == (("user", "pressed 1"),)
    assert (turn.instructions, turn.out_of_band) == ("Read it back.", True)
    assert turn.metadata is not None and dict(turn.metadata) == {"purpose": "dtmf"}
    with pytest.raises(TypeError):
        turn.metadata["purpose"] = "other"  # type: ignore[index]
    plain = Turn(b"")  # as before: every new field empty
    assert (plain.messages, plain.instructions, plain.metadata, plain.out_of_band) == (
        (), None, None, False)


async def test_the_brain_sees_messages_instructions_and_metadata(autojump_clock: Any) -> None:
    seen: list[Turn] = []

    def brain(turn: Turn) -> Reply:
        seen.append(turn)
        return Reply(audio=tone(100), transcript="Noted.")

    server = LocalRealtimeServer(brain)
    async with open_client(server) as client:
        await client.update(vad_update())
        await send(client, say("The caller pressed 1 2 3."))
        await send(client, say("The caller has been silent for 10 seconds.", role="system"))
        # an assistant turn replayed into a new session (output_text): told too
        await send(client, rt.ConversationItemCreate(item={
            "type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": "(I said hello.)"}]}))
        await send(client, rt.ConversationItemCreate(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "first"},
                        {"type": "input_text", "text": "second"}]}))
        for _ in range(4):
            await client.recv_until("conversation.item.done")
        await send(client, rt.ResponseCreate(response={
            "instructions": "Read the digits back.", "metadata": {"purpose": "dtmf"}}))
        await client.recv_until("response.done")

        # a VAD response: what came since, and no instructions or metadata
        await send(client, say("Another note."))
        await client.append(silence(300) + tone(400) + silence(600))
        await client.recv_until("response.done")
        await send(client, rt.ResponseCreate())
        await client.recv_until("response.done")
    first, second, third = seen
    assert first == b"" and dict(first.function_outputs) == {}
    assert first.messages == (("user", "The caller pressed 1 2 3."),
                              ("system", "The caller has been silent for 10 seconds."),
                              ("assistant", "(I said hello.)"),
                              ("user", "first\nsecond"))
    assert first.instructions == "Read the digits back." and not first.out_of_band
    assert first.metadata is not None and dict(first.metadata) == {"purpose": "dtmf"}
    assert second == server.sessions[0].turns[0] and second.messages == (
        ("user", "Another note."),)
    assert (second.instructions, second.metadata, second.out_of_band) == (None, None, False)
    assert third == b"" and third.messages == () and third.instructions is None


async def test_a_text_part_must_be_a_string(autojump_clock: Any) -> None:
    async with open_client(LocalRealtimeServer()) as client:
        await send_invalid(client, {"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": 7}]}})
        error = (await client.recv())["error"]
    assert (error["code"], error["param"]) == ("invalid_type", "item.content[0].text")


# --- out-of-band responses ---------------------------------------------------------------


async def test_an_out_of_band_response_is_heard_but_uses_nothing_up(autojump_clock: Any) -> None:
    seen: list[Turn] = []

    def brain(turn: Turn) -> Reply:
        seen.append(turn)
        if turn.out_of_band:
            return Reply(audio=tone(300), transcript="Sorry, could you say that again?")
        return Reply(audio=tone(200), transcript="Order 42 ships today.")

    speech = tone(200, hz=500)
    server = LocalRealtimeServer(brain)
    async with open_client(server) as client:
        off = ('{"type":"session.update","session":{"type":"realtime",'
               '"audio":{"input":{"turn_detection":null}}}}')
        await send(client, off)
        await client.recv_until("session.updated")
        await client.append(speech)
        await send(client, rt.InputAudioBufferCommit())
        await client.recv_until("conversation.item.done")
        await send(client, rt.ConversationItemCreate(item={
            "type": "function_call", "name": "lookup_order", "call_id": "call_1",
            "arguments": '{"order":"42"}'}))
        await send(client, rt.ConversationItemCreate(item={
            "type": "function_call_output", "call_id": "call_1", "output": "ships today"}))
        await send(client, say("The caller pressed 4."))
        for _ in range(3):
            await client.recv_until("conversation.item.done")

        classify = {"conversation": "none", "instructions": "Classify the caller's intent.",
                    "metadata": {"purpose": "classify"}}
        await send(client, rt.ResponseCreate(response=classify))
        events = await client.recv_until("response.done")
        # heard like any response, but nothing joins the conversation
        assert not any(e["type"].startswith("conversation.") for e in events)
        assert types(events)[:3] == ["response.created", "response.output_item.added",
                                     "response.content_part.added"]
        assert audio_of(events) == tone(300)
        words = "Sorry, could you say that again?"
        assert streamed(events, words, tone(300)) == words
        assert final_transcripts(events) == {words}
        created, done = events[0]["response"], events[-1]["response"]
        assert created["conversation_id"] is None and done["conversation_id"] is None
        assert created["metadata"] == done["metadata"] == {"purpose": "classify"}
        oob_item = events[1]["item"]["id"]

        # its item is not in the conversation: it cannot be truncated
        await send(client, rt.ConversationItemTruncate(item_id=oob_item, audio_end_ms=100,
                                                       event_id="t1"))
        assert (await client.recv())["error"] == {
            "type": "invalid_request_error", "code": "item_truncate_invalid_item_id",
            "message": f"Item with item_id not found: {oob_item}", "param": "item_id",
            "event_id": "t1"}

        await send(client, rt.ResponseCreate())
        events = await client.recv_until("response.done")
        assert events[-1]["response"]["conversation_id"] is not None
        await send(client, rt.ResponseCreate())
        await client.recv_until("response.done")
    oob, answer, after = seen
    assert oob.out_of_band and oob.instructions == "Classify the caller's intent."
    assert oob.metadata is not None and dict(oob.metadata) == {"purpose": "classify"}
    # the next in-conversation response gets the same audio, outputs and messages
    for turn in (oob, answer):
        assert turn == speech and dict(turn.function_outputs) == {"call_1": "ships today"}
        assert turn.messages == (("user", "The caller pressed 4."),)
    assert not answer.out_of_band and answer.instructions is None and answer.metadata is None
    assert after == b"" and dict(after.function_outputs) == {} and after.messages == ()
    state = server.sessions[0]
    assert state.produced[oob_item] == tone(300) and state.truncations == []


@pytest.mark.parametrize(("first", "second"), [("auto", "none"), ("none", "auto"),
                                               ("none", "none")])
async def test_one_response_at_a_time_out_of_band_too(
    autojump_clock: Any, first: str, second: str
) -> None:
    """UNCONFIRMED: the API may run an out-of-band response beside another; this server
    runs one at a time, so any active response blocks a new one."""
    server = LocalRealtimeServer(scripted_brain([Reply(audio=tone(500), transcript="Hello.")]))
    async with open_client(server) as client:
        await send(client, rt.ResponseCreate(response={"conversation": first}))
        await send(client, rt.ResponseCreate(response={"conversation": second},
                                             event_id="evt_second"))
        events = await client.recv_until("error")
        response_id = events[0]["response"]["id"]
        assert events[-1]["error"] == {
            "type": "invalid_request_error", "code": "conversation_already_has_active_response",
            "message": f"Conversation already has an active response in progress: {response_id}. "
                       "Wait until the response is finished before creating a new one.",
            "event_id": "evt_second"}
        events = await client.recv_until("response.done")
        assert events[-1]["response"]["status"] == "completed"
    assert len(server.sessions[0].responses) == 1


# --- metadata ----------------------------------------------------------------------------


async def test_metadata_is_echoed_on_created_and_done(autojump_clock: Any) -> None:
    server = LocalRealtimeServer(scripted_brain([Reply(audio=tone(100))] * 3))
    metadata = {"purpose": "greeting", "turn": "1"}
    async with open_client(server) as client:
        await client.update(vad_update())
        await send(client, rt.ResponseCreate(response={"metadata": metadata}))
        events = await client.recv_until("response.done")
        assert events[0]["response"]["metadata"] == events[-1]["response"]["metadata"] == metadata
        await send(client, rt.ResponseCreate())
        events = await client.recv_until("response.done")
        assert [events[i]["response"]["metadata"] for i in (0, -1)] == [None, None]
        await client.append(silence(300) + tone(400) + silence(600))  # a VAD response
        events = await client.recv_until("response.done")
        created = next(e for e in events if e["type"] == "response.created")
        assert [created["response"]["metadata"], events[-1]["response"]["metadata"]] == [
            None, None]


@pytest.mark.parametrize(("metadata", "code", "param"), [
    ("greeting", "invalid_type", "response.metadata"),
    ({"turn": 1}, "invalid_type", "response.metadata.turn"),
    ({f"k{i}": "v" for i in range(17)}, "object_above_max_properties", "response.metadata"),
    ({"k" * 65: "v"}, "string_above_max_length", "response.metadata"),
    ({"k": "v" * 513}, "string_above_max_length", "response.metadata.k"),
])
async def test_bad_metadata_starts_no_response(
    autojump_clock: Any, metadata: Any, code: str, param: str
) -> None:
    server = LocalRealtimeServer()
    async with open_client(server) as client:
        # wrong on purpose; the SDK's types do not know the size limits
        await client.send(json.dumps({"type": "response.create", "event_id": "r",
                                      "response": {"metadata": metadata}}))
        error = (await client.recv())["error"]
        assert (error["code"], error["param"], error["event_id"]) == (code, param, "r")
        await send(client, rt.ResponseCreate(response={"metadata": {"k" * 64: "v" * 512}}))
        assert (await client.recv_until("response.done"))[-1]["response"]["status"] == (
            "completed")
    assert len(server.sessions[0].responses) == 1
