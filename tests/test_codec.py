"""Wire-format tests for `callbridge.codec`, against recorded messages.

The Twilio literals are copied from the Media Streams examples in
`shared/reference/protocols.md` (A1, A2); the OpenAI Realtime side is checked against
the GA models the `openai` package generates from OpenAI's API spec, so a field we
misname or a beta-only field we leave in shows up here and not on a live call.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
import pytest
from openai import BaseModel as OpenAIModel
from openai.types.realtime import (
    ConversationItemCreateEvent,
    ConversationItemDeleteEvent,
    ConversationItemTruncatedEvent,
    ConversationItemTruncateEvent,
    InputAudioBufferAppendEvent,
    InputAudioBufferClearEvent,
    InputAudioBufferCommitEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeClientEvent,
    RealtimeError,
    RealtimeErrorEvent,
    RealtimeResponse,
    RealtimeResponseStatus,
    RealtimeSessionCreateRequest,
    ResponseAudioDeltaEvent,
    ResponseAudioDoneEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseCancelEvent,
    ResponseCreatedEvent,
    ResponseCreateEvent,
    ResponseDoneEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
    SessionUpdateEvent,
)
from openai.types.realtime.realtime_audio_config import RealtimeAudioConfig
from openai.types.realtime.realtime_audio_config_input import RealtimeAudioConfigInput
from openai.types.realtime.realtime_audio_config_output import RealtimeAudioConfigOutput
from openai.types.realtime.realtime_audio_formats import AudioPCMU
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad
from openai.types.realtime.realtime_response import Audio as ResponseAudio
from openai.types.realtime.realtime_response import AudioOutput as ResponseAudioOutput

from _schema import assert_no_extra

from callbridge import codec
from callbridge import realtime as rt
from callbridge import twilio as tw
from callbridge._errors import RemoteProtocolError

SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
ACCOUNT = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
CALL = "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"

# --- recorded Twilio messages (protocols.md A1: what Twilio sends) -------------------

CONNECTED = '{ "event": "connected", "protocol": "Call", "version": "1.0.0" }'

START = """{
  "event": "start",
  "sequenceNumber": "1",
  "start": {
    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "tracks": ["inbound"],
    "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 },
    "customParameters": { "FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob" }
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""

# What Twilio sends when the TwiML has no <Parameter>.
START_EMPTY_PARAMETERS = """{
  "event": "start",
  "sequenceNumber": "1",
  "start": {
    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "tracks": ["inbound"],
    "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 },
    "customParameters": {}
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""

# The reference says to treat a missing `customParameters` as `{}` (defensive).
START_NO_PARAMETERS = """{
  "event": "start",
  "sequenceNumber": "1",
  "start": {
    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "tracks": ["inbound"],
    "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 }
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""

MEDIA = """{
  "event": "media",
  "sequenceNumber": "4",
  "media": { "track": "inbound", "chunk": "2", "timestamp": "5", "payload": "no+JhoaJjpzS..." },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""

DTMF = """{ "event": "dtmf", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "sequenceNumber": "5",
  "dtmf": { "track": "inbound_track", "digit": "1" } }"""

MARK_ECHO = """{ "event": "mark", "sequenceNumber": "4", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
  "mark": { "name": "my label" } }"""

STOP = """{ "event": "stop", "sequenceNumber": "5",
  "stop": { "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX" },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX" }"""

# --- recorded Twilio messages (protocols.md A2: what the bridge sends) ---------------

OUT_MEDIA = """{ "event": "media", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "media": { "payload": "a3242sa..." } }"""

OUT_MARK = """{ "event": "mark", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "mark": { "name": "my label" } }"""

OUT_CLEAR = """{ "event": "clear", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX" }"""

_START_FIELDS: dict[str, Any] = {
    "stream_sid": SID,
    "account_sid": ACCOUNT,
    "call_sid": CALL,
    "tracks": ("inbound",),
    "media_format": tw.MediaFormat(encoding="audio/x-mulaw", sample_rate=8000, channels=1),
    "sequence_number": 1,
}


def _with_empty_parameters(text: str) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(text)
    d["start"]["customParameters"] = {}
    return d


# (recorded text, the event it must decode to, what it must re-encode to: None = itself)
TWILIO_INBOUND = [
    pytest.param(CONNECTED, tw.Connected(protocol="Call", version="1.0.0"), None, id="connected"),
    pytest.param(
        START,
        tw.Start(
            **_START_FIELDS,
            custom_parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        ),
        None,
        id="start",
    ),
    pytest.param(
        START_EMPTY_PARAMETERS,
        tw.Start(**_START_FIELDS, custom_parameters={}),
        None,
        id="start-empty-customParameters",
    ),
    # Missing decodes like `{}`; re-encoding states it, as Twilio itself does.
    pytest.param(
        START_NO_PARAMETERS,
        tw.Start(**_START_FIELDS, custom_parameters={}),
        _with_empty_parameters(START_NO_PARAMETERS),
        id="start-missing-customParameters",
    ),
    pytest.param(
        MEDIA,
        tw.Media(
            stream_sid=SID,
            payload="no+JhoaJjpzS...",
            track="inbound",
            chunk=2,
            timestamp=5,
            sequence_number=4,
        ),
        None,
        id="media",
    ),
    pytest.param(
        MARK_ECHO,
        tw.Mark(stream_sid=SID, name="my label", sequence_number=4),
        None,
        id="mark",
    ),
    pytest.param(
        DTMF,
        tw.Dtmf(stream_sid=SID, digit="1", track="inbound_track", sequence_number=5),
        None,
        id="dtmf",
    ),
    pytest.param(
        STOP,
        tw.Stop(stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL, sequence_number=5),
        None,
        id="stop",
    ),
]


@pytest.mark.parametrize(("text", "expected", "reencoded"), TWILIO_INBOUND)
def test_twilio_inbound_decodes_to_typed_event(
    text: str, expected: tw.TwilioMessage, reencoded: dict[str, Any] | None
) -> None:
    event = codec.decode_twilio(text)
    assert type(event) is type(expected)
    assert event == expected


@pytest.mark.parametrize(("text", "expected", "reencoded"), TWILIO_INBOUND)
def test_twilio_inbound_decodes_from_bytes_too(
    text: str, expected: tw.TwilioMessage, reencoded: dict[str, Any] | None
) -> None:
    assert codec.decode_twilio(text.encode("utf-8")) == expected


@pytest.mark.parametrize(("text", "expected", "reencoded"), TWILIO_INBOUND)
def test_twilio_inbound_reencodes_to_the_recorded_message(
    text: str, expected: tw.TwilioMessage, reencoded: dict[str, Any] | None
) -> None:
    wire = codec.encode(codec.decode_twilio(text))
    assert isinstance(wire, str)
    assert json.loads(wire) == (json.loads(text) if reencoded is None else reencoded)


def test_twilio_numbers_sent_as_strings_decode_to_ints() -> None:
    media = codec.decode_twilio(MEDIA)
    assert isinstance(media, tw.Media)
    assert (media.sequence_number, media.chunk, media.timestamp) == (4, 2, 5)
    assert all(type(n) is int for n in (media.sequence_number, media.chunk, media.timestamp))
    start = codec.decode_twilio(START)
    assert isinstance(start, tw.Start)
    assert type(start.sequence_number) is int
    assert type(start.media_format.sample_rate) is int
    assert type(start.media_format.channels) is int


def test_twilio_numbers_are_reencoded_as_strings() -> None:
    wire = json.loads(codec.encode(codec.decode_twilio(MEDIA)))
    assert wire["sequenceNumber"] == "4"
    assert wire["media"]["chunk"] == "2"
    assert wire["media"]["timestamp"] == "5"
    # ... but mediaFormat numbers are real JSON numbers, as Twilio sends them.
    start = json.loads(codec.encode(codec.decode_twilio(START)))
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }


# --- what the bridge sends to Twilio (A2) -----------------------------------------


@pytest.mark.parametrize(
    ("message", "documented"),
    [
        pytest.param(tw.Media(stream_sid=SID, payload="a3242sa..."), OUT_MEDIA, id="media"),
        pytest.param(tw.Mark(stream_sid=SID, name="my label"), OUT_MARK, id="mark"),
        pytest.param(tw.Clear(stream_sid=SID), OUT_CLEAR, id="clear"),
    ],
)
def test_outbound_twilio_has_exactly_the_documented_fields(
    message: tw.TwilioMessage, documented: str
) -> None:
    # Extra fields earn warning 31951 from Twilio: compare whole dicts, not subsets.
    assert json.loads(codec.encode(message)) == json.loads(documented)


def test_outbound_media_has_no_inbound_only_fields() -> None:
    wire = json.loads(codec.encode(tw.Media(stream_sid=SID, payload="//7+/w==")))
    assert set(wire) == {"event", "streamSid", "media"}
    assert set(wire["media"]) == {"payload"}
    for inbound_only in ("track", "chunk", "timestamp", "sequenceNumber"):
        assert inbound_only not in wire
        assert inbound_only not in wire["media"]


def test_outbound_mark_and_clear_key_sets() -> None:
    mark = json.loads(codec.encode(tw.Mark(stream_sid=SID, name="0:1600:item_1")))
    assert set(mark) == {"event", "streamSid", "mark"}
    assert mark["mark"] == {"name": "0:1600:item_1"}
    clear = json.loads(codec.encode(tw.Clear(stream_sid=SID)))
    assert clear == {"event": "clear", "streamSid": SID}


def test_outbound_media_is_a_compact_text_frame() -> None:
    wire = codec.encode(tw.Media(stream_sid=SID, payload="//7+/w=="))
    assert isinstance(wire, str)
    assert "\n" not in wire and ": " not in wire


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(OUT_MEDIA, tw.Media(stream_sid=SID, payload="a3242sa..."), id="media"),
        pytest.param(OUT_MARK, tw.Mark(stream_sid=SID, name="my label"), id="mark"),
        pytest.param(OUT_CLEAR, tw.Clear(stream_sid=SID), id="clear"),
    ],
)
def test_outbound_twilio_decodes_too(text: str, expected: tw.TwilioMessage) -> None:
    # A fake Twilio in tests reads what the bridge sends with the same codec.
    event = codec.decode_twilio(text)
    assert event == expected
    assert json.loads(codec.encode(event)) == json.loads(text)


# --- malformed Twilio input ---------------------------------------------------------


def _media(**media: Any) -> str:
    return json.dumps({"event": "media", "sequenceNumber": "4", "media": media, "streamSid": SID})


MALFORMED_TWILIO = [
    pytest.param("not json", id="not-json"),
    pytest.param("", id="empty"),
    pytest.param('{"event": "media", "media": {"payload": "AAAA"}', id="truncated-json"),
    pytest.param(b'{"event": "media", "streamSid": "MZ\xff\xfe"}', id="bytes-not-utf8"),
    pytest.param(b"\x80\x81\x82\x83", id="bytes-garbage"),
    pytest.param("[]", id="json-array-empty"),
    pytest.param(f"[{MEDIA}]", id="json-array-of-message"),
    pytest.param('"media"', id="json-string"),
    pytest.param("42", id="json-number"),
    pytest.param("null", id="json-null"),
    pytest.param(json.dumps({"streamSid": SID, "media": {"payload": "AAAA"}}), id="missing-event"),
    pytest.param(json.dumps({"event": None, "streamSid": SID}), id="event-null"),
    pytest.param(json.dumps({"event": 3, "streamSid": SID}), id="event-int"),
    pytest.param(json.dumps({"event": ["media"], "streamSid": SID}), id="event-list"),
    pytest.param(json.dumps({"event": {"name": "media"}, "streamSid": SID}), id="event-object"),
    pytest.param(_media(track="inbound", chunk="2", timestamp="5"), id="media-without-payload"),
    pytest.param(_media(payload=1234), id="media-payload-int"),
    pytest.param(_media(payload=None), id="media-payload-null"),
    pytest.param(_media(payload=["AAAA"]), id="media-payload-list"),
    pytest.param(_media(payload={"data": "AAAA"}), id="media-payload-object"),
    pytest.param(json.dumps({"event": "media", "streamSid": SID}), id="media-without-media"),
    pytest.param(
        json.dumps({"event": "media", "streamSid": SID, "media": "AAAA"}), id="media-not-object"
    ),
    pytest.param(_media(payload="AAAA", chunk="two"), id="media-chunk-not-a-number"),
    pytest.param(_media(payload="AAAA", timestamp=[5]), id="media-timestamp-list"),
    pytest.param(
        json.dumps({"event": "media", "sequenceNumber": "x", "media": {"payload": "AAAA"},
                    "streamSid": SID}),
        id="sequenceNumber-not-a-number",
    ),
    pytest.param(
        json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {}}),
        id="mark-without-name",
    ),
    pytest.param(
        json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": SID,
                    "mark": {"name": 7}}),
        id="mark-name-int",
    ),
    pytest.param(
        json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": SID}),
        id="mark-without-mark",
    ),
    pytest.param(
        json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID}),
        id="start-without-start",
    ),
    pytest.param(
        json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": "x"}),
        id="start-not-object",
    ),
    pytest.param(
        json.dumps({"event": "start", "sequenceNumber": "1",
                    "start": {"accountSid": ACCOUNT, "callSid": CALL}}),
        id="start-without-any-streamSid",
    ),
    pytest.param(
        json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID,
                    "start": {"streamSid": SID, "customParameters": ["a", "b"]}}),
        id="start-customParameters-list",
    ),
    pytest.param(
        json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID,
                    "start": {"streamSid": SID, "tracks": 1}}),
        id="start-tracks-int",
    ),
    pytest.param(
        json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID,
                    "start": {"streamSid": SID, "mediaFormat": ["audio/x-mulaw"]}}),
        id="start-mediaFormat-list",
    ),
    pytest.param(
        json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID,
                    "start": {"streamSid": SID, "mediaFormat": {"sampleRate": "fast"}}}),
        id="start-sampleRate-not-a-number",
    ),
    pytest.param(
        json.dumps({"event": "media", "sequenceNumber": "4", "media": {"payload": "AAAA"}}),
        id="media-missing-streamSid",
    ),
    pytest.param(
        json.dumps({"event": "media", "sequenceNumber": "4", "media": {"payload": "AAAA"},
                    "streamSid": 42}),
        id="media-streamSid-int",
    ),
    pytest.param(
        json.dumps({"event": "mark", "sequenceNumber": "4", "mark": {"name": "x"}}),
        id="mark-missing-streamSid",
    ),
    pytest.param(
        json.dumps({"event": "dtmf", "sequenceNumber": "5",
                    "dtmf": {"track": "inbound_track", "digit": "1"}}),
        id="dtmf-missing-streamSid",
    ),
    pytest.param(
        json.dumps({"event": "dtmf", "sequenceNumber": "5", "streamSid": SID,
                    "dtmf": {"track": "inbound_track"}}),
        id="dtmf-without-digit",
    ),
    pytest.param(
        json.dumps({"event": "stop", "sequenceNumber": "5",
                    "stop": {"accountSid": ACCOUNT, "callSid": CALL}}),
        id="stop-missing-streamSid",
    ),
    pytest.param(json.dumps({"event": "clear"}), id="clear-missing-streamSid"),
]


