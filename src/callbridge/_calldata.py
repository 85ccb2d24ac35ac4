"""A call's plain data: its limits, its counters, how it ended (no I/O).

`CallLimits` goes into `run_call`, `CallStats` counts while the call runs (the live
`Call.stats`), `CallResult` is what `run_call` returns; `CallRefused` is what an
`authorize` callback raises. The `Bridge` (`callbridge._bridge`) fills them in.
`LiveCalls` is a service worker's set of live calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import attrs

from .events import EndReason

if TYPE_CHECKING:
    from ._call import Call

__all__ = ["CallLimits", "CallRefused", "CallResult", "CallStats", "LiveCalls"]


@attrs.frozen(kw_only=True)
class CallLimits:
    """Buffer sizes and timeouts of one call (the defaults suit phone calls)."""

    #: caller audio frames kept while the model is connecting or stalled (20 ms each);
    #: when full the oldest frame is dropped and counted
    caller_buffer_frames: int = 500
    #: model audio chunks waiting for the Twilio socket; when full the model reader waits
    playout_buffer_chunks: int = 256
    #: Twilio must send `start` within this many seconds of the socket opening
    start_timeout: float = 15.0
    #: a single send to Twilio taking longer than this means the socket is dead
    send_timeout: float = 10.0
    #: after `stop`, how long to wait for Twilio to close its socket before we do
    close_wait: float = 5.0
    #: audio that queued up behind a busy socket is sent as one message of about this
    #: many ms at most, either way (fewer messages when behind; 0 turns it off)
    coalesce_ms: int = 100
    #: a Twilio `mark` follows the chunk that completes this many ms of audio since
    #: the last one, and the end of each response. Echoed marks are how we know what
    #: the caller heard: finer marks keep the barge-in truncation truer when Twilio's
    #: playback lags behind what we sent; coarser ones save two messages per mark.
    #: 0: after every chunk
    mark_ms: int = 100
    #: how long a Twilio REST request (hang up, transfer) may take, retries included
    rest_timeout: float = 15.0
    #: how long the model may stay unreachable (at the start, or after losing the
    #: connection mid-call) while connections are retried with backoff; then the
    #: caller hears the agent's apology and the call ends as `model_unavailable`
    model_connect_budget: float = 5.0
    #: a model session older than this is replaced at the next turn boundary (the
    #: Realtime API ends sessions at 60 minutes), the conversation carried over
    session_max_s: float = 55 * 60
    #: the model connection is pinged this often; one that sends nothing back (not
    #: even a pong) for twice as long is stalled: it is dropped and reopened
    model_ping_s: float = 10.0
    #: Twilio sends a frame every 20 ms, silence included: a stream that sends nothing
    #: for this long is dead, and the call ends as `media_timeout`
    media_idle_s: float = 10.0
    #: the longest a call may last: then the agent says `Agent.time_limit_line` and the
    #: call ends once it has played (`time_limit`); None: no limit
    max_call_s: float | None = 2 * 3600


class CallRefused(Exception):
    """Raised by an `authorize` callback: this stream may not open a model session."""


@attrs.define
class CallStats:
    """Per-call counters; the seam for metrics and call records."""

    frames_in: int = 0
    frames_to_model: int = 0
    frames_dropped: int = 0
    #: ms of μ-law silence put in for caller frames that never came (by their timestamps)
    gap_filled_ms: int = 0
    chunks_out: int = 0
    bytes_out: int = 0
    marks_played: int = 0
    marks_discarded: int = 0
    barge_ins: int = 0
    truncations: int = 0
    stale_deltas: int = 0
    model_errors: int = 0
    protocol_errors: int = 0
    #: audio payloads that were not valid base64 (replaced by silence), either way
    bad_audio: int = 0
    model_connections: int = 0
    #: function calls answered, and those whose output was an error (raised, timed
    #: out, bad arguments, no such tool)
    tool_calls: int = 0
    tool_failures: int = 0
    guardrail_trips: int = 0
    idle_prompts: int = 0
    #: the model's token counts, summed over its responses (`response.done`'s usage)
    input_tokens: int = 0
    input_audio_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    output_audio_tokens: int = 0

    def add_usage(self, usage: object) -> None:
        """Count one `response.done`'s `usage`; what is missing or not a count is
        skipped (a cancelled response may report none)."""
        if not isinstance(usage, Mapping):
            return
        given = usage.get("input_token_details")
        details_in = given if isinstance(given, Mapping) else {}
        given = usage.get("output_token_details")
        details_out = given if isinstance(given, Mapping) else {}
        self.input_tokens += _count(usage.get("input_tokens"))
        self.input_audio_tokens += _count(details_in.get("audio_tokens"))
        self.cached_input_tokens += _count(details_in.get("cached_tokens"))
        self.output_tokens += _count(usage.get("output_tokens"))
        self.output_audio_tokens += _count(details_out.get("audio_tokens"))


def _count(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


@attrs.frozen(kw_only=True)
class CallResult:
    """How a call ended (see `EndReason` for the reasons)."""

    reason: EndReason
    detail: str = ""
    stream_sid: str | None = None
    call_sid: str | None = None
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict)
    stats: CallStats = attrs.field(factory=CallStats)


class LiveCalls:
    """The calls running in this process (a service worker), to find and act on them."""

    def __init__(self) -> None:
        self._calls: set[Call] = set()

    def add(self, call: Call) -> None:
        self._calls.add(call)

    def discard(self, call: Call) -> None:
        self._calls.discard(call)

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self._calls))

    def by_call_sid(self, call_sid: str) -> Call | None:
        """The live call with this Twilio CallSid (known once its `start` came)."""
        return next((c for c in self._calls if c.call_sid == call_sid), None)
