"""The agent's audio on its way to Twilio: the playout queue, sub-state of the `Bridge`.

Theory of operation
-------------------
The model's audio chunks wait here, in order, for the Twilio writer, with two cues
that are not audio: a `clear` (barge-in: it goes ahead of everything) and a tail
mark (the model's audio paused: mark what went out without a mark). The queue holds
`limit` entries; when full, `full` tells the model reader to wait, so the model is
read no faster than Twilio takes audio. Chunks of one item that queued up leave as
one `media`, up to `coalesce_bytes`; a mark follows each `mark_ms` of audio and the
end of each response (the echoes are how `Playback` knows what the caller heard).

"A send in flight" and "a generation" are state here: `next` records what the
writer is sending and in which playback generation, and `sent` (the send finished)
records it in `Playback` only if no barge-in came meanwhile. A chunk whose send was
under way when the caller spoke is recorded nowhere, and the `clear` that `interrupt`
queued follows it on the socket.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import NamedTuple

from . import codec
from . import twilio as tw
from ._payload import join_base64
from ._playback import Interruption, Playback

__all__ = ["AudioOut", "Playout", "Sent"]


class AudioOut(NamedTuple):
    """Bytes [start, end) of an agent item's audio, base64, on its way to Twilio;
    `received`: when (the first of) its chunk(s) came from the model."""

    item_id: str
    start: int
    end: int
    payload: str
    received: float


class _Cue(enum.Enum):
    """Playout entries that are not audio."""

    #: drop everything queued at Twilio (barge-in); goes ahead of all audio
    CLEAR = "clear"
    #: the model's audio paused: mark what went out without a mark
    TAIL_MARK = "tail"


class _Sending(NamedTuple):
    """What the Twilio writer is sending now, and in which playback generation."""

    generation: int
    what: AudioOut | _Cue
    mark: str | None


class Sent(enum.Enum):
    """What a finished send was (`Playout.sent`), when it was not audio."""

    CLEAR = "clear"
    MARK = "mark"
    #: a barge-in came during the send: the audio is gone, its `clear` follows
    STALE = "stale"


class Playout:
    """The queue to Twilio of one call; see the module docstring."""

    def __init__(self, playback: Playback, *, limit: int, coalesce_bytes: int) -> None:
        self.playback = playback
        self._queue: deque[AudioOut | _Cue] = deque()
        self._limit = limit
        self._coalesce = coalesce_bytes
        self._sending: _Sending | None = None

    @property
    def full(self) -> bool:
        """The model reader should wait until Twilio has taken some audio."""
        return len(self._queue) >= self._limit

    @property
    def playing(self) -> bool:
        """Audio is queued here, or sent and not confirmed played."""
        return self.playback.outstanding or any(type(e) is AudioOut for e in self._queue)

    def audio(self, item_id: str, start: int, end: int, payload: str, now: float) -> None:
        self._queue.append(AudioOut(item_id, start, end, payload, now))

    def pause(self) -> None:
        """The model's audio paused (an item or a response ended): mark the tail."""
        self._queue.append(_Cue.TAIL_MARK)

    def next(self, stream_sid: str) -> list[str] | None:
        """The next message(s) for Twilio, back to back; None when there is nothing
        to send. Call `sent` once they are sent."""
        assert self._sending is None, "one send to Twilio at a time"
        queue = self._queue
        while queue:
            head = queue.popleft()
            if head is _Cue.CLEAR:
                return self._send(head, None, [tw.Clear(stream_sid=stream_sid)])
            if head is _Cue.TAIL_MARK:
                mark = self.playback.tail_mark()
                if mark is not None:
                    return self._send(head, mark, [tw.Mark(stream_sid=stream_sid, name=mark)])
                continue
            assert isinstance(head, AudioOut)
            return self._send_audio(head, stream_sid)
        return None

    def _send_audio(self, first: AudioOut, stream_sid: str) -> list[str]:
        # behind Twilio: merge this item's chunks that queued up meanwhile
        item_id, start, end, payload, received = first
        queue, limit = self._queue, self._coalesce
        payloads = None
        while end - start < limit and queue:
            chunk = queue[0]
            if (type(chunk) is not AudioOut or chunk.item_id != item_id or chunk.start != end
                    or chunk.end - start > limit):
                break
            queue.popleft()
            payloads = payloads or [payload]
            payloads.append(chunk.payload)
            end = chunk.end
        if payloads is not None:
            payload = join_base64(payloads)
        mark = self.playback.mark_after(item_id, start, end)
        messages: list[tw.Media | tw.Mark] = [tw.Media(stream_sid=stream_sid, payload=payload)]
        if mark is not None:
            messages.append(tw.Mark(stream_sid=stream_sid, name=mark))
        return self._send(AudioOut(item_id, start, end, payload, received), mark, messages)

    def _send(self, what: AudioOut | _Cue, mark: str | None,
              messages: list[tw.Media | tw.Mark] | list[tw.Clear] | list[tw.Mark]) -> list[str]:
        self._sending = _Sending(self.playback.generation, what, mark)
        return [codec.encode(message) for message in messages]

    def sent(self, now: float) -> AudioOut | Sent:
        """The messages from `next` are on their way: the audio they carried, or what
        they were instead."""
        sending, self._sending = self._sending, None
        assert sending is not None, "sent() without next()"
        what = sending.what
        if what is _Cue.CLEAR:
            return Sent.CLEAR
        if sending.generation != self.playback.generation:
            return Sent.STALE
        if what is _Cue.TAIL_MARK:
            assert sending.mark is not None
            self.playback.tail_marked(sending.mark)
            return Sent.MARK
        assert isinstance(what, AudioOut)
        self.playback.sent(what.item_id, what.start, what.end, sending.mark, now)
        return what

    def interrupt(self, now: float, *, cancel: bool = False) -> Interruption:
        """Start a new playback generation: drop the queued audio, and queue a `clear`
        if anything may still be playing (or about to)."""
        sending = self._sending
        audio_in_flight = sending is not None and isinstance(sending.what, AudioOut)
        clear_queued = _Cue.CLEAR in self._queue
        decision = self.playback.interrupt(now, sending=audio_in_flight, cancel=cancel)
        self._queue.clear()
        if decision.clear or clear_queued:
            self._queue.append(_Cue.CLEAR)
        return decision
