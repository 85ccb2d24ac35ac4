"""The caller's audio on its way to the model: the inbound queue, sub-state of the `Bridge`.

Theory of operation
-------------------
Frames from Twilio (20 ms of μ-law each, base64) wait here for the model writer. The
queue holds `limit` frames and drops the oldest when full (counted): reading Twilio
never waits on the model, and a stalled model costs bounded memory. Frames that
queued up behind a busy model socket leave as one `input_audio_buffer.append` of up
to `coalesce_bytes`; one frame on its own leaves as it came.

"A send in flight" is state here too: `next` records the frames it handed out, and
`sent` counts them once the append is on its way. When the model connection is
replaced before that, `resend` puts them back at the head for the new connection.

Gaps: Twilio stamps every frame with its place on the stream's clock (`timestamp`,
ms). Frames that never arrive on a bad line leave a hole that the model would not
hear as time: its VAD and its `audio_start_ms` would drift from the caller's clock.
So a frame whose timestamp is ahead of where the last one ended is preceded by
μ-law silence for the difference (at most `MAX_GAP_MS` at once: a longer silence is
a stream that stopped, which the call layer deals with). Frames that arrive late
but in order need nothing: they were queued in order.
"""

from __future__ import annotations

from collections import deque

from . import realtime as rt
from . import twilio as tw
from ._calldata import CallStats
from ._payload import join_base64, silence

__all__ = ["CallerAudio"]

#: the longest hole filled with silence at once, in ms
MAX_GAP_MS = 2_000
#: what a timestamp may run ahead before it counts as a gap (Twilio's clock jitters)
GAP_TOLERANCE_MS = 20


class CallerAudio:
    """The inbound queue of one call; see the module docstring."""

    def __init__(self, stats: CallStats, *, limit: int, coalesce_bytes: int) -> None:
        self._stats = stats  # frames_dropped, gap_filled_ms
        self._queue: deque[str] = deque()
        self._limit = limit
        self._coalesce = coalesce_bytes
        self._sending: tuple[str, ...] = ()  # the frames in the append under way
        self._next_ms: int | None = None  # where on Twilio's clock the next frame starts
        # the model's input audio clock on the call clock (`clock`): when Twilio's 0 ms
        # arrived (by the first stamped frame), and where on Twilio's clock the model
        # connection's input audio began
        self._zero: float | None = None
        self._origin: int | None = None

    def push(self, payload: str, nbytes: int, timestamp: int | None = None,
             now: float = 0.0) -> None:
        """A frame of `nbytes` of audio, stamped `timestamp` ms on Twilio's clock,
        arrived `now` (call clock)."""
        if timestamp is not None:
            if self._zero is None:
                self._zero = now - timestamp / 1000
                if self._origin is None:  # the model connected before any audio
                    self._origin = timestamp
            expected = self._next_ms
            if expected is not None and timestamp > expected + GAP_TOLERANCE_MS:
                gap = min(timestamp - expected, MAX_GAP_MS)
                self._stats.gap_filled_ms += gap
                self._append(silence(gap * tw.BYTES_PER_MS))
            self._next_ms = timestamp + nbytes // tw.BYTES_PER_MS
        self._append(payload)

    def _append(self, payload: str) -> None:
        queue = self._queue
        if len(queue) >= self._limit:
            queue.popleft()
            self._stats.frames_dropped += 1
        queue.append(payload)

    def next(self) -> rt.InputAudioBufferAppend | None:
        """The next append for the model, None when nothing waits; `sent` once sent."""
        queue = self._queue
        if not queue:
            return None
        payload = queue.popleft()
        if not queue:  # idle: one frame, as it came
            self._sending = (payload,)
            return rt.InputAudioBufferAppend(audio=payload)
        # behind: take what queued up meanwhile, as one append
        payloads = [payload]
        size = tw.payload_size(payload)
        while size < self._coalesce and queue:
            payloads.append(queue.popleft())
            size += tw.payload_size(payloads[-1])
        self._sending = tuple(payloads)
        return rt.InputAudioBufferAppend(audio=join_base64(payloads))

    def sent(self) -> int:
        """The append from `next` is on its way: how many frames it carried."""
        frames, self._sending = len(self._sending), ()
        return frames

    def connected(self) -> None:
        """A model connection opened: it gets what the last one did not finish sending
        (`resend`), and its input audio clock counts from there."""
        self.resend()
        if self._next_ms is not None:
            queued = sum(tw.payload_size(p) for p in self._queue)
            self._origin = self._next_ms - queued // tw.BYTES_PER_MS

    def clock(self, audio_ms: int) -> float | None:
        """A position on the model connection's input audio clock (`audio_start_ms`,
        `audio_end_ms`) -> when the caller's phone sent that audio, on the call clock
        (frames dropped while the model stalled shift it; None: no stamped frame yet)."""
        zero, origin = self._zero, self._origin
        if zero is None or origin is None:
            return None
        return zero + (origin + audio_ms) / 1000

    def resend(self) -> None:
        """The connection went before the append was sent: the next one gets it."""
        self._queue.extendleft(reversed(self._sending))
        self._sending = ()
