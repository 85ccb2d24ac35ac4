"""JSON text <-> events, for both protocols: the one place wire names live.

`decode_*` never raises anything but `RemoteProtocolError`: text that is not a JSON
object, or a known message with missing or mistyped fields, is the peer's bad input.
A well-formed message of a type we do not model decodes to an `Unknown...` event.
`encode` raises `LocalProtocolError` for something that is not a known event.

Twilio numbers arrive as strings ("sequenceNumber": "4"); we accept strings or
numbers and send strings, as Twilio does. What we send to Twilio carries exactly the
documented fields: optional inbound-only fields are dropped when unset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs

from . import realtime as rt
from . import twilio as tw
from ._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "converter",
    "decode_client_event",
    "decode_server_event",
    "decode_twilio",
    "encode",
]

converter = cattrs.Converter()

T = TypeVar("T")

# --- Twilio Media Streams ----------------------------------------------------------

_TWILIO_EVENTS: dict[str, type[Any]] = {
    "connected": tw.Connected,
    "start": tw.Start,
    "media": tw.Media,
    "mark": tw.Mark,
    "clear": tw.Clear,
    "dtmf": tw.Dtmf,
    "stop": tw.Stop,
}
_TWILIO_NAMES = {cls: name for name, cls in _TWILIO_EVENTS.items()}


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _with_seq(d: dict[str, Any], seq: int | None) -> dict[str, Any]:
    if seq is not None:
        d["sequenceNumber"] = str(seq)
    return d


def _sid(raw: Mapping[str, Any], inner: Mapping[str, Any] | None = None) -> str:
    sid = raw.get("streamSid")
    if sid is None and inner is not None:
        sid = inner.get("streamSid")
    if not isinstance(sid, str):
        raise ValueError("streamSid missing or not a string")
    return sid


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    inner = raw.get(key)
    if not isinstance(inner, Mapping):
        raise ValueError(f"{key!r} object missing")
    return inner


def _str(inner: Mapping[str, Any], key: str) -> str:
    value = inner[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} is not a string")
    return value


def _connected_to(m: tw.Connected) -> dict[str, Any]:
    return {"event": "connected", "protocol": m.protocol, "version": m.version}


def _connected_from(raw: Mapping[str, Any], _: type) -> tw.Connected:
    return tw.Connected(protocol=str(raw.get("protocol", "")), version=str(raw.get("version", "")))


def _start_to(m: tw.Start) -> dict[str, Any]:
    fmt = m.media_format
    d = _with_seq({"event": "start"}, m.sequence_number)
    d["start"] = {
        "accountSid": m.account_sid,
        "streamSid": m.stream_sid,
        "callSid": m.call_sid,
        "tracks": list(m.tracks),
        "mediaFormat": {
            "encoding": fmt.encoding,
            "sampleRate": fmt.sample_rate,
            "channels": fmt.channels,
        },
        "customParameters": dict(m.custom_parameters),
    }
    d["streamSid"] = m.stream_sid
    return d


def _start_from(raw: Mapping[str, Any], _: type) -> tw.Start:
    s = _section(raw, "start")
    fmt = s.get("mediaFormat") or {}
    params = s.get("customParameters") or {}
    if not isinstance(params, Mapping):
        raise ValueError("customParameters is not an object")
    return tw.Start(
        stream_sid=_sid(raw, s),
        account_sid=str(s.get("accountSid", "")),
        call_sid=str(s.get("callSid", "")),
        tracks=tuple(str(t) for t in s.get("tracks") or ("inbound",)),
        custom_parameters={str(k): str(v) for k, v in params.items()},
        media_format=tw.MediaFormat(
            encoding=str(fmt.get("encoding", "audio/x-mulaw")),
            sample_rate=int(fmt.get("sampleRate", 8000)),
            channels=int(fmt.get("channels", 1)),
        ),
        sequence_number=_opt_int(raw.get("sequenceNumber")),
    )


def _media_to(m: tw.Media) -> dict[str, Any]:
    media: dict[str, Any] = {}
    if m.track is not None:
        media["track"] = m.track
    if m.chunk is not None:
        media["chunk"] = str(m.chunk)
    if m.timestamp is not None:
        media["timestamp"] = str(m.timestamp)
    media["payload"] = m.payload
    d = _with_seq({"event": "media"}, m.sequence_number)
    d["media"] = media
    d["streamSid"] = m.stream_sid
    return d


def _media_from(raw: Mapping[str, Any], _: type) -> tw.Media:
    media = _section(raw, "media")
    return tw.Media(
        stream_sid=_sid(raw),
        payload=_str(media, "payload"),
        track=media.get("track"),
        chunk=_opt_int(media.get("chunk")),
        timestamp=_opt_int(media.get("timestamp")),
        sequence_number=_opt_int(raw.get("sequenceNumber")),
    )


def _mark_to(m: tw.Mark) -> dict[str, Any]:
    d = _with_seq({"event": "mark"}, m.sequence_number)
    d["streamSid"] = m.stream_sid
    d["mark"] = {"name": m.name}
    return d


def _mark_from(raw: Mapping[str, Any], _: type) -> tw.Mark:
    return tw.Mark(
        stream_sid=_sid(raw),
        name=_str(_section(raw, "mark"), "name"),
        sequence_number=_opt_int(raw.get("sequenceNumber")),
    )


def _clear_to(m: tw.Clear) -> dict[str, Any]:
    return {"event": "clear", "streamSid": m.stream_sid}


def _clear_from(raw: Mapping[str, Any], _: type) -> tw.Clear:
    return tw.Clear(stream_sid=_sid(raw))


def _dtmf_to(m: tw.Dtmf) -> dict[str, Any]:
    d: dict[str, Any] = {"event": "dtmf", "streamSid": m.stream_sid}
    _with_seq(d, m.sequence_number)
    d["dtmf"] = {"track": m.track, "digit": m.digit}
    return d


def _dtmf_from(raw: Mapping[str, Any], _: type) -> tw.Dtmf:
    dtmf = _section(raw, "dtmf")
    return tw.Dtmf(
        stream_sid=_sid(raw),
        digit=_str(dtmf, "digit"),
        track=str(dtmf.get("track", "inbound_track")),
        sequence_number=_opt_int(raw.get("sequenceNumber")),
    )


def _stop_to(m: tw.Stop) -> dict[str, Any]:
    d = _with_seq({"event": "stop"}, m.sequence_number)
    d["stop"] = {"accountSid": m.account_sid, "callSid": m.call_sid}
    d["streamSid"] = m.stream_sid
    return d


def _stop_from(raw: Mapping[str, Any], _: type) -> tw.Stop:
    stop = raw.get("stop")
    if not isinstance(stop, Mapping):
        stop = {}
    return tw.Stop(
        stream_sid=_sid(raw),
        account_sid=str(stop.get("accountSid", "")),
        call_sid=str(stop.get("callSid", "")),
        sequence_number=_opt_int(raw.get("sequenceNumber")),
    )


def _register(cls: type[T], to: Callable[[T], dict[str, Any]], frm: Callable[..., T]) -> None:
    converter.register_unstructure_hook(cls, to)
    converter.register_structure_hook(cls, frm)


_register(tw.Connected, _connected_to, _connected_from)
_register(tw.Start, _start_to, _start_from)
_register(tw.Media, _media_to, _media_from)
_register(tw.Mark, _mark_to, _mark_from)
_register(tw.Clear, _clear_to, _clear_from)
_register(tw.Dtmf, _dtmf_to, _dtmf_from)
_register(tw.Stop, _stop_to, _stop_from)

# --- OpenAI Realtime -------------------------------------------------------------

_CLIENT_EVENTS: dict[str, type[Any]] = {
    "session.update": rt.SessionUpdate,
    "input_audio_buffer.append": rt.InputAudioBufferAppend,
    "input_audio_buffer.commit": rt.InputAudioBufferCommit,
    "input_audio_buffer.clear": rt.InputAudioBufferClear,
    "conversation.item.create": rt.ConversationItemCreate,
    "conversation.item.truncate": rt.ConversationItemTruncate,
    "conversation.item.delete": rt.ConversationItemDelete,
    "response.create": rt.ResponseCreate,
    "response.cancel": rt.ResponseCancel,
}
_SERVER_EVENTS: dict[str, type[Any]] = {
    "session.created": rt.SessionCreated,
    "session.updated": rt.SessionUpdated,
    "input_audio_buffer.speech_started": rt.SpeechStarted,
    "input_audio_buffer.speech_stopped": rt.SpeechStopped,
    "input_audio_buffer.committed": rt.InputAudioBufferCommitted,
    "response.created": rt.ResponseCreated,
    "response.output_audio.delta": rt.OutputAudioDelta,
    "response.output_audio.done": rt.OutputAudioDone,
    "response.output_audio_transcript.done": rt.OutputAudioTranscriptDone,
    "conversation.item.input_audio_transcription.completed": rt.InputTranscriptionCompleted,
    "response.done": rt.ResponseDone,
    "conversation.item.truncated": rt.ConversationItemTruncated,
    "error": rt.ErrorEvent,
}
_REALTIME_NAMES = {cls: name for name, cls in (_CLIENT_EVENTS | _SERVER_EVENTS).items()}


def _drop_none_factory(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """Unstructure realtime attrs classes, leaving out fields that are None."""
    names = [a.name for a in attrs.fields(cls)]
    wire_type = _REALTIME_NAMES.get(cls)

    def unstructure(obj: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"type": wire_type} if wire_type is not None else {}
        for name in names:
            value = getattr(obj, name)
            if value is not None:
                d[name] = converter.unstructure(value)
        return d

    return unstructure


converter.register_unstructure_hook_factory(
    lambda cls: attrs.has(cls) and cls.__module__ == rt.__name__, _drop_none_factory
)


def _unknown_to(m: rt.UnknownClientEvent | rt.UnknownServerEvent) -> dict[str, Any]:
    return dict(m.raw)


converter.register_unstructure_hook(rt.UnknownClientEvent, _unknown_to)
converter.register_unstructure_hook(rt.UnknownServerEvent, _unknown_to)

# Strict scalars: cattrs would turn `null` into "None" (valid base64!) and 1.7 into 1.


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise TypeError(f"expected an integer, got {value!r}")
    return int(value)


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


converter.register_structure_hook(str, _strict_str)
converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook(bool, _strict_bool)

# --- entry points ------------------------------------------------------------------


def _load(text: str | bytes, key: str) -> tuple[dict[str, Any], str]:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RemoteProtocolError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise RemoteProtocolError(f"expected a JSON object, got {type(raw).__name__}")
    kind = raw.get(key)
    if not isinstance(kind, str):
        raise RemoteProtocolError(f"message has no string {key!r} field")
    return raw, kind


def _structure(raw: dict[str, Any], cls: type[T], kind: str) -> T:
    try:
        return converter.structure(raw, cls)
    except Exception as exc:  # cattrs, KeyError, ValueError, TypeError: all the peer's fault
        detail = "; ".join(cattrs.transform_error(exc)) if isinstance(
            exc, cattrs.BaseValidationError) else f"{type(exc).__name__}: {exc}"
        raise RemoteProtocolError(f"malformed {kind!r} message: {detail}") from None


def decode_twilio(text: str | bytes) -> tw.TwilioMessage:
    """Parse one Media Streams text frame (either direction)."""
    raw, kind = _load(text, "event")
    cls = _TWILIO_EVENTS.get(kind)
    if cls is None:
        return tw.UnknownTwilioMessage(event=kind, raw=raw)
    msg: tw.TwilioMessage = _structure(raw, cls, kind)
    return msg


def decode_server_event(text: str | bytes) -> rt.ServerEvent:
    """Parse one Realtime server event."""
    raw, kind = _load(text, "type")
    cls = _SERVER_EVENTS.get(kind)
    if cls is None:
        return rt.UnknownServerEvent(type=kind, raw=raw)
    event: rt.ServerEvent = _structure(raw, cls, kind)
    return event


def decode_client_event(text: str | bytes) -> rt.ClientEvent:
    """Parse one Realtime client event (what a realtime server receives)."""
    raw, kind = _load(text, "type")
    cls = _CLIENT_EVENTS.get(kind)
    if cls is None:
        return rt.UnknownClientEvent(type=kind, raw=raw)
    event: rt.ClientEvent = _structure(raw, cls, kind)
    return event


def encode(message: tw.TwilioMessage | rt.ClientEvent | rt.ServerEvent) -> str:
    """Serialize one message of either protocol to compact JSON text."""
    cls = type(message)
    if cls not in _TWILIO_NAMES and cls not in _REALTIME_NAMES and not isinstance(
        message, (rt.UnknownClientEvent, rt.UnknownServerEvent)
    ):
        raise LocalProtocolError(f"not a message we can send: {message!r}")
    return json.dumps(converter.unstructure(message), separators=(",", ":"))