@pytest.mark.parametrize("text", MALFORMED_TWILIO)
def test_malformed_twilio_is_remote_protocol_error(text: str | bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode_twilio(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            '{"event": "custom", "streamSid": "MZ1", "custom": {"nested": [1, "2"]}}',
            id="custom",
        ),
        pytest.param('{"event": "Media", "streamSid": "MZ1"}', id="wrong-case"),
        pytest.param('{"event": ""}', id="empty-name"),
    ],
)
def test_unknown_twilio_event_is_kept_with_raw(text: str) -> None:
    event = codec.decode_twilio(text)
    assert isinstance(event, tw.UnknownTwilioMessage)
    assert event.event == json.loads(text)["event"]
    assert event.raw == json.loads(text)


# --- realtime server events: recorded shapes (protocols.md B4) -----------------------

DELTA = {
    "type": "response.output_audio.delta",
    "event_id": "event_1",
    "response_id": "resp_1",
    "item_id": "item_1",
    "output_index": 0,
    "content_index": 0,
    "delta": "//7+/w==",
}
SPEECH_STARTED = {
    "type": "input_audio_buffer.speech_started",
    "event_id": "event_2",
    "audio_start_ms": 1234,
    "item_id": "item_2",
}
RESPONSE_DONE = {
    "type": "response.done",
    "event_id": "event_3",
    "response": {"id": "resp_1", "object": "realtime.response", "status": "cancelled",
                 "status_details": {"type": "cancelled", "reason": "turn_detected"},
                 "output": []},
}
BETA_DISABLED = (
    '{"type":"error","event_id":"event_4","error":{"type":"invalid_request_error",'
    '"code":"beta_api_shape_disabled",'
    '"message":"The Realtime Beta API is no longer supported. Please use /v1/realtime for the '
    'GA API.","param":null}}'
)


