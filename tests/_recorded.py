"""Recorded wire messages the codec tests share: what Twilio and OpenAI really send.

The Twilio literals are copied from the Media Streams examples in
`shared/reference/protocols.md` (A1: what Twilio sends, A2: what the bridge sends),
the realtime server events from B4; placeholders (`MZXXXX...`) as in the reference.
They live here, not in one test module, because the per-protocol tests and the
mutation tests (tests/test_codec_mutations.py) start from the same messages.
"""

from __future__ import annotations

from typing import Any

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

# --- realtime server events: recorded shapes (protocols.md B4) -----------------------

DELTA: dict[str, Any] = {
    "type": "response.output_audio.delta",
    "event_id": "event_1",
    "response_id": "resp_1",
    "item_id": "item_1",
    "output_index": 0,
    "content_index": 0,
    "delta": "//7+/w==",
}
SPEECH_STARTED: dict[str, Any] = {
    "type": "input_audio_buffer.speech_started",
    "event_id": "event_2",
    "audio_start_ms": 1234,
    "item_id": "item_2",
}
RESPONSE_DONE: dict[str, Any] = {
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

