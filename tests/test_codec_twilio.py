"""Twilio Media Streams through `callbridge.codec`, against recorded messages.

What Twilio sends decodes to typed events and re-encodes to the same JSON (its
numbers are strings on the wire); what the bridge sends has exactly the documented
keys; malformed input is a `RemoteProtocolError` and an unknown event is kept with
its raw JSON. The recorded messages are in tests/_recorded.py (protocols.md A1, A2).
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
from _recorded import (
    ACCOUNT,
    CALL,
    CONNECTED,
    DTMF,
    MARK_ECHO,
    MEDIA,
    OUT_CLEAR,
    OUT_MARK,
    OUT_MEDIA,
    SID,
    START,
    START_EMPTY_PARAMETERS,
    START_NO_PARAMETERS,
    STOP,
)

from callbridge import codec
from callbridge import twilio as tw
from callbridge._errors import RemoteProtocolError

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



# --- payload size without decoding ------------------------------------------------


def test_payload_size_matches_decoded_length() -> None:
    rng = random.Random(8000)
    for n in range(401):
        b64 = base64.b64encode(rng.randbytes(n)).decode("ascii")
        assert tw.payload_size(b64) == len(base64.b64decode(b64)) == n, (n, b64)


def test_payload_size_of_one_twilio_frame() -> None:
    frame = base64.b64encode(b"\xff" * 160).decode("ascii")
    assert tw.payload_size(frame) == 160 == 20 * tw.BYTES_PER_MS

