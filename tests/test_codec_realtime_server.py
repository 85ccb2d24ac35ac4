"""OpenAI Realtime server events through `callbridge.codec`: recorded shapes and the SDK's.

The recorded events (protocols.md B4, in tests/_recorded.py) decode, malformed ones
are a `RemoteProtocolError`, unknown types are kept with their raw JSON; and every
server event the bridge reads, built from the GA models the `openai` package
generates from OpenAI's API spec, decodes to the event we expect, so a field we
misname shows up here and not on a live call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _recorded import (
    BETA_DISABLED,
    DELTA,
    RESPONSE_DONE,
    SPEECH_STARTED,
)
from openai import BaseModel as OpenAIModel
from openai.types.realtime import (
    ConversationItemTruncatedEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeError,
    RealtimeErrorEvent,
    RealtimeResponse,
    RealtimeResponseStatus,
    RealtimeSessionCreateRequest,
    ResponseAudioDeltaEvent,
    ResponseAudioDoneEvent,
    ResponseAudioTranscriptDeltaEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from openai.types.realtime.realtime_audio_config import RealtimeAudioConfig
from openai.types.realtime.realtime_audio_config_input import RealtimeAudioConfigInput
from openai.types.realtime.realtime_audio_config_output import RealtimeAudioConfigOutput
from openai.types.realtime.realtime_audio_formats import AudioPCMU
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad
from openai.types.realtime.realtime_response import Audio as ResponseAudio
from openai.types.realtime.realtime_response import AudioOutput as ResponseAudioOutput

from callbridge import codec
from callbridge import realtime as rt
from callbridge._errors import RemoteProtocolError


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
        ResponseAudioTranscriptDeltaEvent(type="response.output_audio_transcript.delta",
                                          event_id="event_7d", response_id="resp_1",
                                          item_id="item_3", output_index=0, content_index=0,
                                          delta="Thanks for"),
        lambda d: rt.OutputAudioTranscriptDelta(response_id="resp_1", item_id="item_3",
                                                delta="Thanks for", event_id="event_7d"),
        id="response.output_audio_transcript.delta",
    ),
    pytest.param(
        ResponseFunctionCallArgumentsDoneEvent(
            type="response.function_call_arguments.done", event_id="event_8a",
            response_id="resp_1", item_id="item_4", output_index=1, call_id="call_1",
            name="lookup_order", arguments='{"order_id": "123456"}'),
        lambda d: rt.FunctionCallArgumentsDone(
            response_id="resp_1", item_id="item_4", output_index=1, call_id="call_1",
            name="lookup_order", arguments='{"order_id": "123456"}', event_id="event_8a"),
        id="response.function_call_arguments.done",
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

