"""The codec's per-frame fast paths agree with the general ones, byte for byte.

The messages of every 20 ms of audio skip cattrs' dispatch (see `callbridge.codec`):
our `media`, `mark` and `input_audio_buffer.append` are assembled as strings, caller
audio and the model's `response.output_audio.delta` are read by hand. These tests
hold each to the general path: the same text for awkward strings, and the same
event or the same `RemoteProtocolError` for every field removed or mistyped.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from callbridge import codec
from callbridge import realtime as rt
from callbridge import twilio as tw
from callbridge._errors import RemoteProtocolError

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
        if not isinstance(fast, tuple):
            assert fast == general
            continue
        # Only caller audio with a string payload and stream SID takes the fast path. It
        # does not read the counters (diagnostics only), so a garbled counter loses no
        # audio there; otherwise it agrees with the general path.
        stamp = raw.get("media", {}).get("timestamp")
        readable = (type(stamp) is str and stamp.isascii() and stamp.isdigit()) or (
            type(stamp) is int and stamp >= 0)
        assert fast[2] == (int(stamp) if readable else None)  # an unreadable one: None
        if general is RemoteProtocolError:
            stripped = copy.deepcopy(raw)
            stripped.pop("sequenceNumber", None)
            for key in ["chunk", "timestamp"]:
                stripped["media"].pop(key, None)
            general = codec.decode_twilio(json.dumps(stripped))
        assert isinstance(general, tw.Media) and (general.stream_sid, general.payload) == fast[:2]


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
