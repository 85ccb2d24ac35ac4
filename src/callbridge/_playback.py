"""What the caller has heard, and what to do when they interrupt.

Theory of operation
-------------------
The model streams assistant audio faster than real time; we forward it to Twilio
at once and Twilio queues it and plays it in order, in real time.
Positions are byte offsets into each item's audio in the model's output format,
which is explicit (`bytes_per_ms`: 8 for Twilio's μ-law at 8 kHz, 48 for 16-bit PCM
at 24 kHz), so every time and every truncation comes out in milliseconds whatever
the format. For each assistant item there are three numbers, always in this order:

    heard  <=  sent  <=  produced

`produced` counts the model's `response.output_audio.delta` bytes for the item,
`sent` what we handed to Twilio, and `heard` what Twilio confirmed by echoing a
mark. A mark follows the chunk that completes `mark_bytes` since the last one (and
the end of the model's audio: `tail_mark`); its name carries `generation:byte_end:item_id`, so an
echo says exactly how far playback got. Twilio plays in order, so an echo also
confirms the unmarked chunks before it. Fewer marks mean fewer messages both ways
(each mark is echoed), at the price of a coarser cap on the estimate below.

Between echoes we estimate: Twilio plays the chunks after the last confirmed one
back to back, from the moment of that confirmation, but none before it was sent
(Twilio was idle then), so `heard` advances with elapsed time, capped at the end
of the next marked chunk: never past the next unconfirmed mark.

On barge-in (`speech_started`) `interrupt()` decides, from that picture alone:

* `clear` whenever anything sent is unconfirmed, or a send is under way: audio may
  be queued at Twilio, even if the model finished generating long ago;
* `conversation.item.truncate` for the item being played, at what was heard,
  clamped to what the model produced; skipped when nothing of it was heard or it
  was heard to the end;
* `conversation.item.delete` for each item after it that the model had begun (a
  response may speak several message items): the caller heard none of it, so the
  model must not think it said it;
* `response.cancel` only when a response is still generating and the session does
  not cancel on speech by itself (`interrupt_response`);
* a generation bump: marks echoed after `clear` carry the old generation, so they
  count as discarded, not played; and the interrupted response's late deltas are
  dropped until its `response.done`.

Everything is synchronous and takes `now` (seconds, any monotonic clock) as an
argument; the trio layer owns the clock and the sockets.
"""

from __future__ import annotations

from collections import deque

import attrs

from . import realtime as rt
from .events import MarkOutcome

__all__ = ["Interruption", "MarkEcho", "Playback"]


@attrs.define
class _Item:
    response_id: str
    produced: int = 0
    heard: int = 0
    #: False for an out-of-band response's item: not in the conversation, never cut
    in_conversation: bool = True


@attrs.define
class _Segment:
    item_id: str
    start: int
    end: int
    mark: str | None  # None: confirmed by the next mark's echo
    sent_at: float


@attrs.frozen(kw_only=True)
class Interruption:
    """What one barge-in requires: send these, in this order (clear first)."""

    clear: bool = False
    truncate: rt.ConversationItemTruncate | None = None
    deletes: tuple[rt.ConversationItemDelete, ...] = ()
    cancel: rt.ResponseCancel | None = None
    #: what the caller heard of the item being played, in ms (for logs and stats),
    #: and how much of it the model had produced
    heard_ms: int | None = None
    produced_ms: int | None = attrs.field(default=None, eq=False)

    @property
    def events(self) -> list[rt.ClientEvent]:
        """The model's events, in order: the truncation names what was heard."""
        first = [] if self.truncate is None else [self.truncate]
        return [*first, *self.deletes, *([] if self.cancel is None else [self.cancel])]


@attrs.frozen(kw_only=True)
class MarkEcho:
    """How an echoed mark was read, and for a played one, how far playback got."""

    outcome: MarkOutcome
    item_id: str | None = None
    heard_ms: int | None = None