def test_recorded_error_event_decodes() -> None:
    event = codec.decode_server_event(BETA_DISABLED)
    assert event == rt.ErrorEvent(
        event_id="event_4",
        error=rt.ErrorInfo(
            type="invalid_request_error",
            code="beta_api_shape_disabled",
            message="The Realtime Beta API is no longer supported. "
            "Please use /v1/realtime for the GA API.",
            param=None,
        ),
    )


def _without(d: dict[str, Any], *keys: str) -> str:
    return json.dumps({k: v for k, v in d.items() if k not in keys})


def _replace(d: dict[str, Any], **changes: Any) -> str:
    return json.dumps({**d, **changes})


MALFORMED_SERVER = [
    pytest.param("not json", id="not-json"),
    pytest.param("", id="empty"),
    pytest.param(b'{"type": "error", "x": "\xff"}', id="bytes-not-utf8"),
    pytest.param(json.dumps([DELTA]), id="json-array"),
    pytest.param('"response.output_audio.delta"', id="json-string"),
    pytest.param("null", id="json-null"),
    pytest.param(_without(DELTA, "type"), id="missing-type"),
    pytest.param(_replace(DELTA, type=None), id="type-null"),
    pytest.param(_replace(DELTA, type=1), id="type-int"),
    pytest.param(_replace(DELTA, type=["response.output_audio.delta"]), id="type-list"),
    pytest.param(_without(DELTA, "delta"), id="delta-without-delta"),
    pytest.param(_without(DELTA, "item_id"), id="delta-without-item_id"),
    pytest.param(_without(DELTA, "response_id"), id="delta-without-response_id"),
    pytest.param(_without(DELTA, "delta", "item_id", "response_id"), id="delta-bare"),
    pytest.param(_replace(DELTA, output_index="first"), id="delta-output_index-not-a-number"),
    pytest.param(_without(SPEECH_STARTED, "audio_start_ms"), id="speech_started-without-ms"),
    pytest.param(_without(SPEECH_STARTED, "item_id"), id="speech_started-without-item_id"),
    pytest.param(_replace(SPEECH_STARTED, audio_start_ms="soon"), id="speech_started-ms-text"),
    pytest.param(_replace(SPEECH_STARTED, audio_start_ms=None), id="speech_started-ms-null"),
    pytest.param(
        json.dumps({"type": "input_audio_buffer.speech_stopped", "item_id": "item_2"}),
        id="speech_stopped-without-ms",
    ),
    pytest.param(_without(RESPONSE_DONE, "response"), id="response.done-without-response"),
    pytest.param(_replace(RESPONSE_DONE, response="resp_1"), id="response.done-response-str"),
    pytest.param(_replace(RESPONSE_DONE, response=[1]), id="response.done-response-list"),
    pytest.param(
        json.dumps({"type": "response.created", "event_id": "e"}),
        id="response.created-without-response",
    ),
    pytest.param(
        json.dumps({"type": "conversation.item.truncated", "item_id": "item_1"}),
        id="truncated-without-audio_end_ms",
    ),
    pytest.param(
        json.dumps({"type": "conversation.item.truncated", "audio_end_ms": 100}),
        id="truncated-without-item_id",
    ),
    pytest.param(json.dumps({"type": "error", "event_id": "e"}), id="error-without-error"),
    pytest.param(json.dumps({"type": "error", "error": None}), id="error-null"),
    pytest.param(
        json.dumps({"type": "error", "error": {"type": "invalid_request_error"}}),
        id="error-without-message",
    ),
    pytest.param(json.dumps({"type": "session.created"}), id="session.created-without-session"),
    pytest.param(
        json.dumps({"type": "session.updated", "session": ["realtime"]}),
        id="session.updated-session-list",
    ),
]


