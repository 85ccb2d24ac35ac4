"""The callbridge service: a quart-trio app for `hypercorn --worker-class trio`.

    GET  /               health: {"status": "ok", "active_calls": N}
    POST /incoming-call  Twilio voice webhook (GET too): TwiML `<Connect><Stream>`
    WS   /media-stream   Twilio Media Streams -> `run_call`

The media stream is served straight from ASGI messages, not through quart's
WebSocket wrapper: it is the per-frame hot path, and it needs to see the client's
close as an event (`websocket.disconnect`) rather than as a cancellation, so the
call can end in order (see `callbridge._call`). Everything else is ordinary quart,
so you can add routes to `app`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from quart import Response, request
from quart_trio import QuartTrio

from . import _hypercorn_fix, twiml
from ._call import run_call
from ._sockets import AsgiSocket
from .agent import Agent
from .backend import OpenAIRealtime, RealtimeBackend
from .config import Settings

__all__ = ["CallbridgeApp", "create_app", "app"]

log = logging.getLogger("callbridge.app")

MEDIA_PATH = "/media-stream"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


OFFLINE_NOTICE = (
    "OPENAI_API_KEY is not set: OFFLINE MODE. Calls are answered by callbridge's local "
    "echo agent (it repeats what the caller says), not by an OpenAI model."
)


def backend_for(settings: Settings) -> RealtimeBackend:
    """OpenAI's Realtime API, or offline (no key) the local echo agent."""
    if settings.openai_api_key is None:
        from .testing import LocalRealtimeServer, echo_brain

        return LocalRealtimeServer(echo_brain())
    return OpenAIRealtime(api_key=settings.openai_api_key, base_url=settings.openai_base_url)


class CallbridgeApp(QuartTrio):
    """QuartTrio plus the media-stream endpoint and the call's configuration.

    `settings` default to `Settings.from_env()`, read when the server starts (so a
    bad value fails startup with a clear message); `agent` and `backend` default to
    what the settings describe.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        agent: Agent | None = None,
        backend: RealtimeBackend | None = None,
    ) -> None:
        super().__init__("callbridge")
        self.settings = settings
        self.call_agent = agent
        self.call_backend = backend
        self.active_calls = 0
        self.before_serving(self._configure)
        self.add_url_rule("/", "health", self._health, methods=["GET"])
        self.add_url_rule("/incoming-call", "incoming_call", self._incoming_call,
                          methods=["GET", "POST"])

    async def _configure(self) -> None:
        _hypercorn_fix.install()
        if self.settings is None:
            self.settings = Settings.from_env()
        if self.call_agent is None:
            self.call_agent = self.settings.agent()
        if self.call_backend is None:
            self.call_backend = backend_for(self.settings)
        if self.settings.offline:
            log.warning(OFFLINE_NOTICE)
        log.info("callbridge ready: model %s, voice %s", self.call_agent.model, self.call_agent.voice)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "websocket" and scope["path"] == MEDIA_PATH:
            await self._media_stream(receive, send)
        else:
            await super().__call__(scope, receive, send)  # type: ignore[arg-type]

    async def _media_stream(self, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        assert self.call_agent is not None and self.call_backend is not None
        await send({"type": "websocket.accept"})
        socket = AsgiSocket(receive, send)
        self.active_calls += 1
        try:
            result = await run_call(socket, agent=self.call_agent, backend=self.call_backend)
        except Exception:
            log.exception("call failed")
            await socket.aclose(1011)
        else:
            log.info("call %s ended: %s %s (%d frames in, %d chunks out, %d barge-ins)",
                     result.call_sid, result.reason, result.detail, result.stats.frames_in,
                     result.stats.chunks_out, result.stats.barge_ins)
        finally:
            self.active_calls -= 1

    async def _health(self) -> dict[str, Any]:
        return {"status": "ok", "active_calls": self.active_calls}

    def stream_url(self) -> str:
        """`wss://HOST[/prefix]/media-stream`: the public URL when configured, else the
        request's host (and forwarded host, only when a proxy is trusted)."""
        settings = self.settings
        if settings is not None and settings.public_url:
            parts = urlsplit(settings.public_url)
            return f"wss://{parts.netloc}{parts.path}{MEDIA_PATH}"
        host = request.headers.get("Host", "localhost")
        if settings is not None and settings.trust_proxy:
            forwarded = request.headers.get("X-Forwarded-Host", "")
            host = forwarded.split(",")[0].strip() or host
        return f"wss://{host}{MEDIA_PATH}"

    async def _incoming_call(self) -> Response:
        form = await request.form if request.method == "POST" else request.args
        parameters = {name: form[key] for key, name in
                      [("From", "from"), ("To", "to"), ("CallSid", "call_sid")] if form.get(key)}
        body = twiml.connect_stream(self.stream_url(), parameters=parameters, name="callbridge")
        return Response(body, content_type="text/xml")


def create_app(
    settings: Settings | None = None,
    *,
    agent: Agent | None = None,
    backend: RealtimeBackend | None = None,
) -> CallbridgeApp:
    return CallbridgeApp(settings, agent=agent, backend=backend)


#: `hypercorn --worker-class trio callbridge.app:app`
app = create_app()
