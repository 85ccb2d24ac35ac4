"""What the bridge sends to OpenAI validates against the GA models of the `openai` package.

Every client event `callbridge.codec` encodes is checked strictly against the SDK's
models (no key they lack, nothing they would coerce) and round-trips through
`decode_client_event`; the full `session.update` is the documented GA payload, with
no beta-only field left in, which the live API rejects.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from _schema import assert_no_extra
from openai import BaseModel as OpenAIModel
from openai.types.realtime import (
    ConversationItemCreateEvent,
    ConversationItemDeleteEvent,
    ConversationItemTruncateEvent,
    InputAudioBufferAppendEvent,
    InputAudioBufferClearEvent,
    InputAudioBufferCommitEvent,
    RealtimeClientEvent,
    ResponseCancelEvent,
    ResponseCreateEvent,
    SessionUpdateEvent,
)

from callbridge import codec
from callbridge import realtime as rt

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

