"""Twilio Media Streams messages, as plain data.

One class per wire message, used in both directions like h11's events: the bridge
*receives* `Connected`, `Start`, `Media`, `Mark`, `Dtmf` and `Stop`, and *sends*
`Media`, `Mark` and `Clear`. Fields that only exist on messages Twilio sends
(sequence numbers, chunk counters, timestamps) are optional; `callbridge.codec`
leaves them out when they are unset, so what we send has exactly the documented
fields (Twilio warns 31951 on extra ones).

Nothing here does I/O, and nothing here knows wire names: the camelCase mapping
lives in `callbridge.codec`.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = [
    "BYTES_PER_MS",
    "Clear",
    "Connected",
    "Dtmf",
    "Mark",
    "Media",
    "MediaFormat",
    "Start",
    "Stop",
    "TwilioMessage",
    "UnknownTwilioMessage",
    "payload_size",
]

#: μ-law at 8 kHz, one byte per sample: 8 bytes are one millisecond.
BYTES_PER_MS = 8


@attrs.frozen(kw_only=True)
class Connected:
    """First message on a stream: names the protocol."""

    protocol: str = "Call"
    version: str = "1.0.0"


@attrs.frozen(kw_only=True)
class MediaFormat:
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


@attrs.frozen(kw_only=True)
class Start:
    """Stream metadata; nothing may be sent to Twilio before it (we need `stream_sid`)."""

    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...] = ("inbound",)
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict)
    media_format: MediaFormat = MediaFormat()
    sequence_number: int | None = None


@attrs.frozen(kw_only=True)
class Media:
    """Base64 μ-law audio: caller audio when received, audio to play when sent.

    The payload stays base64 end to end: Twilio and the model use the same codec,
    so the bridge never decodes it.
    """

    stream_sid: str
    payload: str
    track: str | None = None
    chunk: int | None = None
    timestamp: int | None = None
    sequence_number: int | None = None


@attrs.frozen(kw_only=True)
class Mark:
    """A named point in the outbound audio; Twilio echoes it once the audio before
    it has played, or been discarded by `Clear`."""

    stream_sid: str
    name: str
    sequence_number: int | None = None


@attrs.frozen(kw_only=True)
class Clear:
    """Discard all audio queued at Twilio; every pending mark is echoed back."""

    stream_sid: str


@attrs.frozen(kw_only=True)
class Dtmf:
    stream_sid: str
    digit: str
    track: str = "inbound_track"
    sequence_number: int | None = None


@attrs.frozen(kw_only=True)
class Stop:
    """The stream is over; Twilio closes the socket next."""

    stream_sid: str
    account_sid: str = ""
    call_sid: str = ""
    sequence_number: int | None = None


@attrs.frozen(kw_only=True)
class UnknownTwilioMessage:
    """A well-formed JSON message with an `event` we do not know; kept, not fatal."""

    event: str
    raw: Mapping[str, object]


TwilioMessage = Connected | Start | Media | Mark | Clear | Dtmf | Stop | UnknownTwilioMessage


def payload_size(payload: str) -> int:
    """Number of bytes a base64 payload decodes to, without decoding it."""
    n = len(payload)
    if n == 0:
        return 0
    pad = 2 if payload.endswith("==") else 1 if payload.endswith("=") else 0
    return n // 4 * 3 - pad
