"""Voice platforms that take raw audio over a WebSocket, behind the backend seam.

Platforms such as VAPI's WebSocket transport carry audio as binary frames both ways
(16-bit PCM at 16 kHz, or μ-law at 8 kHz) and say what happens in JSON text frames.
The call core speaks the realtime event vocabulary of `callbridge.realtime`
(docs/backends.md), so a `PcmConnection` translates, both ways, with the audio
transcoded as it streams (`callbridge._transcode`: filter state kept across frames):

    the core sends                          the platform gets
    input_audio_buffer.append (μ-law 8k) -> a binary frame in its format
    anything else (session.update, response.create, truncate, cancel)
                                         -> nothing: the platform runs its own agent

    the platform sends                      the core gets
    a binary frame of the agent's audio  -> response.created (the first of a turn),
                                            response.output_audio.delta (μ-law 8k)
    a control message `PcmControls` maps:
      the caller started speaking        -> input_audio_buffer.speech_started (barge-in:
                                            Twilio's `clear`, a new playback generation),
                                            and the agent's turn is over
      the caller stopped                 -> input_audio_buffer.speech_stopped
      the agent's turn ended             -> response.output_audio.done, response.done
      a final transcript                 -> the agent's or the caller's transcript
      the platform hung up (or closed,   -> the connection's end, with `hung_up` set:
      when `close_ends_call`)               the call ends once the agent's audio played

What these platforms cannot be told: what the caller heard. There is no truncation:
at a barge-in Twilio's queue is cleared at once, but the platform's conversation
keeps the words the caller never heard. Its audio positions are unknown too, so a
`speech_started` carries the position of the caller's audio sent so far when its
message came.

`PcmControls` matches a message when every key of a pattern has the pattern's value
in it (`{"type": "speech-update", "role": "user", "status": "started"}`): another
platform is a different set of patterns (`VAPI_CONTROLS` is VAPI's).
"""

from __future__ import annotations

import base64
import json
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from . import realtime as rt
from ._sockets import SocketClosed
from ._transcode import ToMulaw, ToPcm
from .backend import SocketLiveness

__all__ = ["VAPI_CONTROLS", "PcmConnection", "PcmControls", "PlatformSocket"]

log = logging.getLogger("callbridge.pcm")

Pattern = Mapping[str, Any]


class PlatformSocket(Protocol):
    """A WebSocket that carries text and binary messages (callbridge's own client,
    an in-memory pair)."""

    async def send(self, message: str | bytes) -> None: ...

    async def receive(self) -> str | bytes | None: ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None: ...


@attrs.frozen(kw_only=True)
class PcmControls:
    """Which of a platform's JSON control messages mean what (see the module docstring)."""

    #: the caller started speaking: stop the agent's playback at once
    caller_started: tuple[Pattern, ...] = ()
    caller_stopped: tuple[Pattern, ...] = ()
    #: the agent's turn is over (its audio so far is the whole turn)
    agent_done: tuple[Pattern, ...] = ()
    #: the platform ended the call
    hang_up: tuple[Pattern, ...] = ()
    #: a final transcript: `role_key` says whose ("assistant" or "user"), `text_key` what
    transcript: tuple[Pattern, ...] = ()
    role_key: str = "role"
    text_key: str = "transcript"
    #: what we send when the call ends on our side (None: we just close)
    our_hang_up: Pattern | None = None
    #: the platform closing its socket ends the call (its call URLs are for one
    #: connection: a new connection would be a new conversation); otherwise the call
    #: reconnects, as after a lost connection
    close_ends_call: bool = False


#: VAPI's WebSocket transport (docs/vapi-protocol.md): `user-interrupted` is its
#: barge-in, `speech-update` of the user comes first; the call is over with a
#: `status-update` `ended` or the socket's close (`hangup` is taken too; `hang` is
#: not a hang-up: it says the assistant is slow); we end it with `end-call`
VAPI_CONTROLS = PcmControls(
    caller_started=({"type": "speech-update", "status": "started", "role": "user"},
                    {"type": "user-interrupted"}),
    caller_stopped=({"type": "speech-update", "status": "stopped", "role": "user"},),
    agent_done=({"type": "speech-update", "status": "stopped", "role": "assistant"},),
    hang_up=({"type": "status-update", "status": "ended"}, {"type": "hangup"}),
    transcript=({"type": "transcript", "transcriptType": "final"},),
    our_hang_up={"type": "end-call"},
    close_ends_call=True,
)


def _matches(patterns: tuple[Pattern, ...], message: Mapping[str, Any]) -> bool:
    return any(all(message.get(k) == v for k, v in p.items()) for p in patterns)