@pytest.mark.parametrize("text", MALFORMED_SERVER)
def test_malformed_server_event_is_remote_protocol_error(text: str | bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode_server_event(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("delta", None, id="delta-null"),
        pytest.param("delta", 1234, id="delta-int"),
        pytest.param("delta", ["//7+/w=="], id="delta-list"),
        pytest.param("delta", {"audio": "//7+/w=="}, id="delta-object"),
        pytest.param("item_id", None, id="item_id-null"),
        pytest.param("response_id", 7, id="response_id-int"),
    ],
)
def test_mistyped_delta_string_field_is_remote_protocol_error(field: str, value: Any) -> None:
    # The codec promises "missing or mistyped fields" are the peer's bad input. A
    # `delta` that is not a string must never be turned into one: `null` would
    # otherwise become the text "None", which is valid base64 and would be played.
    with pytest.raises(RemoteProtocolError):
        codec.decode_server_event(_replace(DELTA, **{field: value}))


@pytest.mark.parametrize(
    "decode", [codec.decode_twilio, codec.decode_server_event], ids=["twilio", "server"]
)
def test_deeply_nested_json_is_remote_protocol_error(decode: Callable[[str], Any]) -> None:
    # A peer controls the nesting depth; the json module gives up with RecursionError.
    depth = 100_000
    text = '{"event": "media", "type": "error", "x": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(RemoteProtocolError):
        decode(text)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            {"type": "rate_limits.updated", "event_id": "event_5",
             "rate_limits": [{"name": "requests", "limit": 1000, "remaining": 999,
                              "reset_seconds": 60}]},
            id="rate_limits.updated",
        ),
        pytest.param(
            {"type": "conversation.item.added", "event_id": "event_6", "previous_item_id": None,
             "item": {"id": "item_1", "type": "message", "role": "assistant", "content": []}},
            id="conversation.item.added",
        ),
        # Beta names are not GA events: they must not be read as audio.
        pytest.param({**DELTA, "type": "response.audio.delta"}, id="beta-response.audio.delta"),
        pytest.param({"type": "output_audio_buffer.cleared"}, id="output_audio_buffer.cleared"),
    ],
)
def test_unknown_server_event_is_kept_with_raw(raw: dict[str, Any]) -> None:
    event = codec.decode_server_event(json.dumps(raw))
    assert isinstance(event, rt.UnknownServerEvent)
    assert event.type == raw["type"]
    assert event.raw == raw


# --- property-style: no mutation of a valid message escapes as another exception -----

_TWILIO_VALID = [CONNECTED, START, START_NO_PARAMETERS, MEDIA, DTMF, MARK_ECHO, STOP,
                 OUT_MEDIA, OUT_MARK, OUT_CLEAR]
