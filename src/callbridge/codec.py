"""JSON text <-> events, for both protocols: the one place wire names live.

`decode_*` never raises anything but `RemoteProtocolError`: text that is not a JSON
object, or a known message with missing or mistyped fields, is the peer's bad input.
A well-formed message of a type we do not model decodes to an `Unknown...` event.
`encode` raises `LocalProtocolError` for something that is not a known event.

Twilio numbers arrive as strings ("sequenceNumber": "4"); we accept strings or
numbers and send strings, as Twilio does. What we send to Twilio carries exactly the
documented fields: optional inbound-only fields are dropped when unset.

Hot path: the five messages of every 20 ms of audio (caller `media`, the append
to the model, the model's delta, our `media` and `mark` to Twilio, and the mark's
echo) skip cattrs' dispatch: Twilio messages go straight to their hooks, the delta
has a hand-written structurer, and the outbound ones are assembled as strings. A
test holds each fast path byte-for-byte (and error-for-error) to the general one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
import orjson

from . import realtime as rt
from . import twilio as tw
from ._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "converter",
    "decode_client_event",
    "decode_server_event",
    "decode_twilio",
    "decode_twilio_audio",
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

# the hooks above, by wire name: decode_twilio calls them without cattrs' dispatch
_TWILIO_FROM: dict[str, Callable[[Mapping[str, Any], type], Any]] = {
    "connected": _connected_from, "start": _start_from, "media": _media_from,
    "mark": _mark_from, "clear": _clear_from, "dtmf": _dtmf_from, "stop": _stop_from,
}

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
    "response.output_audio_transcript.delta": rt.OutputAudioTranscriptDelta,
    "response.function_call_arguments.done": rt.FunctionCallArgumentsDone,
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


def _malformed(kind: str, exc: Exception) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed {kind!r} message: {type(exc).__name__}: {exc}")


def decode_twilio(text: str | bytes) -> tw.TwilioMessage:
    """Parse one Media Streams text frame (either direction)."""
    raw, kind = _load(text, "event")
    return _twilio_from(raw, kind)


def decode_twilio_audio(text: str | bytes) -> tuple[str, str, int | None] | tw.TwilioMessage:
    """`decode_twilio`, except that a caller-audio `media` frame comes back as just
    `(stream_sid, payload, timestamp)` (base64; ms on the stream's clock): the reader's
    per-frame fast path, with no message object. Garbled counters (`sequenceNumber`,
    `chunk`, `timestamp`) do not cost the audio: an unreadable timestamp is None. A
    frame whose payload or stream SID is not a string takes the general path."""
    raw: dict[str, Any] | None = _fast_load(text)
    if raw is not None and raw.get("event") == "media":
        media = raw.get("media")
        # (a float timestamp may be an integer past 64 bits, which only json reads whole)
        if type(media) is not dict or type(media.get("timestamp")) is not float:
            audio = _caller_audio(raw)
            if audio is not None:
                return audio
    raw, kind = _load(text, "event")
    if kind == "media" and (audio := _caller_audio(raw)) is not None:
        return audio
    return _twilio_from(raw, kind)


def _caller_audio(raw: dict[str, Any]) -> tuple[str, str, int | None] | None:
    """A media frame's (stream SID, payload, timestamp), or None for the general path."""
    media = raw.get("media")
    if type(media) is dict:
        payload = media.get("payload")
        sid = raw.get("streamSid")
        if type(payload) is str and type(sid) is str:
            stamp = media.get("timestamp")
            if type(stamp) is str and stamp.isascii() and stamp.isdigit():
                return sid, payload, int(stamp)
            return sid, payload, stamp if type(stamp) is int and stamp >= 0 else None
    return None


def _fast_load(text: str | bytes) -> dict[str, Any] | None:
    """orjson's reading of a message, for the per-frame fast paths (Twilio's `media`,
    the model's audio delta), or None. They take only strings and ints from it, which
    orjson (in C, several times faster) reads exactly as json does; whatever else
    they meet, and what orjson refuses (NaN, lone surrogates), is read again by json
    (`_load`), which every other message goes through."""
    try:
        raw = orjson.loads(text)
    except ValueError:
        return None
    return raw if type(raw) is dict else None


def _twilio_from(raw: dict[str, Any], kind: str) -> tw.TwilioMessage:
    hook = _TWILIO_FROM.get(kind)
    if hook is None:
        return tw.UnknownTwilioMessage(event=kind, raw=raw)
    try:
        msg: tw.TwilioMessage = hook(raw, _TWILIO_EVENTS[kind])
    except Exception as exc:  # KeyError, ValueError, TypeError: all the peer's fault
        raise _malformed(kind, exc) from None
    return msg


def _delta_from(raw: Mapping[str, Any]) -> rt.OutputAudioDelta:
    """`response.output_audio.delta` without cattrs: the same strict rules, by hand."""
    response_id, item_id, delta = raw["response_id"], raw["item_id"], raw["delta"]
    event_id = raw.get("event_id")
    if not (type(response_id) is type(item_id) is type(delta) is str
            and (event_id is None or type(event_id) is str)):
        raise TypeError("expected strings for response_id, item_id, delta, event_id")
    output_index, content_index = raw.get("output_index", 0), raw.get("content_index", 0)
    if type(output_index) is not int or type(content_index) is not int:
        # floats like 0.0 are fine, 0.5 and true are not: leave that to the strict hooks
        output_index = _strict_int(output_index, int)
        content_index = _strict_int(content_index, int)
    return rt.OutputAudioDelta(response_id=response_id, item_id=item_id, delta=delta,
                               output_index=output_index, content_index=content_index,
                               event_id=event_id)


def decode_server_event(text: str | bytes) -> rt.ServerEvent:
    """Parse one Realtime server event."""
    fast = _fast_load(text)
    if (fast is not None and fast.get("type") == "response.output_audio.delta"
            and type(fast.get("output_index", 0)) is int
            and type(fast.get("content_index", 0)) is int):
        try:
            return _delta_from(fast)
        except Exception:  # the general path below says what is wrong
            pass
    raw, kind = _load(text, "type")
    if kind == "response.output_audio.delta":
        try:
            return _delta_from(raw)
        except Exception as exc:
            raise _malformed(kind, exc) from None
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


_json_str = json.JSONEncoder(ensure_ascii=True).encode  # one JSON string literal


def _frame_text(message: tw.Media | tw.Mark | rt.InputAudioBufferAppend) -> str | None:
    """The per-frame messages in their usual shape, assembled directly (the same
    bytes as the general path); None for any other shape."""
    if isinstance(message, tw.Media):
        if (message.track is None and message.chunk is None and message.timestamp is None
                and message.sequence_number is None):
            return (f'{{"event":"media","media":{{"payload":{_json_str(message.payload)}}},'
                    f'"streamSid":{_json_str(message.stream_sid)}}}')
    elif isinstance(message, tw.Mark):
        if message.sequence_number is None:
            return (f'{{"event":"mark","streamSid":{_json_str(message.stream_sid)},'
                    f'"mark":{{"name":{_json_str(message.name)}}}}}')
    elif message.event_id is None:
        return f'{{"type":"input_audio_buffer.append","audio":{_json_str(message.audio)}}}'
    return None


def encode(message: tw.TwilioMessage | rt.ClientEvent | rt.ServerEvent) -> str:
    """Serialize one message of either protocol to compact JSON text."""
    cls = type(message)
    if cls is tw.Media or cls is tw.Mark or cls is rt.InputAudioBufferAppend:
        text = _frame_text(message)  # type: ignore[arg-type]
        if text is not None:
            return text
    if cls not in _TWILIO_NAMES and cls not in _REALTIME_NAMES and not isinstance(
        message, (rt.UnknownClientEvent, rt.UnknownServerEvent)
    ):
        raise LocalProtocolError(f"not a message we can send: {message!r}")
    return json.dumps(converter.unstructure(message), separators=(",", ":"))
