"""The local model in PCM mode: a voice platform on a WebSocket, as VAPI's transport is.

`LocalPcmPlatform` serves one call per WebSocket the way a PCM platform does: the
caller's audio comes in as binary frames (16-bit PCM at `rate`, or μ-law at 8 kHz),
the agent's audio goes out the same way, in real time's order, and what happens is
said in JSON text frames (VAPI's vocabulary, docs/vapi-protocol.md):

    {"type": "speech-update", "status": "started" | "stopped", "role": "user" | "assistant"}
    {"type": "user-interrupted"}      the caller cut the agent off (after its speech-update)
    {"type": "transcript", "role": ..., "transcriptType": "final", "transcript": ...}
    {"type": "status-update", "status": "ended", "endedReason": ...}, then the close:
                                      the platform ended the call
    {"type": "end-call"} (or "hangup") from the client: it ended the call

Behind it runs a `LocalRealtimeServer` session, the same brains and server VAD the
OpenAI-mode tests use: the platform transcodes (`callbridge._transcode`) and
translates, so a call behaves the same against either mode. The agent speaks first
when `first_message` is set (as a VAPI assistant's `firstMessage`), and hangs up
after the response in which its brain called `end_call`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio

from .. import realtime as rt
from .._sockets import SocketClosed, memory_socket_pair
from .._transcode import ToMulaw, ToPcm
from ..backend import RealtimeConnection
from ..pcm import PlatformSocket
from ..vapi import VapiBackend
from ..vapi_rest import VapiAudioFormat, VapiRest
from ._brains import Brain
from ._model import LocalRealtimeServer
from ._vapirest import LocalVapiRest

__all__ = ["LocalPcmPlatform", "LocalVapi", "PcmCallRecord"]


@attrs.define
class PcmCallRecord:
    """What one call on the platform carried."""

    #: the caller's audio as the platform got it, and as the model got it (μ-law 8k)
    received: bytearray = attrs.field(factory=bytearray)
    #: the text frames each way, in order
    controls_in: list[dict[str, Any]] = attrs.field(factory=list)
    controls_out: list[dict[str, Any]] = attrs.field(factory=list)
    #: the client sent `hangup`; the platform did
    client_hung_up: bool = False
    platform_hung_up: bool = False
    closed: bool = False


#: the assistant's one tool (VAPI's `endCallFunctionEnabled`): it hangs up after its
#: response has been sent
END_CALL = {"type": "function", "name": "end_call",
            "description": "End the call, once your goodbye has been said.",
            "parameters": {"type": "object", "properties": {}}}


class LocalPcmPlatform:
    """A PCM voice platform made of the local model (see the module docstring)."""

    def __init__(self, model: LocalRealtimeServer, *, encoding: str = "pcm_s16le",
                 rate: int = 16000, first_message: bool = False) -> None:
        self.model = model
        self.encoding, self.rate = encoding, rate
        self.first_message = first_message
        self.calls: list[PcmCallRecord] = []

    async def serve(self, socket: PlatformSocket) -> None:
        """One call, until either side hangs up or the socket closes."""
        record = PcmCallRecord()
        self.calls.append(record)
        try:
            async with self.model.connect("local") as model:
                # the platform's own assistant, as VAPI's: it may end the call
                await model.send(rt.SessionUpdate(session=rt.Session(tools=(END_CALL,))))
                if self.first_message:
                    await model.send(rt.ResponseCreate())
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._from_caller, socket, model, record,
                                       nursery.cancel_scope)
                    await self._to_caller(socket, model, record)
                    nursery.cancel_scope.cancel()
        finally:
            record.closed = True
            with trio.CancelScope(shield=True):
                await socket.aclose()

    async def _from_caller(self, socket: PlatformSocket, model: Any, record: PcmCallRecord,
                           done: trio.CancelScope) -> None:
        to_mulaw = None if self.encoding == "mulaw" else ToMulaw(self.rate)
        while (message := await socket.receive()) is not None:
            if isinstance(message, bytes):
                mulaw = message if to_mulaw is None else to_mulaw.convert(message)
                record.received += mulaw
                if mulaw:
                    await model.send(rt.InputAudioBufferAppend(
                        audio=base64.b64encode(mulaw).decode()))
                continue
            control = json.loads(message)
            record.controls_in.append(control)
            if control.get("type") in ("end-call", "hangup"):
                record.client_hung_up = True
                break
        done.cancel()

    async def _to_caller(self, socket: PlatformSocket, model: Any,
                         record: PcmCallRecord) -> None:
        to_pcm = None if self.encoding == "mulaw" else ToPcm(self.rate)
        ending = False  # the brain called end_call: hang up after this response
        speaking = False  # the agent's response is under way

        async def say(**control: Any) -> None:
            record.controls_out.append(control)
            await socket.send(json.dumps(control))

        try:
            while (event := await model.receive()) is not None:
                if type(event) is rt.OutputAudioDelta:
                    mulaw = base64.b64decode(event.delta)
                    await socket.send(mulaw if to_pcm is None else to_pcm.convert(mulaw))
                elif isinstance(event, rt.SpeechStarted):
                    await say(type="speech-update", status="started", role="user")
                    if speaking:  # the model cancels the response itself
                        await say(type="user-interrupted")
                elif isinstance(event, rt.SpeechStopped):
                    await say(type="speech-update", status="stopped", role="user")
                elif isinstance(event, rt.ResponseCreated):
                    speaking = True
                    await say(type="speech-update", status="started", role="assistant")
                elif isinstance(event, rt.FunctionCallArgumentsDone):
                    ending = ending or event.name == "end_call"
                elif isinstance(event, rt.ResponseDone):
                    speaking = False
                    if to_pcm is not None and (rest := to_pcm.flush()):
                        await socket.send(rest)
                    await say(type="speech-update", status="stopped", role="assistant")
                    if ending:
                        record.platform_hung_up = True
                        await say(type="status-update", status="ended",
                                  endedReason="assistant-ended-call")
                        return
                elif isinstance(event, rt.OutputAudioTranscriptDone):
                    await say(type="transcript", role="assistant", transcriptType="final",
                              transcript=event.transcript)
                elif isinstance(event, rt.InputTranscriptionCompleted):
                    await say(type="transcript", role="user", transcriptType="final",
                              transcript=event.transcript)
        except SocketClosed:
            pass  # the client went: the call is over

    @asynccontextmanager
    async def open(self, url: str = "") -> AsyncIterator[PlatformSocket]:
        """An in-memory WebSocket to a new call (what `VapiBackend.open_websocket`
        takes in tests: no sockets, virtual time)."""
        client, server_end = memory_socket_pair()
        # The platform is not the client's to cancel: a call ending on our side closes
        # the socket (after its `end-call`), and the platform sees that, as a remote
        # one would; it gets a few seconds to.
        platform = trio.CancelScope(shield=True)

        async def serve() -> None:
            with platform:
                await self.serve(server_end)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
                platform.deadline = trio.current_time() + 5


class LocalVapi:
    """VAPI, offline: its REST API (`LocalVapiRest`) and the WebSocket transport
    (`LocalPcmPlatform`, in memory), behind a real `VapiBackend` and `VapiRest`, so
    everything callbridge does with VAPI runs without a key: the service offline
    with `CALLBRIDGE_BACKEND=vapi`, the tests, the demo, the bench. A
    `RealtimeBackend` itself (its `backend`'s `connect`)."""

    API_KEY = "local-vapi-key"
    ASSISTANT_ID = "local-assistant"

    def __init__(self, brain: Brain | None = None, *,
                 audio: VapiAudioFormat | None = None,
                 model: LocalRealtimeServer | None = None,
                 first_message: bool = False) -> None:
        audio = audio or VapiAudioFormat()
        self.model = model or LocalRealtimeServer(brain)
        self.platform = LocalPcmPlatform(self.model, encoding=audio.format,
                                         rate=audio.sample_rate, first_message=first_message)
        self.rest = LocalVapiRest(api_key=self.API_KEY, assistants=[self.ASSISTANT_ID])
        self.backend = VapiBackend(
            rest=VapiRest(self.API_KEY, base_url="http://vapi.local",
                          transport=self.rest.transport()),
            assistant_id=self.ASSISTANT_ID, audio=audio, open_socket=self.platform.open)

    def connect(self, model: str) -> AbstractAsyncContextManager[RealtimeConnection]:
        return self.backend.connect(model)