class Playback:
    """Playback state of one call. See the module docstring for the rules."""

    def __init__(
        self, *, auto_cancel: bool = True, mark_bytes: int = 0, bytes_per_ms: int = 8
    ) -> None:
        #: the session cancels an in-progress response on speech by itself
        self.auto_cancel = auto_cancel
        #: the model's output audio format: how many bytes make a millisecond
        self.bytes_per_ms = bytes_per_ms
        #: a mark follows the audio at least every this many bytes (0: every chunk)
        self.mark_bytes = mark_bytes
        self._unmarked = 0  # bytes sent since the last mark
        self.generation = 0
        self._items: dict[str, _Item] = {}
        self._last_item: str | None = None
        self._queue: deque[_Segment] = deque()
        # when the oldest unconfirmed segment started playing (None: nothing queued)
        self._head_start: float | None = None
        self._active: set[str] = set()
        self._dropping: set[str] = set()
        self._out_of_band: set[str] = set()  # responses whose items are not truncatable

    # --- model side ------------------------------------------------------------------

    def response_created(self, response_id: str, *, in_conversation: bool = True) -> None:
        """A response started; an out-of-band one (`in_conversation` False) writes
        nothing to the conversation, so its items are never truncated."""
        self._active.add(response_id)
        if not in_conversation:
            self._out_of_band.add(response_id)

    def audio_delta(self, response_id: str, item_id: str, nbytes: int) -> int | None:
        """Account for a delta. Returns the item's byte offset after it, or None when
        the delta is stale (its response was interrupted) and must be dropped."""
        if response_id in self._dropping:
            return None
        self._active.add(response_id)
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item(
                response_id, in_conversation=response_id not in self._out_of_band)
        item.produced += nbytes
        self._last_item = item_id
        return item.produced

    def response_done(self, response_id: str) -> None:
        self._active.discard(response_id)
        self._dropping.discard(response_id)
        self._out_of_band.discard(response_id)

    # --- Twilio side -----------------------------------------------------------------

    def mark_name(self, item_id: str, end: int) -> str:
        return f"{self.generation}:{end}:{item_id}"

    def mark_after(self, item_id: str, start: int, end: int) -> str | None:
        """The mark to send right after bytes [start, end) of `item_id`, or None when
        this chunk goes without one (less than `mark_bytes` since the last mark)."""
        if self._unmarked + end - start >= self.mark_bytes:
            return self.mark_name(item_id, end)
        return None

    def tail_mark(self) -> str | None:
        """A mark for audio sent without one, if any: to send (alone) when the
        model's audio pauses, so the end of every response is confirmed too."""
        if self._queue and self._queue[-1].mark is None:
            last = self._queue[-1]
            return self.mark_name(last.item_id, last.end)
        return None

    def tail_marked(self, mark: str) -> None:
        """The mark from `tail_mark` went to Twilio (alone). Ignored when a barge-in
        came in between: the audio it marked is gone."""
        if self._queue and self._queue[-1].mark is None:
            self._queue[-1].mark = mark
            self._unmarked = 0

    def sent(self, item_id: str, start: int, end: int, mark: str | None, now: float) -> None:
        """Audio bytes [start, end) of `item_id` went to Twilio, followed by `mark` if
        not None."""
        queue = self._queue
        if not queue:
            self._head_start = now
        queue.append(_Segment(item_id, start, end, mark, now))
        self._unmarked = 0 if mark is not None else self._unmarked + end - start

    def mark_echoed(self, name: str, now: float) -> MarkEcho:
        gen = name.partition(":")[0]
        if not gen.isdigit() or int(gen) != self.generation:
            stale = gen.isdigit() and int(gen) < self.generation
            return MarkEcho(outcome=MarkOutcome.DISCARDED if stale else MarkOutcome.FOREIGN)
        # echoes come back in order: the head is the one (O(1)); else scan
        queue = self._queue
        if not queue or (queue[0].mark != name and not any(s.mark == name for s in queue)):
            return MarkEcho(outcome=MarkOutcome.FOREIGN)
        # Twilio plays in order, so an echo confirms every segment before it too.
        while True:
            seg = self._queue.popleft()
            item = self._items.get(seg.item_id)
            if item is not None:
                item.heard = max(item.heard, seg.end)
            if seg.mark == name:
                break
        self._head_start = max(now, self._queue[0].sent_at) if self._queue else None
        return MarkEcho(outcome=MarkOutcome.PLAYED, item_id=seg.item_id,
                        heard_ms=seg.end // self.bytes_per_ms)

    @property
    def outstanding(self) -> bool:
        """Audio was sent that Twilio has not confirmed: it may still be playing."""
        return bool(self._queue)

    def heard(self, now: float) -> tuple[str, int] | None:
        """(item id, bytes heard) for the item playing now, or the last item if
        everything sent has been confirmed; None before any audio."""
        if self._queue:
            assert self._head_start is not None
            per_second = 1000 * self.bytes_per_ms
            began = self._head_start
            for seg in self._queue:
                began = max(began, seg.sent_at)  # Twilio cannot play what it has not got
                size = seg.end - seg.start
                played = round(max(0.0, now - began) * per_second)
                if played < size or seg.mark is not None:
                    return seg.item_id, seg.start + min(played, size)
                began += size / per_second
            return seg.item_id, seg.end  # only unmarked chunks, all played by now
        if self._last_item is not None:
            return self._last_item, self._items[self._last_item].heard
        return None

    # --- barge-in --------------------------------------------------------------------

    def interrupt(self, now: float, *, sending: bool = False,
                  cancel: bool = False) -> Interruption:
        """The caller started speaking: decide what to send, and forget what was queued.
        `sending`: audio is being handed to Twilio right now (not yet `sent`); it will
        be queued there, so it needs a `clear` too. `cancel`: cancel the response even
        if the session cancels on speech (the caller did not speak: a guardrail)."""
        truncate = None
        heard_ms = produced_ms = None
        deletes: list[rt.ConversationItemDelete] = []
        position = self.heard(now)
        if position is not None:
            item_id, heard = position
            later = list(self._items)[list(self._items).index(item_id) + 1:]
            deletes = [rt.ConversationItemDelete(item_id=i) for i in later
                       if self._items[i].in_conversation]
            item = self._items[item_id]
            produced_ms = item.produced // self.bytes_per_ms
            heard_ms = min(heard // self.bytes_per_ms, produced_ms)
            still_generating = item.response_id in self._active
            if not item.in_conversation:
                pass  # out of band: nothing to cut (its response may be done long since)
            elif heard_ms > 0 and (heard_ms < produced_ms or still_generating):
                truncate = rt.ConversationItemTruncate(item_id=item_id, audio_end_ms=heard_ms)
        cancel_event = None
        # At most one response writes to the conversation at a time.
        for response_id in sorted(self._active):
            if cancel or not self.auto_cancel:
                cancel_event = rt.ResponseCancel(response_id=response_id)
        self._dropping |= self._active
        self._active.clear()
        result = Interruption(
            clear=self.outstanding or sending, truncate=truncate, deletes=tuple(deletes),
            cancel=cancel_event, heard_ms=heard_ms, produced_ms=produced_ms
        )
        self.generation += 1
        self._queue.clear()
        self._unmarked = 0
        self._head_start = None
        self._items.clear()
        self._last_item = None
        return result