_SERVER_VALID = [json.dumps(DELTA), json.dumps(SPEECH_STARTED), json.dumps(RESPONSE_DONE),
                 BETA_DISABLED,
                 json.dumps({"type": "input_audio_buffer.speech_stopped", "event_id": "e",
                             "audio_end_ms": 2000, "item_id": "item_2"}),
                 json.dumps({"type": "conversation.item.truncated", "event_id": "e",
                             "item_id": "item_1", "content_index": 0, "audio_end_ms": 1500}),
                 json.dumps({"type": "response.output_audio.done", "event_id": "e",
                             "response_id": "resp_1", "item_id": "item_1", "output_index": 0,
                             "content_index": 0}),
                 json.dumps({"type": "response.created", "event_id": "e",
                             "response": {"id": "resp_1", "status": "in_progress"}}),
                 json.dumps({"type": "session.updated", "event_id": "e",
                             "session": {"type": "realtime", "model": "gpt-realtime"}})]

_REPLACEMENTS: list[Any] = [0, 17, -1, 2.5, True, [], ["x"], None, {}, {"k": "v"}, ""]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path into nested dicts and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


def _mutate(doc: Any, path: tuple[Any, ...], value: Any, drop: bool) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def _random_mutations(texts: list[str], count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        doc = json.loads(rng.choice(texts))
        for _ in range(rng.randint(1, 3)):
            paths = list(_paths(doc))
            if not paths:
                break
            path = rng.choice(paths)
            doc = _mutate(doc, path, rng.choice(_REPLACEMENTS), drop=rng.random() < 0.3)
        yield json.dumps(doc)


def _every_single_mutation(texts: list[str]) -> Iterator[str]:
    for text in texts:
        doc = json.loads(text)
        for path in _paths(doc):
            yield json.dumps(_mutate(doc, path, None, drop=True))
            for value in _REPLACEMENTS:
                yield json.dumps(_mutate(doc, path, value, drop=False))


def _assert_event_or_remote_error(decode: Callable[[str], Any], texts: Iterator[str]) -> int:
    tried = 0
    for text in texts:
        tried += 1
        try:
            decode(text)
        except RemoteProtocolError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point is to catch everything else
            pytest.fail(f"{type(exc).__name__}: {exc} for {text}")
    return tried


@pytest.mark.parametrize(
    ("decode", "texts"),
    [
        pytest.param(codec.decode_twilio, _TWILIO_VALID, id="twilio"),
        pytest.param(codec.decode_server_event, _SERVER_VALID, id="server"),
    ],
)
def test_random_mutations_decode_or_raise_remote_protocol_error(
    decode: Callable[[str], Any], texts: list[str]
) -> None:
    assert _assert_event_or_remote_error(decode, _random_mutations(texts, 200, seed=20260821)) == 200


@pytest.mark.parametrize(
    ("decode", "texts"),
    [
        pytest.param(codec.decode_twilio, _TWILIO_VALID, id="twilio"),
        pytest.param(codec.decode_server_event, _SERVER_VALID, id="server"),
    ],
)
def test_every_single_mutation_decodes_or_raises_remote_protocol_error(
    decode: Callable[[str], Any], texts: list[str]
) -> None:
    assert _assert_event_or_remote_error(decode, _every_single_mutation(texts)) > 200


# --- payload size without decoding ------------------------------------------------


def test_payload_size_matches_decoded_length() -> None:
    rng = random.Random(8000)
    for n in range(401):
        b64 = base64.b64encode(rng.randbytes(n)).decode("ascii")
        assert tw.payload_size(b64) == len(base64.b64decode(b64)) == n, (n, b64)


def test_payload_size_of_one_twilio_frame() -> None:
    frame = base64.b64encode(b"\xff" * 160).decode("ascii")
    assert tw.payload_size(frame) == 160 == 20 * tw.BYTES_PER_MS


# --- OpenAI Realtime GA: what the bridge sends validates against the SDK's models ----


def _validate_ga(model: type[OpenAIModel], wire: dict[str, Any]) -> OpenAIModel:
    validated = pydantic.TypeAdapter(model).validate_python(wire, strict=True)
    assert_no_extra(validated, "$")
    assert validated.model_dump(mode="json", by_alias=True, exclude_unset=True) == wire
    # The discriminated client-event union must pick the same model.
    as_union = pydantic.TypeAdapter(RealtimeClientEvent).validate_python(wire, strict=True)
    assert type(as_union) is model
    assert_no_extra(as_union, "$")
    return validated


SERVER_VAD_SESSION = rt.Session(
    model="gpt-realtime",
    instructions="You are the phone assistant for Acme.",
    output_modalities=("audio",),
    audio=rt.AudioConfig(
        input=rt.AudioInput(
            format=rt.AudioFormat(type="audio/pcmu"),
            turn_detection=rt.TurnDetection(
                type="server_vad",
                threshold=0.5,
                prefix_padding_ms=300,
                silence_duration_ms=500,
                create_response=True,
                interrupt_response=True,
                idle_timeout_ms=6000,
            ),
            transcription={"model": "gpt-4o-mini-transcribe"},
        ),
        output=rt.AudioOutput(format=rt.AudioFormat(type="audio/pcmu"), voice="marin", speed=1.0),
    ),
    tools=(
        {
            "type": "function",
            "name": "lookup_order",
            "description": "Look up an order by number. Tell the caller you are checking.",
            "parameters": {
                "type": "object",
                "properties": {"order_number": {"type": "string"}},
                "required": ["order_number"],
            },
        },
    ),
    tool_choice="auto",
)

SEMANTIC_VAD_SESSION = rt.Session(
    model="gpt-realtime",
    instructions="Be brief.",
    output_modalities=("audio",),
    audio=rt.AudioConfig(
        input=rt.AudioInput(
            format=rt.AudioFormat(type="audio/pcmu"),
            turn_detection=rt.TurnDetection(
                type="semantic_vad",
                eagerness="high",
                create_response=True,
                interrupt_response=True,
            ),
            noise_reduction={"type": "near_field"},
        ),
        output=rt.AudioOutput(format=rt.AudioFormat(type="audio/pcmu"), voice="cedar"),
    ),
)

USER_TEXT_ITEM = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "Caller pressed 1"}],
}

