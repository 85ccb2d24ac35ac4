"""A synthetic Twilio: the caller's side of a Media Streams call, with faithful playback.

It sends what Twilio sends (`connected`, `start`, a `media` frame every 20 ms with
string counters and timestamps, `dtmf`, `stop`, then closes) and plays what it
receives the way Twilio does: audio queues and plays at 8 bytes per ms, a mark is
echoed only once the audio before it has played (at once if nothing is queued),
and `clear` discards unplayed audio and echoes every pending mark. It records
what the caller actually heard and when, so tests can check the bridge against
the truth rather than against its own estimate.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from .. import _mulaw, codec
from .. import twilio as tw
from .._mulaw import FRAME_BYTES, FRAME_MS
from .._sockets import MessageSocket, SocketClosed
from ._wav import read_wav

__all__ = ["SILENCE_FRAME", "Heard", "TwilioCaller", "Utterance", "speech_frame"]

#: μ-law digital silence
SILENCE_FRAME = b"\xff" * FRAME_BYTES

# The exact keys Twilio documents for what it accepts; anything else is warning 31951.
_OUTBOUND_SHAPES = {
    "media": {"event", "streamSid", "media"},
    "mark": {"event", "streamSid", "mark"},
    "clear": {"event", "streamSid"},
}


@functools.lru_cache(maxsize=64)
def speech_frame(index: int = 0, amplitude: int = 8000) -> bytes:
    """20 ms of loud, voice-band audio (a 300 Hz + 1 kHz mix): enough for any VAD."""
    start = index * FRAME_BYTES
    return bytes(
        _mulaw.encode_sample(int(amplitude * (0.6 * math.sin(2 * math.pi * 300 * n / 8000)
                                + 0.4 * math.sin(2 * math.pi * 1000 * n / 8000))))
        for n in range(start, start + FRAME_BYTES)
    )


@attrs.frozen
class Utterance:
    """The caller speaks from `at` for `duration` seconds (call time, from `start`).

    Without `audio` the caller says loud synthetic speech (`speech_frame`); with it,
    that μ-law 8 kHz recording (see `recorded` and `from_wav`).
    """

    at: float
    duration: float
    audio: bytes | None = attrs.field(default=None, kw_only=True, repr=False)

    @classmethod
    def recorded(cls, audio: bytes, *, at: float) -> Utterance:
        """Say μ-law 8 kHz `audio` from `at`, for as long as it lasts."""
        return cls(at, len(audio) / 1000 / tw.BYTES_PER_MS, audio=audio)

    @classmethod
    def from_wav(cls, path: str | Path, *, at: float) -> Utterance:
        """Say a WAV file (PCM or μ-law, any rate, mono or stereo) from `at`."""
        return cls.recorded(read_wav(path), at=at)

    def frame(self, elapsed: float, chunk: int) -> bytes:
        """The 20 ms the caller says at call time `elapsed` (media chunk number `chunk`)."""
        if self.audio is None:
            # 300 Hz and 1 kHz both complete whole cycles in 50 frames (1 s)
            return speech_frame(chunk % 50)
        start = round((elapsed - self.at) * 1000 / FRAME_MS) * FRAME_BYTES
        return self.audio[start : start + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")


@attrs.define
class Heard:
    """One chunk of outbound audio as the caller's phone played it."""

    start: float
    end: float
    audio: bytes
    cut_at: float | None = None

    def played(self, now: float) -> bytes:
        """The bytes actually heard by time `now`."""
        stop = min(self.end, now if self.cut_at is None else min(self.cut_at, now))
        if stop <= self.start:
            return b""
        return self.audio[: round((stop - self.start) * 1000 * tw.BYTES_PER_MS)]


