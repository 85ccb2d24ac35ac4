"""Playback and barge-in under random sequences of operations (hypothesis state machines).

Two machines. `PlaybackMachine` drives `callbridge._playback.Playback` directly, as
the playout drives it: deltas, chunks sent in order with the marks `mark_after`
chose (a send may be under way when the caller speaks), tail marks, echoes in order,
`response.done`, `interrupt`, and time. `BridgeMachine` drives the whole sans-I/O
`Bridge` against a synthetic phone that plays what it gets in real time (8 bytes a
millisecond), echoes each mark once the audio before it has played, and on `clear`
drops its audio and echoes every pending mark; the model speaks, the caller barges
in, the Twilio writer sends, time passes.

The invariants are the `Playback` docstring's: heard <= sent <= produced, a
truncation within what the caller could have heard, stale deltas and marks of an
interrupted generation dropped, nothing outstanding once everything was echoed, and
no audio of an interrupted response reaching Twilio after the barge-in.

Deterministic: `derandomize=True` and no example database.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict, deque
from typing import Any

import attrs
from _schema import validate_client_event
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)
from test_bridge import (
    CHUNK,
    SID,
    SPEECH,
    delta,
    done,
    drain_model,
    drain_twilio,
    make,
    start,
    talking,
)

from callbridge import Agent, codec
from callbridge import realtime as rt
from callbridge import twilio as tw
from callbridge._playback import Playback
from callbridge._playout import _Cue
from callbridge.events import MarkOutcome

BYTES_PER_MS = 8
PER_SECOND = 1000 * BYTES_PER_MS

_MACHINE = settings(max_examples=60, stateful_step_count=50, deadline=None,
                    derandomize=True, database=None)

# the first of a sampled_from is what hypothesis draws most: make it the usual case
_NBYTES = st.one_of(st.sampled_from([160, 800, 1600, 161, 8, 1, 0]), st.integers(0, 2400))
_GAPS = st.one_of(st.sampled_from([0.02, 0.1, 0.0, 0.001, 0.2, 1.0]), st.floats(0, 3))


def _generation(mark: str) -> int:
    return int(mark.partition(":")[0])


# --- Playback on its own ---------------------------------------------------------------------


class PlaybackMachine(RuleBasedStateMachine):
    """`Playback` as the playout drives it, against a model of what was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.playback = Playback()
        self.now = 0.0
        self.count = 0
        self.active: set[str] = set()  # responses generating (deltas accepted)
        self.stale: set[str] = set()  # interrupted, their response.done not yet in
        self.out_of_band: set[str] = set()
        self.item_of: dict[str, str] = {}  # response -> its current item
        self.response_of: dict[str, str] = {}  # item -> its response
        # this generation's items: produced, and sent (bytes), in order of first audio
        self.produced: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.unsent: deque[tuple[str, int, int]] = deque()  # produced, not yet sent
        self.unconfirmed: list[tuple[str, int, str | None]] = []  # sent, not confirmed
        self.in_flight: tuple[int, str, int, int, str | None] | None = None
        self.at_twilio: deque[str] = deque()  # marks Twilio has, not yet echoed
        self.last_heard: tuple[int, str, int] | None = None

    @initialize(mark_bytes=st.sampled_from([0, 160, 800]), auto_cancel=st.booleans())
    def setup(self, mark_bytes: int, auto_cancel: bool) -> None:
        self.playback = Playback(auto_cancel=auto_cancel, mark_bytes=mark_bytes,
                                 bytes_per_ms=BYTES_PER_MS)

    # One rule, not one per operation: hypothesis's swarm testing turns whole rules off
    # for a run, and most runs would then never get as far as an echo or a truncation.
    @rule(op=st.sampled_from([
        "delta", "send", "time", "echo", "delta", "send", "time", "echo", "created",
        "begin send", "end send", "time", "interrupt", "done", "created out of band",
        "tail mark", "delta", "send", "echo", "interrupt and cancel"]),
          data=st.data(), new_item=st.booleans(), nbytes=_NBYTES, gap=_GAPS)
    def step(self, op: str, data: st.DataObject, new_item: bool, nbytes: int,
             gap: float) -> None:
        if op.startswith("interrupt"):
            self.interrupt(cancel=op.endswith("cancel"))
        elif op == "time":
            self.now += gap
        elif op == "send":  # a whole send, no barge-in during it
            self.twilio("begin send")
            self.twilio("end send")
        elif op in ("begin send", "end send", "tail mark", "echo"):
            self.twilio(op)
        else:
            self.model(op, data, new_item, nbytes)

    # --- the model, the Twilio writer (one send at a time), Twilio's echoes (in order) ---

    def model(self, op: str, data: st.DataObject, new_item: bool, nbytes: int) -> None:
        if op.startswith("created") or (op == "delta" and not self.active):
            self.response_created(in_conversation=op != "created out of band")
        if op in ("delta", "done") and (self.active or self.stale):
            response_id = data.draw(st.sampled_from(sorted(self.active | self.stale)))
            if op == "delta":
                self.audio_delta(response_id, new_item, nbytes)
            else:
                self.playback.response_done(response_id)
                self.active.discard(response_id)
                self.stale.discard(response_id)

    def response_created(self, *, in_conversation: bool) -> None:
        self.count += 1
        response_id = f"resp_{self.count}"
        self.playback.response_created(response_id, in_conversation=in_conversation)
        self.active.add(response_id)
        if not in_conversation:
            self.out_of_band.add(response_id)

    def audio_delta(self, response_id: str, new_item: bool, nbytes: int) -> None:
        if response_id in self.active and (new_item or response_id not in self.item_of):
            self.count += 1
            self.item_of[response_id] = f"item_{self.count}"
            self.response_of[f"item_{self.count}"] = response_id
        item_id = self.item_of.get(response_id, "item_never")
        end = self.playback.audio_delta(response_id, item_id, nbytes)
        if response_id in self.stale:
            assert end is None, "a delta of an interrupted response was not dropped"
            event("playback: stale delta dropped")
            return
        start = self.produced.get(item_id, 0)
        assert end == start + nbytes
        self.produced[item_id] = end
        self.unsent.append((item_id, start, end))

    def twilio(self, op: str) -> None:
        if op == "begin send" and self.in_flight is None and self.unsent:
            item_id, start, end = self.unsent.popleft()
            mark = self.playback.mark_after(item_id, start, end)
            self.in_flight = (self.playback.generation, item_id, start, end, mark)
        elif op == "tail mark" and self.in_flight is None:
            mark = self.playback.tail_mark()
            if mark is not None:
                self.in_flight = (self.playback.generation, "", 0, 0, mark)
        elif op == "end send" and self.in_flight is not None:
            self.end_send(*self.in_flight)
        elif op == "echo" and self.at_twilio:
            self.mark_echoed(self.at_twilio.popleft())

    def end_send(self, generation: int, item_id: str, start: int, end: int,
                 mark: str | None) -> None:
        self.in_flight = None
        if mark is not None:
            self.at_twilio.append(mark)  # it reached Twilio, whatever happened since
        if generation != self.playback.generation:
            return  # a barge-in came meanwhile: the playout records nothing
        if not item_id:
            assert mark is not None
            self.playback.tail_marked(mark)
            item_id, end, _ = self.unconfirmed[-1]
            self.unconfirmed[-1] = (item_id, end, mark)
            return
        self.playback.sent(item_id, start, end, mark, self.now)
        self.sent[item_id] = end
        self.unconfirmed.append((item_id, end, mark))

    def mark_echoed(self, name: str) -> None:
        echo = self.playback.mark_echoed(name, self.now)
        event(f"playback: mark {echo.outcome.value}")
        if _generation(name) < self.playback.generation:
            assert echo.outcome is MarkOutcome.DISCARDED, (name, echo)
            return
        assert echo.outcome is MarkOutcome.PLAYED, (name, echo)
        while True:  # it confirms every segment before it too
            item_id, end, mark = self.unconfirmed.pop(0)
            if mark == name:
                break
        assert (echo.item_id, echo.heard_ms) == (item_id, end // BYTES_PER_MS)

    # --- barge-in -------------------------------------------------------------------------

    def interrupt(self, *, cancel: bool) -> None:
        sending = self.in_flight is not None and bool(self.in_flight[1])
        position = self.playback.heard(self.now)
        decision = self.playback.interrupt(self.now, sending=sending, cancel=cancel)
        assert decision.clear == (bool(self.unconfirmed) or sending)
        if position is None:
            assert decision.heard_ms is None and decision.truncate is None
        else:
            item_id, heard = position
            assert decision.heard_ms == min(heard, self.produced[item_id]) // BYTES_PER_MS
        truncate = decision.truncate
        event(f"playback: interrupt, clear={decision.clear}, truncate={truncate is not None}")
        if truncate is not None:
            assert truncate.item_id == position[0]  # type: ignore[index]
            assert self.response_of[truncate.item_id] not in self.out_of_band
            produced_ms = self.produced[truncate.item_id] // BYTES_PER_MS
            sent_ms = self.sent.get(truncate.item_id, 0) // BYTES_PER_MS
            assert 0 < truncate.audio_end_ms <= min(produced_ms, sent_ms)
        later = list(self.produced)
        deleted = [d.item_id for d in decision.deletes]
        if position is not None:
            later = later[later.index(position[0]) + 1:]
            assert deleted == [i for i in later
                               if self.response_of[i] not in self.out_of_band]
        else:
            assert deleted == []
        if decision.cancel is not None:
            assert cancel or not self.playback.auto_cancel
            assert decision.cancel.response_id in self.active
        elif cancel or not self.playback.auto_cancel:
            assert not self.active
        self.stale |= self.active
        self.active.clear()
        self.produced.clear()
        self.sent.clear()
        self.unsent.clear()  # the playout drops its queue
        self.unconfirmed.clear()
        self.last_heard = None

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def heard_sent_produced(self) -> None:
        assert self.playback.outstanding == bool(self.unconfirmed)
        position = self.playback.heard(self.now)
        if position is None:
            return
        item_id, heard = position
        assert 0 <= heard <= self.sent.get(item_id, 0) <= self.produced.get(item_id, 0)
        last = self.last_heard
        generation = self.playback.generation
        if last is not None and last[:2] == (generation, item_id):
            assert heard >= last[2], f"heard went back from {last[2]} to {heard}"
        self.last_heard = (generation, item_id, heard)


PlaybackMachine.TestCase.settings = _MACHINE
TestPlayback = PlaybackMachine.TestCase


# --- the whole bridge, against a synthetic phone ------------------------------------------


class Phone:
    """Twilio and the caller's handset. Audio plays in order, from when it arrives or
    the audio before it ended; a mark is echoed once the audio before it has played;
    `clear` drops the audio and echoes every pending mark. Each agent item's audio is
    one byte value, so what played is counted per item."""

    def __init__(self) -> None:
        # [item byte, bytes, bytes played, arrival] or [None, mark name]
        self.queue: deque[list[Any]] = deque()
        self.clock = 0.0  # when the audio played last ended
        self.played: defaultdict[int, float] = defaultdict(float)  # bytes, by item byte
        self.received: Counter[int] = Counter()

    def play_until(self, now: float) -> list[str]:
        echoes = []
        while self.queue:
            head = self.queue[0]
            if head[0] is None:
                echoes.append(head[1])
                self.queue.popleft()
                continue
            value, size, done, arrival = head
            begin = max(self.clock, arrival)
            if begin > now:
                break
            playable = (now - begin) * PER_SECOND
            if playable >= size - done:
                self.played[value] += size - done
                self.clock = begin + (size - done) / PER_SECOND
                self.queue.popleft()
                continue
            self.played[value] += playable
            head[2] = done + playable
            head[3] = self.clock = now
            break
        return echoes

    def receive(self, text: str, now: float) -> list[str]:
        echoes = self.play_until(now)
        message = codec.decode_twilio(text)
        if isinstance(message, tw.Media):
            audio = base64.b64decode(message.payload)
            assert len(set(audio)) <= 1, "one media message mixed items"
            if audio:
                self.queue.append([audio[0], len(audio), 0.0, now])
                self.received[audio[0]] += len(audio)
        elif isinstance(message, tw.Mark):
            self.queue.append([None, message.name])
        else:
            assert isinstance(message, tw.Clear)
            echoes += [entry[1] for entry in self.queue if entry[0] is None]
            self.queue.clear()
            self.clock = now
        return echoes + self.play_until(now)

    def holds(self, values: set[int]) -> bool:
        return any(entry[0] in values for entry in self.queue)


class BridgeMachine(RuleBasedStateMachine):
    """The sans-I/O `Bridge`: the model speaks, the caller barges in, the Twilio writer
    sends (one send at a time), the phone plays and echoes, time passes."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0
        self.bridge = make()
        self.phone = Phone()
        self.in_flight: list[str] | None = None
        self.count = 0
        self.open: str | None = None  # the response generating
        self.late: set[str] = set()  # interrupted: a few late deltas, then response.done
        self.item_of: dict[str, str] = {}  # response -> its current item
        self.value_of: dict[str, int] = {}  # item -> the byte its audio is made of
        self.produced: Counter[int] = Counter()  # accepted deltas, per item byte
        self.confirmed: Counter[int] = Counter()  # bytes confirmed played by echoes
        self.old: set[int] = set()  # items of responses a barge-in interrupted

    @initialize(mark_ms=st.sampled_from([0, 20, 100]), coalesce_ms=st.sampled_from([0, 100]),
                auto_cancel=st.booleans())
    def setup(self, mark_ms: int, coalesce_ms: int, auto_cancel: bool) -> None:
        agent = Agent(idle_timeout=None, turn_detection=attrs.evolve(
            Agent().turn_detection, interrupt_response=auto_cancel))
        self.bridge = make(agent=agent, mark_ms=mark_ms, coalesce_ms=coalesce_ms)
        self.bridge.receive_twilio(start(), self.now)
        self.bridge.model_connected(self.now)
        self.to_model()

    def to_model(self) -> list[rt.ClientEvent]:
        """Drain what the bridge queued for the model: all of it valid for the API."""
        events = drain_model(self.bridge)
        for sent in events:
            validate_client_event(codec.encode(sent))
        return events

    def deliver(self, echoes: list[str]) -> None:
        """The phone's mark echoes reach the bridge: a mark of an older generation is
        discarded, one of this generation played."""
        for name in echoes:
            stats = self.bridge.stats
            before = (stats.marks_played, stats.marks_discarded)
            current = _generation(name) == self.bridge.playback.generation
            self.bridge.receive_twilio(codec.encode(tw.Mark(stream_sid=SID, name=name)), self.now)
            after = (stats.marks_played, stats.marks_discarded)
            event(f"bridge: mark {'played' if current else 'discarded'}")
            assert after == (before[0] + current, before[1] + (not current)), name
            if current:
                _, end, item_id = name.split(":", 2)
                value = self.value_of[item_id]
                self.confirmed[value] = max(self.confirmed[value], int(end))
        self.to_model()

    # One rule, as in PlaybackMachine: swarm testing would turn whole rules off.
    @rule(op=st.sampled_from([
        "delta", "send", "time", "delta", "send", "time", "speech started", "delta", "take",
        "sent", "time", "done", "audio done", "send", "speech started", "speech stopped",
        "caller audio", "play out", "created", "model reconnects"]),
          data=st.data(), new_item=st.booleans(), nbytes=_NBYTES, gap=_GAPS)
    def step(self, op: str, data: st.DataObject, new_item: bool, nbytes: int,
             gap: float) -> None:
        if op in ("created", "delta", "audio done", "done"):
            self.model(op, data, new_item, nbytes)
        elif op == "send":  # a whole send, no barge-in during it
            self.writer("take")
            self.writer("sent")
        elif op in ("take", "sent"):
            self.writer(op)
        elif op == "play out" and self.open is None and not self.late:
            self.everything_plays_out()
        elif op in ("time", "play out"):
            self.time_passes(gap)
        else:
            self.caller(op)

    # --- the model ---------------------------------------------------------------------------

    def model(self, op: str, data: st.DataObject, new_item: bool, nbytes: int) -> None:
        if self.open is None and op in ("created", "delta"):
            self.count += 1
            self.open = f"resp_{self.count}"
            self.bridge.receive_model(rt.ResponseCreated(response={"id": self.open}), self.now)
        speaking = sorted(self.late | ({self.open} if self.open else set()))
        if op == "delta" and speaking:
            self.audio_delta(data.draw(st.sampled_from(speaking)), new_item, nbytes)
        if op == "audio done" and self.open in self.item_of:
            assert self.open is not None
            self.bridge.receive_model(rt.OutputAudioDone(
                response_id=self.open, item_id=self.item_of[self.open]), self.now)
        elif op == "done" and speaking:
            response_id = data.draw(st.sampled_from(speaking))
            status = "completed" if response_id == self.open else "cancelled"
            self.bridge.receive_model(rt.ResponseDone(
                response={"id": response_id, "status": status}), self.now)
            if response_id == self.open:
                self.open = None
            self.late.discard(response_id)
        self.to_model()

    def audio_delta(self, response_id: str, new_item: bool, nbytes: int) -> None:
        if response_id == self.open and (new_item or response_id not in self.item_of):
            if len(self.value_of) >= 250:
                return  # out of byte values
            self.count += 1
            item_id = self.item_of[response_id] = f"item_{self.count}"
            self.value_of[item_id] = len(self.value_of) + 1  # 1..250, never 0xff silence
        item_id = self.item_of.get(response_id, "item_0")
        value = self.value_of.get(item_id, 0)
        stale = self.bridge.stats.stale_deltas
        self.bridge.receive_model(rt.OutputAudioDelta(
            response_id=response_id, item_id=item_id,
            delta=base64.b64encode(bytes([value]) * nbytes).decode()), self.now)
        if response_id == self.open:
            self.produced[value] += nbytes
            assert self.bridge.stats.stale_deltas == stale
        else:
            assert self.bridge.stats.stale_deltas == stale + 1, "a late delta was played"
            event("bridge: late delta dropped")

    # --- the caller --------------------------------------------------------------------------

    def caller(self, op: str) -> None:
        if op == "speech started":
            self.speech_started()
        elif op == "speech stopped":
            self.bridge.receive_model(rt.SpeechStopped(audio_end_ms=0, item_id="item_caller"),
                                      self.now)
        elif op == "caller audio":
            payload = base64.b64encode(b"\x7f" * 160).decode()
            self.bridge.receive_twilio(json.dumps({"event": "media", "streamSid": SID,
                                                   "media": {"payload": payload}}), self.now)
        else:
            # the old connection's responses are gone; its audio is over, as at a barge-in
            self.old |= set(self.value_of.values())
            self.open = None
            self.late.clear()
            self.bridge.model_connected(self.now)
        self.to_model()

    def speech_started(self) -> None:
        self.old |= set(self.value_of.values())
        if self.open is not None:
            self.late.add(self.open)
            self.open = None
        self.bridge.receive_model(rt.SpeechStarted(audio_start_ms=0, item_id="item_caller"),
                                  self.now)
        for message in self.to_model():
            if isinstance(message, rt.ConversationItemTruncate):
                event("bridge: truncate")
                value = self.value_of[message.item_id]
                end = message.audio_end_ms * BYTES_PER_MS
                # never past what the caller heard (the estimate lags the phone; 1 byte
                # of rounding), so never past what was sent or produced; never before
                # what an echo confirmed
                assert end <= self.phone.played[value] + 1, (end, self.phone.played[value])
                assert end <= min(self.phone.received[value], self.produced[value])
                assert message.audio_end_ms >= self.confirmed[value] // BYTES_PER_MS

    # --- the Twilio writer (one send at a time) and the phone ----------------------------------

    def writer(self, op: str) -> None:
        if op == "take" and self.in_flight is None:
            self.writer_takes()
        elif op == "sent" and self.in_flight is not None:
            self.writer_sent()

    def writer_takes(self) -> None:
        texts = self.bridge.next_to_twilio()
        if texts is None:
            return
        for text in texts:
            message = codec.decode_twilio(text)
            if isinstance(message, tw.Media):
                audio = base64.b64decode(message.payload)
                assert not set(audio) & self.old, "audio of an interrupted response"
        self.in_flight = texts

    def writer_sent(self) -> None:
        assert self.in_flight is not None
        echoes: list[str] = []
        for text in self.in_flight:
            if '"clear"' in text:
                event(f"bridge: clear, old audio at the phone: {self.phone.holds(self.old)}")
            echoes += self.phone.receive(text, self.now)
        self.in_flight = None
        self.bridge.sent_to_twilio(self.now)
        self.deliver(echoes)

    def time_passes(self, gap: float) -> None:
        self.now += gap
        self.deliver(self.phone.play_until(self.now))
        deadline = self.bridge.next_deadline
        if deadline is not None and deadline <= self.now:
            self.bridge.tick(self.now)
            self.to_model()

    def everything_plays_out(self) -> None:
        """Every response is done: once the writer sent everything and the phone played
        it, every mark came back and nothing is outstanding."""
        while True:
            if self.in_flight is not None:
                self.writer_sent()
            self.writer_takes()
            if self.in_flight is None:
                break
        self.time_passes(3600.0)
        event("bridge: everything played out")
        assert not self.phone.queue
        assert not self.bridge.playback.outstanding
        assert not self.bridge.playout.playing

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def interrupted_audio_is_cleared(self) -> None:
        """Once no `clear` is on its way, the phone holds no audio of an interrupted
        response (it may play some until the clear arrives)."""
        clear_on_its_way = _Cue.CLEAR in self.bridge.playout._queue or (
            self.in_flight is not None and any('"clear"' in t for t in self.in_flight))
        if not clear_on_its_way:
            assert not self.phone.holds(self.old)

    @invariant()
    def sent_within_produced(self) -> None:
        for value, received in self.phone.received.items():
            assert self.phone.played[value] <= received + 1e-6
            assert received <= self.produced[value]


BridgeMachine.TestCase.settings = _MACHINE
TestBridge = BridgeMachine.TestCase


# --- what the machine found (fixed since), as plain examples ---------------------------------


def test_an_out_of_band_item_is_never_truncated() -> None:
    """An out-of-band response (a tool's filler line) is done long before its audio has
    played; a barge-in during that audio cuts nothing: its item is not in the
    conversation. (Playback used to forget it was out of band at `response.done`.)"""
    playback = Playback(mark_bytes=0)
    playback.response_created("resp_filler", in_conversation=False)
    playback.audio_delta("resp_filler", "item_filler", 1600)  # 200 ms
    playback.sent("item_filler", 0, 1600, playback.mark_after("item_filler", 0, 1600), 0.0)
    playback.response_done("resp_filler")  # generated faster than it plays
    decision = playback.interrupt(0.1)  # the caller speaks 100 ms into it
    assert decision.clear
    assert decision.truncate is None and decision.deletes == ()


def test_a_barge_in_during_a_filler_line_does_not_truncate_it() -> None:
    bridge = talking(mark_ms=0)
    bridge.receive_model(rt.ResponseCreated(response={
        "id": "resp_filler", "metadata": {"callbridge": "filler"}}), 100.0)
    bridge.receive_model(delta(CHUNK * 10, item="item_filler", response="resp_filler"), 100.0)
    bridge.receive_model(done("resp_filler"), 100.0)
    drain_twilio(bridge, 100.0)
    bridge.receive_model(SPEECH, 100.1)
    sent = drain_model(bridge)
    assert not [e for e in sent if isinstance(e, rt.ConversationItemTruncate)], sent