CLIENT_EVENTS = [
    pytest.param(rt.SessionUpdate(session=SERVER_VAD_SESSION), SessionUpdateEvent,
                 id="session.update-server_vad"),
    pytest.param(rt.SessionUpdate(session=SEMANTIC_VAD_SESSION, event_id="evt_session"),
                 SessionUpdateEvent, id="session.update-semantic_vad"),
    pytest.param(rt.SessionUpdate(session=rt.Session()), SessionUpdateEvent,
                 id="session.update-minimal"),
    pytest.param(rt.InputAudioBufferAppend(audio="//7+/w=="), InputAudioBufferAppendEvent,
                 id="input_audio_buffer.append"),
    pytest.param(rt.InputAudioBufferCommit(), InputAudioBufferCommitEvent,
                 id="input_audio_buffer.commit"),
    pytest.param(rt.InputAudioBufferClear(), InputAudioBufferClearEvent,
                 id="input_audio_buffer.clear"),
    pytest.param(rt.ConversationItemTruncate(item_id="item_1", audio_end_ms=1500),
                 ConversationItemTruncateEvent, id="conversation.item.truncate"),
    pytest.param(rt.ConversationItemTruncate(item_id="item_1", audio_end_ms=0, content_index=0,
                                             event_id="evt_trunc"),
                 ConversationItemTruncateEvent, id="conversation.item.truncate-event_id"),
    pytest.param(rt.ResponseCancel(), ResponseCancelEvent, id="response.cancel"),
    pytest.param(rt.ResponseCancel(response_id="resp_1"), ResponseCancelEvent,
                 id="response.cancel-response_id"),
    pytest.param(rt.ResponseCreate(), ResponseCreateEvent, id="response.create"),
    pytest.param(
        rt.ResponseCreate(response={"instructions": "Greet the caller: 'Thanks for calling "
                                                    "Acme, how can I help?'"}),
        ResponseCreateEvent,
        id="response.create-instructions",
    ),
    pytest.param(rt.ConversationItemCreate(item=USER_TEXT_ITEM), ConversationItemCreateEvent,
                 id="conversation.item.create-user-text"),
    pytest.param(
        rt.ConversationItemCreate(
            item={"type": "function_call_output", "call_id": "call_abc123",
                  "output": '{"status":"shipped"}'},
        ),
        ConversationItemCreateEvent,
        id="conversation.item.create-function_call_output",
    ),
    pytest.param(rt.ConversationItemDelete(item_id="item_1"), ConversationItemDeleteEvent,
                 id="conversation.item.delete"),
]


@pytest.mark.parametrize(("event", "model"), CLIENT_EVENTS)
def test_client_event_validates_against_ga_sdk_model(
    event: rt.ClientEvent, model: type[OpenAIModel]
) -> None:
    _validate_ga(model, json.loads(codec.encode(event)))


@pytest.mark.parametrize(("event", "model"), CLIENT_EVENTS)
def test_client_event_round_trips_through_decode_client_event(
    event: rt.ClientEvent, model: type[OpenAIModel]
) -> None:
    # The local realtime peer reads what the bridge sends with the same codec.
    text = codec.encode(event)
    assert json.loads(codec.encode(codec.decode_client_event(text))) == json.loads(text)


@pytest.mark.parametrize(
    ("wire", "model"),
    [
        pytest.param({"type": "response.cancel", "bogus": 1}, ResponseCancelEvent,
                     id="extra-top-level-key"),
        pytest.param(
            {"type": "session.update",
             "session": {"type": "realtime", "modalities": ["text", "audio"],
                         "input_audio_format": "g711_ulaw"}},
            SessionUpdateEvent,
            id="beta-session",
        ),
        pytest.param(
            {"type": "session.update",
             "session": {"type": "realtime",
                         "audio": {"output": {"format": {"type": "audio/pcmu"},
                                              "voice": "marin", "temperature": 0.8}}}},
            SessionUpdateEvent,
            id="extra-nested-key",
        ),
        pytest.param({"type": "conversation.item.truncate", "item_id": "item_1",
                      "audio_end_ms": "1500", "content_index": 0},
                     ConversationItemTruncateEvent, id="string-for-int"),
    ],
)
def test_ga_validation_catches_what_the_api_rejects(
    wire: dict[str, Any], model: type[OpenAIModel]
) -> None:
    # Guards the checker itself: without it the tests above would pass vacuously.
    with pytest.raises((AssertionError, pydantic.ValidationError)):
        _validate_ga(model, wire)


def test_full_session_update_is_the_documented_ga_payload() -> None:
    wire = json.loads(codec.encode(rt.SessionUpdate(session=SERVER_VAD_SESSION)))
    assert wire == {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "instructions": "You are the phone assistant for Acme.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "gpt-4o-mini-transcribe"},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                        "interrupt_response": True,
                        "idle_timeout_ms": 6000,
                    },
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0},
            },
            "tools": [
                {
                    "type": "function",
                    "name": "lookup_order",
                    "description": "Look up an order by number. Tell the caller you are checking.",
                    "parameters": {
                        "type": "object",
                        "properties": {"order_number": {"type": "string"}},
                        "required": ["order_number"],
                    },
                }
            ],
            "tool_choice": "auto",
        },
    }


@pytest.mark.parametrize(
    "session",
    [
        pytest.param(SERVER_VAD_SESSION, id="server_vad"),
        pytest.param(SEMANTIC_VAD_SESSION, id="semantic_vad"),
        pytest.param(rt.Session(), id="default"),
    ],
)
def test_session_update_has_no_beta_fields(session: rt.Session) -> None:
    wire = json.loads(codec.encode(rt.SessionUpdate(session=session)))
    assert wire["type"] == "session.update"
    body = wire["session"]
    assert body["type"] == "realtime"
    for beta_only in (
        "modalities",
        "input_audio_format",
        "output_audio_format",
        "voice",
        "speed",
        "temperature",
        "turn_detection",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "max_response_output_tokens",
    ):
        assert beta_only not in body, beta_only
    # Nothing beta-shaped nested either, and no explicit nulls (null clears a setting).
    flat = json.dumps(wire)
    assert "g711_ulaw" not in flat
    assert "temperature" not in flat
    assert "null" not in flat