class TwilioCaller:
    """Twilio's side of one stream. Use `run(socket)`; inspect the record afterwards."""

    def __init__(
        self,
        *,
        utterances: Sequence[Utterance] = (),
        hangup_at: float = 10.0,
        hangup_after_audio: float | None = None,
        send_stop: bool = True,
        custom_parameters: dict[str, str] | None = None,
        dtmf: Sequence[tuple[float, str]] = (),
        stream_sid: str = "MZ00000000000000000000000000000001",
        call_sid: str = "CA00000000000000000000000000000001",
        account_sid: str = "AC00000000000000000000000000000001",
        start_delay: float = 0.0,
        send_start: bool = True,
    ) -> None:
        self.utterances = list(utterances)
        self.hangup_at = hangup_at
        #: hang up this long after the first audio arrives (mid-sentence, however slow
        #: the line); `hangup_at` still bounds the call
        self.hangup_after_audio = hangup_after_audio
        self._first_audio_at: float | None = None
        self.send_stop = send_stop
        self.custom_parameters = custom_parameters or {}
        self.dtmf = sorted(dtmf)
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        #: seconds between `connected` and `start` (Twilio: none to speak of)
        self.start_delay = start_delay
        self.send_start = send_start
        # record
        self.t0 = 0.0
        self.sent_audio = bytearray()
        self.heard: list[Heard] = []
        self.clears: list[float] = []
        self.echoes: list[tuple[float, str]] = []
        self.received: list[tuple[float, tw.TwilioMessage]] = []
        self.violations: list[str] = []
        self.closed_by_server = False
        #: set once `run` has returned (the stream is over, whoever ended it)
        self.finished = trio.Event()
        self._started = False
        self._hung_up = False
        self._hang_up_requested = False
        # playback
        self._socket: MessageSocket | None = None
        self._seq = 0
        self._play_end = 0.0
        self._marks: deque[tuple[float, str]] = deque()
        self._marks_changed = trio.Event()

    # --- what the caller heard -------------------------------------------------------

    def heard_audio(self, now: float | None = None) -> bytes:
        t = trio.current_time() if now is None else now
        return b"".join(h.played(t) for h in self.heard)

    def speaking(self, t: float) -> Utterance | None:
        """What the caller is saying at time `t`, if anything."""
        return next((u for u in self.utterances if u.at <= t - self.t0 < u.at + u.duration),
                    None)

    def hang_up(self) -> None:
        """End the stream as Twilio does when the call ends or leaves `<Connect>`
        (REST `Status=completed`, a redirect): at the next frame the caller sends
        `stop`, then closes its socket. Does nothing once the stream is over."""
        self._hang_up_requested = True

    # --- running -----------------------------------------------------------------------

    async def _send(self, message: tw.TwilioMessage) -> None:
        assert self._socket is not None
        await self._socket.send(codec.encode(message))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def run(self, socket: MessageSocket) -> None:
        """Play the whole call: returns after hang-up, or when the server closes."""
        try:
            await self._run(socket)
        finally:
            self.finished.set()

    async def _run(self, socket: MessageSocket) -> None:
        self._socket = socket
        self.t0 = trio.current_time()
        await self._send(tw.Connected())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._echo_marks)

                async def receive_then_stop() -> None:
                    await self._receive()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(receive_then_stop)
                await trio.sleep(self.start_delay)
                if self.send_start:
                    await self._send(tw.Start(
                        stream_sid=self.stream_sid, account_sid=self.account_sid,
                        call_sid=self.call_sid, custom_parameters=self.custom_parameters,
                        sequence_number=self._next_seq()))
                    self._started = True
                self.t0 = trio.current_time()
                await self._stream()
                nursery.cancel_scope.cancel()
        except* SocketClosed:
            # a mark echo racing our own hang-up is not the server closing on us
            self.closed_by_server = not self._hung_up

    async def _stream(self) -> None:
        chunk = 0
        dtmf = deque(self.dtmf)
        while True:
            now = trio.current_time()
            elapsed = now - self.t0
            if elapsed >= self.hangup_at or self._hang_up_requested:
                break
            if self._first_audio_at is not None and self.hangup_after_audio is not None \
                    and now >= self._first_audio_at + self.hangup_after_audio:
                break
            while dtmf and dtmf[0][0] <= elapsed:
                await self._send(tw.Dtmf(stream_sid=self.stream_sid, digit=dtmf.popleft()[1],
                                         sequence_number=self._next_seq()))
            utterance = self.speaking(now)
            frame = SILENCE_FRAME if utterance is None else utterance.frame(elapsed, chunk)
            chunk += 1
            self.sent_audio += frame
            await self._send(tw.Media(
                stream_sid=self.stream_sid, payload=base64.b64encode(frame).decode(),
                track="inbound", chunk=chunk, timestamp=(chunk - 1) * FRAME_MS,
                sequence_number=self._next_seq()))
            await trio.sleep_until(self.t0 + chunk * FRAME_MS / 1000)
        self._hung_up = True
        if self.send_stop:
            await self._send(tw.Stop(stream_sid=self.stream_sid, account_sid=self.account_sid,
                                     call_sid=self.call_sid, sequence_number=self._next_seq()))
        assert self._socket is not None
        await self._socket.aclose()

    async def _receive(self) -> None:
        assert self._socket is not None
        while True:
            text = await self._socket.receive()
            if text is None:
                self.closed_by_server = not self._hung_up
                return
            now = trio.current_time()
            if isinstance(text, bytes):
                self.violations.append("binary frame (Twilio warning 31950)")
                continue
            if not self._started:
                self.violations.append("message before `start` (it cannot carry a streamSid)")
            self._check_shape(text)
            try:
                message = codec.decode_twilio(text)
            except Exception as exc:
                self.violations.append(f"invalid message (31951): {exc}")
                continue
            self.received.append((now, message))
            if isinstance(message, tw.Media):
                if self._first_audio_at is None:
                    self._first_audio_at = now
                audio = base64.b64decode(message.payload)
                start = max(now, self._play_end)
                self._play_end = start + len(audio) / tw.BYTES_PER_MS / 1000
                self.heard.append(Heard(start, self._play_end, audio))
            elif isinstance(message, tw.Mark):
                self._marks.append((max(now, self._play_end), message.name))
                self._wake()
            elif isinstance(message, tw.Clear):
                self._clear(now)

    def _check_shape(self, text: str) -> None:
        raw = json.loads(text) if text.startswith("{") else None
        if not isinstance(raw, dict):
            return
        expected = _OUTBOUND_SHAPES.get(raw.get("event", ""))
        if expected is None:
            self.violations.append(f"unknown event {raw.get('event')!r} (31951)")
        elif set(raw) != expected:
            self.violations.append(f"fields {sorted(raw)} for {raw['event']} (31951)")
        elif raw["streamSid"] != self.stream_sid:
            self.violations.append("wrong streamSid (31951)")
        elif raw["event"] == "media" and set(raw["media"]) != {"payload"}:
            self.violations.append(f"media fields {sorted(raw['media'])} (31951)")

    def _clear(self, now: float) -> None:
        self.clears.append(now)
        for h in self.heard:
            if h.end > now and h.cut_at is None:
                h.cut_at = now
        self._play_end = now
        # every pending mark comes back at once
        self._marks = deque((now, name) for _, name in self._marks)
        self._wake()

    def _wake(self) -> None:
        self._marks_changed.set()
        self._marks_changed = trio.Event()

    async def _echo_marks(self) -> None:
        while True:
            if not self._marks:
                await self._marks_changed.wait()
                continue
            due, name = self._marks[0]
            with trio.move_on_at(due):
                await self._marks_changed.wait()
                continue
            self._marks.popleft()
            self.echoes.append((trio.current_time(), name))
            await self._send(tw.Mark(stream_sid=self.stream_sid, name=name,
                                     sequence_number=self._next_seq()))
