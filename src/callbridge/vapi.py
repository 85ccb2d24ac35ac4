"""VAPI's WebSocket transport as callbridge's model: a `RealtimeBackend`.

Each call creates a VAPI call with `transport.provider = "vapi.websocket"` through
VAPI's REST API (`callbridge.vapi_rest`), then opens the `websocketCallUrl` it
returns and speaks the PCM platform protocol over it (`callbridge.pcm`): the
caller's audio goes up transcoded to the negotiated format (`pcm_s16le` at 16 kHz by
default, or `mulaw` at 8 kHz, passed through), the assistant's comes down, and VAPI's
control messages become barge-ins and the end of the call (`VAPI_CONTROLS`). When the
call ends on our side, VAPI is sent `{"type": "hangup"}` before the socket closes.

The assistant (its prompt, voice, tools, first message) is VAPI's, configured there:
`Agent`'s instructions, voice and tools do not reach it, and neither do truncations
(VAPI cannot be told what the caller heard; see `callbridge.pcm`). What callbridge
still does: Twilio, barge-in on the caller's side (`clear` at once), the caller's
audio buffered while VAPI's socket opens, keep-alive pings, the records, metrics
and recordings of every call.

The service uses it with `CALLBRIDGE_BACKEND=vapi`, `VAPI_API_KEY`, `VAPI_ASSISTANT_ID`
and optionally `VAPI_BASE_URL` and `VAPI_AUDIO_FORMAT` (`pcm_s16le` or `mulaw`); a
reconnect creates a new VAPI call (VAPI's socket URLs are for one connection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
import httpx
import trio

from ._wsclient import HandshakeError, connect_websocket
from .backend import ModelConnectError, RealtimeConnection
from .pcm import VAPI_CONTROLS, PcmConnection, PcmControls, PlatformSocket
from .vapi_rest import VapiAudioFormat, VapiError, VapiRest

__all__ = ["VapiBackend"]

#: the audio formats VAPI's WebSocket transport offers, by `VAPI_AUDIO_FORMAT`
AUDIO_FORMATS = {
    "pcm_s16le": VapiAudioFormat(format="pcm_s16le", sample_rate=16000),
    "mulaw": VapiAudioFormat(format="mulaw", sample_rate=8000),
}

Opener = Callable[[str], AbstractAsyncContextManager[PlatformSocket]]


@asynccontextmanager
async def open_platform_socket(url: str) -> AsyncIterator[PlatformSocket]:
    """callbridge's WebSocket client to a platform's call URL."""
    try:
        socket = await connect_websocket(url, max_message_size=1 << 20, connect_timeout=10.0)
    except (OSError, HandshakeError, trio.TooSlowError) as exc:
        status = exc.status_code if isinstance(exc, HandshakeError) else None
        raise ModelConnectError(f"cannot open the platform's call socket: {type(exc).__name__}"
                                + (f" (HTTP {status})" if status else "")) from None
    try:
        yield socket
    finally:
        with trio.CancelScope(shield=True):
            await socket.aclose()


@attrs.frozen(kw_only=True)
class VapiBackend:
    """VAPI's WebSocket transport (see the module docstring)."""

    rest: VapiRest
    assistant_id: str
    audio: VapiAudioFormat = AUDIO_FORMATS["pcm_s16le"]
    controls: PcmControls = VAPI_CONTROLS
    #: opens the call's socket (tests: the local platform in memory)
    open_socket: Opener = open_platform_socket

    def connect(self, model: str) -> AbstractAsyncContextManager[RealtimeConnection]:
        """A new VAPI call (`model` is unused: the assistant is VAPI's)."""
        return self._connect()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[RealtimeConnection]:
        try:
            call = await self.rest.create_websocket_call(self.assistant_id, self.audio)
        except VapiError as exc:
            raise ModelConnectError(f"VAPI would not create the call: {exc}",
                                    refused=exc.refused) from None
        except httpx.HTTPError as exc:
            raise ModelConnectError(f"cannot reach VAPI's API: {type(exc).__name__}") from None
        async with self.open_socket(call.websocket_url) as socket:
            connection = PcmConnection(socket, controls=self.controls,
                                       encoding=self.audio.format, rate=self.audio.sample_rate)
            try:
                yield connection
            finally:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + 2
                    await connection.hang_up()