def test_semantic_vad_carries_no_server_vad_fields() -> None:
    wire = json.loads(codec.encode(rt.SessionUpdate(session=SEMANTIC_VAD_SESSION)))
    assert wire["session"]["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }


# --- OpenAI Realtime GA: server events built from the SDK's models decode ------------

_GA_SESSION = RealtimeSessionCreateRequest(
    type="realtime",
    model="gpt-realtime",
    instructions="You are the phone assistant for Acme.",
    output_modalities=["audio"],
    audio=RealtimeAudioConfig(
        input=RealtimeAudioConfigInput(
            format=AudioPCMU(type="audio/pcmu"),
            turn_detection=ServerVad(type="server_vad", threshold=0.5, prefix_padding_ms=300,
                                     silence_duration_ms=500, create_response=True,
                                     interrupt_response=True, idle_timeout_ms=None),
        ),
        output=RealtimeAudioConfigOutput(format=AudioPCMU(type="audio/pcmu"), voice="marin",
                                         speed=1.0),
    ),
)

_RESPONSE_AUDIO = ResponseAudio(
    output=ResponseAudioOutput(format=AudioPCMU(type="audio/pcmu"), voice="marin")
)


SDK_RESPONSE_CREATED = ResponseCreatedEvent(
    type="response.created", event_id="event_4",
    response=RealtimeResponse(id="resp_1", object="realtime.response", status="in_progress",
                              output=[], conversation_id="conv_1", output_modalities=["audio"],
                              audio=_RESPONSE_AUDIO, max_output_tokens="inf"),
)
SDK_RESPONSE_DONE = ResponseDoneEvent(
    type="response.done", event_id="event_8",
    response=RealtimeResponse(
        id="resp_1", object="realtime.response", status="cancelled",
        status_details=RealtimeResponseStatus(type="cancelled", reason="turn_detected"),
        output=[], conversation_id="conv_1", output_modalities=["audio"], audio=_RESPONSE_AUDIO,
    ),
)


def _expected_mapping(cls: type[Any], key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda d: cls(**{key: d[key]}, event_id=d["event_id"])


SDK_SERVER_EVENTS = [
    pytest.param(
        InputAudioBufferSpeechStartedEvent(type="input_audio_buffer.speech_started",
                                           event_id="event_1", audio_start_ms=1234,
                                           item_id="item_2"),
        lambda d: rt.SpeechStarted(audio_start_ms=1234, item_id="item_2", event_id="event_1"),
        id="speech_started",
    ),
    pytest.param(
        InputAudioBufferSpeechStoppedEvent(type="input_audio_buffer.speech_stopped",
                                           event_id="event_2", audio_end_ms=2345,
                                           item_id="item_2"),
        lambda d: rt.SpeechStopped(audio_end_ms=2345, item_id="item_2", event_id="event_2"),
        id="speech_stopped",
    ),
    pytest.param(
        InputAudioBufferCommittedEvent(type="input_audio_buffer.committed", event_id="event_3",
                                       item_id="item_2", previous_item_id=None),
        lambda d: rt.InputAudioBufferCommitted(item_id="item_2", previous_item_id=None,
                                               event_id="event_3"),
        id="committed",
    ),
    pytest.param(
        SDK_RESPONSE_CREATED,
        _expected_mapping(rt.ResponseCreated, "response"),
        id="response.created",
    ),
    pytest.param(
        ResponseAudioDeltaEvent(type="response.output_audio.delta", event_id="event_5",
                                response_id="resp_1", item_id="item_3", output_index=0,
                                content_index=0, delta="//7+/w=="),
        lambda d: rt.OutputAudioDelta(response_id="resp_1", item_id="item_3", delta="//7+/w==",
                                      output_index=0, content_index=0, event_id="event_5"),
        id="response.output_audio.delta",
    ),
    pytest.param(
        ResponseAudioDoneEvent(type="response.output_audio.done", event_id="event_6",
                               response_id="resp_1", item_id="item_3", output_index=1,
                               content_index=0),
        lambda d: rt.OutputAudioDone(response_id="resp_1", item_id="item_3", output_index=1,
                                     content_index=0, event_id="event_6"),
        id="response.output_audio.done",
    ),
    pytest.param(
        ResponseAudioTranscriptDoneEvent(type="response.output_audio_transcript.done",
                                         event_id="event_7", response_id="resp_1",
                                         item_id="item_3", output_index=0, content_index=0,
                                         transcript="Thanks for calling Acme."),
        lambda d: rt.OutputAudioTranscriptDone(response_id="resp_1", item_id="item_3",
                                               transcript="Thanks for calling Acme.",
                                               event_id="event_7"),
        id="response.output_audio_transcript.done",
    ),
    pytest.param(
        SDK_RESPONSE_DONE,
        _expected_mapping(rt.ResponseDone, "response"),
        id="response.done",
    ),
    pytest.param(
        ConversationItemTruncatedEvent(type="conversation.item.truncated", event_id="event_9",
                                       item_id="item_3", content_index=0, audio_end_ms=1500),
        lambda d: rt.ConversationItemTruncated(item_id="item_3", audio_end_ms=1500,
                                               content_index=0, event_id="event_9"),
        id="conversation.item.truncated",
    ),
    pytest.param(
        RealtimeErrorEvent(
            type="error", event_id="event_10",
            error=RealtimeError(type="invalid_request_error", code=None,
                                message="Audio content of 3700ms is already shorter than 3760ms",
                                param=None, event_id="evt_trunc"),
        ),
        lambda d: rt.ErrorEvent(
            event_id="event_10",
            error=rt.ErrorInfo(type="invalid_request_error", code=None, param=None,
                               message="Audio content of 3700ms is already shorter than 3760ms",
                               event_id="evt_trunc"),
        ),
        id="error",
    ),
    pytest.param(
        RealtimeErrorEvent(
            type="error", event_id="event_11",
            error=RealtimeError(type="invalid_request_error", code="session_expired",
                                message="Your session hit the maximum duration of 60 minutes."),
        ),
        lambda d: rt.ErrorEvent(
            event_id="event_11",
            error=rt.ErrorInfo(type="invalid_request_error", code="session_expired",
                               message="Your session hit the maximum duration of 60 minutes."),
        ),
        id="error-session_expired",
    ),
    pytest.param(
        SessionCreatedEvent(type="session.created", event_id="event_12", session=_GA_SESSION),
        _expected_mapping(rt.SessionCreated, "session"),
        id="session.created",
    ),
    pytest.param(
        SessionUpdatedEvent(type="session.updated", event_id="event_13", session=_GA_SESSION),
        _expected_mapping(rt.SessionUpdated, "session"),
        id="session.updated",
    ),
]


def _sdk_dumps(event: OpenAIModel) -> Iterator[str]:
    """The event as the server might send it: only set fields, or every field with nulls."""
    yield event.to_json(indent=None)
    yield event.model_dump_json(by_alias=True)


@pytest.mark.parametrize(("sdk_event", "expected"), SDK_SERVER_EVENTS)
def test_sdk_server_event_decodes(
    sdk_event: OpenAIModel, expected: Callable[[dict[str, Any]], rt.ServerEvent]
) -> None:
    for text in _sdk_dumps(sdk_event):
        raw = json.loads(text)
        event = codec.decode_server_event(text)
        assert not isinstance(event, rt.UnknownServerEvent), raw["type"]
        assert event == expected(raw), text


def test_sdk_response_events_expose_id_and_status() -> None:
    created = codec.decode_server_event(SDK_RESPONSE_CREATED.to_json(indent=None))
    assert isinstance(created, rt.ResponseCreated)
    assert created.response_id == "resp_1"
    done = codec.decode_server_event(SDK_RESPONSE_DONE.to_json(indent=None))
    assert isinstance(done, rt.ResponseDone)
    assert (done.response_id, done.status) == ("resp_1", "cancelled")


# --- the per-frame fast paths agree with the general ones, byte for byte ---------------

_AWKWARD = ["", "AAEC/+8=", 'quote " and \\ backslash', "tab\tnew\nline\x00", "ünïcødé ☎",
            "\ud800", "x" * 3000]


def _general(message: Any) -> str:
    return json.dumps(codec.converter.unstructure(message), separators=(",", ":"))


@pytest.mark.parametrize("text", _AWKWARD)
def test_fast_encodes_match_the_general_path(text: str) -> None:
    for message in [tw.Media(stream_sid=text, payload=text), tw.Mark(stream_sid=text, name=text),
                    rt.InputAudioBufferAppend(audio=text),
                    tw.Media(stream_sid="MZ1", payload=text, chunk=3),  # general shapes too
                    tw.Mark(stream_sid="MZ1", name=text, sequence_number=4),
                    rt.InputAudioBufferAppend(audio=text, event_id="e1")]:
        assert codec.encode(message) == _general(message)


def _outcome(decode: Callable[[str], Any], text: str) -> Any:
    try:
        return decode(text)
    except RemoteProtocolError:
        return RemoteProtocolError


_MEDIA = {"event": "media", "sequenceNumber": "4", "streamSid": "MZ1",
          "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "AAEC"}}


def _variants(base: dict[str, Any], section: str) -> Iterator[dict[str, Any]]:
    """`base`, and versions with each field removed or given a wrong type."""
    yield base
    for key in list(base) + [f"{section}.{k}" for k in base[section]]:
        for value in [None, 7, 0.5, True, [], {}, "x", "1"]:
            raw = copy.deepcopy(base)
            outer, _, inner = key.partition(".")
            target = raw[outer] if inner else raw
            name = inner or outer
            if not isinstance(target, dict):
                continue
            if value is None:
                target.pop(name, None)
            else:
                target[name] = value
            yield raw


@pytest.mark.parametrize("raw", list(_variants(_MEDIA, "media")), ids=str)
def test_the_caller_audio_fast_path_agrees_with_decode_twilio(raw: dict[str, Any]) -> None:
    for text in [json.dumps(raw), json.dumps(raw, separators=(",", ":"))]:
        fast = _outcome(codec.decode_twilio_audio, text)
        general = _outcome(codec.decode_twilio, text)
        if not isinstance(fast, str):
            assert fast == general
            continue
        # Only caller audio with a string payload and stream SID takes the fast path. It
        # does not read the counters (diagnostics only), so a garbled counter loses no
        # audio there; otherwise it agrees with the general path.
        if general is RemoteProtocolError:
            raw = copy.deepcopy(raw)
            raw.pop("sequenceNumber", None)
            for key in ["chunk", "timestamp"]:
                raw["media"].pop(key, None)
            general = codec.decode_twilio(json.dumps(raw))
        assert isinstance(general, tw.Media) and general.payload == fast


_DELTA = {"type": "response.output_audio.delta", "event_id": "ev_1", "response_id": "resp_1",
          "item_id": "item_1", "output_index": 0, "content_index": 0, "delta": "AAEC"}


def _delta_variants() -> Iterator[dict[str, Any]]:
    yield _DELTA
    for key in ["event_id", "response_id", "item_id", "output_index", "content_index", "delta"]:
        for value in [None, 7, 0.0, 2.0, 0.5, True, [], "x", "1"]:
            raw = dict(_DELTA)
            if value is None:
                raw.pop(key)
            else:
                raw[key] = value
            yield raw
    yield _DELTA | {"event_id": None}  # explicit null where null is allowed


@pytest.mark.parametrize("raw", list(_delta_variants()), ids=str)
def test_the_delta_fast_path_agrees_with_cattrs(raw: dict[str, Any]) -> None:
    def general(text: str) -> Any:
        loaded = json.loads(text)
        return codec._structure(loaded, rt.OutputAudioDelta, loaded["type"])

    text = json.dumps(raw)
    assert _outcome(codec.decode_server_event, text) == _outcome(general, text)