class PcmConnection(SocketLiveness):
    """A `RealtimeConnection` over a PCM platform's WebSocket `socket` (see the module
    docstring). `encoding` is `pcm_s16le` at `rate` Hz, or `mulaw` at 8000."""

    #: the platform cannot be told what the caller heard (the bridge counts no
    #: truncation, and its records cut the agent's words by what was played)
    truncates = False
    #: its VAD is its own, and says no audio positions: a `speech_started` is where
    #: the caller's audio was when its message came (no padding to take off)
    turn_detection = rt.TurnDetection(type="platform")

    def __init__(self, socket: PlatformSocket, *, controls: PcmControls,
                 encoding: str = "pcm_s16le", rate: int = 16000) -> None:
        if encoding not in ("pcm_s16le", "mulaw") or (encoding == "mulaw" and rate != 8000):
            raise ValueError(f"{encoding} at {rate} Hz: expected pcm_s16le, or mulaw at 8000")
        self.socket = socket
        self.controls = controls
        self._mulaw, self._rate = encoding == "mulaw", rate
        self._to_platform = None if self._mulaw else ToPcm(rate)
        self._from_platform = None if self._mulaw else ToMulaw(rate)
        self._ready: deque[rt.ServerEvent] = deque()  # translated, not handed out yet
        self._turns = 0  # the agent's turns so far: their response and item ids
        self._speaking: str | None = None  # the agent's turn under way (its number)
        self._sent_ms = 0  # the caller's audio sent so far: the platform's input clock
        self._barged = False  # the caller is speaking (told once per turn)
        #: the platform ended the call (a hang-up message): the call should end too
        self.hung_up = False
        self._closed = False

    # --- to the platform ------------------------------------------------------------

    async def send(self, event: rt.ClientEvent) -> None:
        if type(event) is not rt.InputAudioBufferAppend:
            return  # the platform's own agent decides what to say (module docstring)
        mulaw = base64.b64decode(event.audio)
        self._sent_ms += len(mulaw) // 8
        if self._to_platform is None:
            await self.socket.send(mulaw)
        else:
            await self.socket.send(self._to_platform.convert(mulaw))

    async def hang_up(self) -> None:
        """The call is ending on our side: tell the platform (when it has a message
        for that and did not end the call itself)."""
        message = self.controls.our_hang_up
        if message is not None and not self.hung_up and not self._closed:
            try:
                await self.socket.send(json.dumps(message))
            except SocketClosed:
                pass

    # --- from the platform ----------------------------------------------------------

    async def receive(self) -> rt.ServerEvent | None:
        """The next event, translated; None once the platform closed or hung up."""
        while not self._ready:
            if self._closed:
                return None
            message = await self.socket.receive()
            if message is None:
                self._closed = True
                self.hung_up = self.hung_up or self.controls.close_ends_call
                self._agent_done("incomplete")
            elif isinstance(message, bytes):
                self._audio(message)
            else:
                self._control(message)
        return self._ready.popleft()

    def _audio(self, data: bytes) -> None:
        convert = self._from_platform
        mulaw = data if convert is None else convert.convert(data)
        if not mulaw:
            return  # (the resampler holds it until more comes)
        turn = self._speaking
        if turn is None:
            self._turns += 1
            turn = self._speaking = str(self._turns)
            self._ready.append(rt.ResponseCreated(response={"id": f"resp_{turn}",
                                                            "status": "in_progress"}))
        self._ready.append(rt.OutputAudioDelta(response_id=f"resp_{turn}", item_id=f"item_{turn}",
                                               delta=base64.b64encode(mulaw).decode()))

    def _control(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            log.warning("the platform sent a text frame that is not a JSON object: %.80r",
                        text)
            return
        controls = self.controls
        if _matches(controls.caller_started, message):
            if self._speaking is None and self._barged:
                return  # (`user-interrupted` after its `speech-update`: one barge-in)
            self._barged = True
            self._agent_done("cancelled")  # the platform stops its agent itself
            self._ready.append(rt.SpeechStarted(audio_start_ms=self._sent_ms,
                                                item_id=f"caller_{self._sent_ms}"))
        elif _matches(controls.caller_stopped, message):
            self._barged = False
            self._ready.append(rt.SpeechStopped(audio_end_ms=self._sent_ms,
                                                item_id=f"caller_{self._sent_ms}"))
        elif _matches(controls.agent_done, message):
            self._agent_done("completed")
        elif _matches(controls.hang_up, message):
            self.hung_up = self._closed = True
            self._agent_done("completed")
        elif _matches(controls.transcript, message):
            self._transcript(message)

    def _transcript(self, message: Mapping[str, Any]) -> None:
        text = message.get(self.controls.text_key)
        if not isinstance(text, str):
            return
        if message.get(self.controls.role_key) == "user":
            self._ready.append(rt.InputTranscriptionCompleted(
                item_id=f"caller_{self._sent_ms}", transcript=text))
        elif self._turns:  # the agent's: of its last turn
            turn = str(self._turns)
            self._ready.append(rt.OutputAudioTranscriptDone(
                response_id=f"resp_{turn}", item_id=f"item_{turn}", transcript=text))

    def _agent_done(self, status: str) -> None:
        """The agent's turn under way (if any) is over."""
        turn, self._speaking = self._speaking, None
        if turn is None:
            return
        if self._from_platform is not None:
            if status == "cancelled":  # cut off: what the resampler held is not played
                self._from_platform = ToMulaw(self._rate)
            elif rest := self._from_platform.flush():  # the end of the turn's audio
                self._ready.append(rt.OutputAudioDelta(
                    response_id=f"resp_{turn}", item_id=f"item_{turn}",
                    delta=base64.b64encode(rest).decode()))
        self._ready.append(rt.OutputAudioDone(response_id=f"resp_{turn}", item_id=f"item_{turn}"))
        self._ready.append(rt.ResponseDone(response={"id": f"resp_{turn}", "status": status}))

