"""The callbridge service: a quart-trio app for `hypercorn --worker-class trio`.

    GET  /               health: {"status": "ok", "active_calls": N} (`app.calls`),
                         and "draining": true while the service shuts down
    GET  /ready          readiness for a load balancer: 200, or 503 while draining
    GET  /metrics        Prometheus metrics, with `CALLBRIDGE_METRICS_TOKEN` (else 404)
    POST /incoming-call  Twilio voice webhook (GET too): TwiML `<Connect><Stream>`
    WS   /media-stream   Twilio Media Streams -> `run_call`

With `TWILIO_AUTH_TOKEN` set, only Twilio gets in (see `callbridge._guard`): the
webhook and the stream upgrade must be signed for the service's public URL, and
the stream must bring back the token the webhook put in its TwiML, before a model
session is opened. Caller frames over `MAX_TWILIO_MESSAGE` end the call (1009).

Turning calls away: with `CALLBRIDGE_MAX_CALLS` calls live on this worker, or while
it drains, the webhook answers TwiML that says `CALLBRIDGE_BUSY_LINE` and hangs up,
and a stream is accepted and closed at once with 1013 ("try again later"), before
any model session: Twilio then runs the TwiML after `</Connect>` (none: it hangs
up), where a 403 would be a handshake error (31920). Shutting down (SIGTERM) drains
the worker: new calls are turned away, the live ones go on for `CALLBRIDGE_DRAIN_S`,
then the agent says `CALLBRIDGE_DRAIN_LINE` to each one still live and it hangs up;
only then does hypercorn's own shutdown begin (see `drain` and docs/drain.md).

Under `callbridge serve` the media stream never reaches this app's ASGI side: the
front door (`callbridge._frontdoor`) answers it on callbridge's own WebSocket, with
the same checks (`refuse_stream`) and the same call (`run_stream`), and hands every
other request to hypercorn. Under `hypercorn --worker-class trio callbridge.app:app`
(the compatible path, slower) it is served straight from ASGI messages, not through
quart's WebSocket wrapper: it is the per-frame hot path, and it needs to see the
client's close as an event (`websocket.disconnect`) rather than as a cancellation, so
the call can end in order (see `callbridge._call`). Everything else is ordinary
quart, so you can add routes to `app`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import trio
from quart import Response, request
from quart_trio import QuartTrio

from . import _drain, _frontdoor, _hypercorn_fix, signature, streamtoken, twiml
from ._call import Call, CallLimits, LiveCalls
from ._guard import TwilioGuard
from ._sockets import AsgiSocket, MessageSocket
from ._watch import Watch
from .agent import Agent, AgentFactory, CallContext
from .backend import RealtimeBackend, backend_for
from .config import Settings, load_agent
from .twilio_rest import TwilioRest

__all__ = ["CallbridgeApp", "app", "create_app"]

log = logging.getLogger("callbridge.app")

MEDIA_PATH = "/media-stream"

#: the incoming-call webhook's fields -> more `<Parameter>`s for the stream (sync or async)
ParameterHook = Callable[[Mapping[str, str]], Mapping[str, str] | Awaitable[Mapping[str, str]]]
#: Twilio's frames are a few hundred bytes; `start` with many parameters a few KiB
MAX_TWILIO_MESSAGE = 64 * 1024
#: a drain's wait for the calls told to say goodbye (`Call.hang_up` gives the line at
#: most 10 s to play, then tells Twilio); calls still open then are ended at once
GOODBYE_WAIT_S = 15.0
#: and its wait for those to close
END_WAIT_S = 5.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


OFFLINE_NOTICE = (
    "OPENAI_API_KEY is not set: OFFLINE MODE. Calls are answered by callbridge's local "
    "echo agent (it repeats what the caller says), not by an OpenAI model."
)
OFFLINE_VAPI_NOTICE = (
    "CALLBRIDGE_BACKEND=vapi without VAPI_API_KEY: OFFLINE MODE. Calls are answered by "
    "callbridge's local echo agent behind a local VAPI (PCM over a WebSocket), not by VAPI."
)

UNGUARDED_NOTICE = (
    "TWILIO_AUTH_TOKEN is not set: signatures are NOT checked. Anyone who can reach this "
    "service can place calls through it and open model sessions on your key. Set it before "
    "exposing the service."
)


class CallbridgeApp(QuartTrio):
    """QuartTrio plus the media-stream endpoint and the call's configuration.

    `settings` default to `Settings.from_env()`, read when the server starts (so a
    bad value fails startup with a clear message); `agent` and `backend` default to
    what the settings describe; `limits` (buffers, timeouts) to `CallLimits()`.
    `stream_parameters`, when given, is called with the incoming-call webhook's
    fields and returns more `<Parameter>`s for the stream (sync or async): they reach
    the agent as `CallContext.parameters`. `twilio_rest` defaults to
    `TwilioRest.from_env()` (None without credentials); the app closes it.

    `front_door`: serve the media stream with callbridge's own WebSocket code instead
    of through ASGI, when hypercorn's trio worker serves the app (`callbridge serve`
    turns it on; see `callbridge._frontdoor`). Other servers ignore it.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        agent: Agent | AgentFactory | None = None,
        backend: RealtimeBackend | None = None,
        limits: CallLimits | None = None,
        stream_parameters: ParameterHook | None = None,
        twilio_rest: TwilioRest | None = None,
        front_door: bool = False,
    ) -> None:
        super().__init__("callbridge")
        self.stream_parameters = stream_parameters
        self.front_door = front_door
        self.settings = settings
        self.call_agent = agent
        self.call_backend = backend
        self.call_limits = limits or CallLimits()
        #: the calls this worker is running (health, drain and call control use it)
        self.calls = LiveCalls()
        self._admitting = 0  # streams let in whose call is not in `calls` yet
        self._calls_changed = trio.Event()
        self._draining = False
        #: set when the server should run `drain` (SIGTERM, hypercorn's shutdown)
        self.drain_asked = trio.Event()
        #: why, for the log
        self.drain_why = ""
        self._drained = trio.Event()
        self.guard: TwilioGuard | None = None
        #: what is kept of the calls: records, metrics, recordings (set up at startup)
        self.watch = Watch(settings or Settings())
        #: serve `CALLBRIDGE_METRICS_BIND` from this process (not under `callbridge
        #: serve`, whose main process does)
        self.serves_metrics_bind = True
        self._metrics_bind: Callable[[], None] | None = None
        #: Twilio's REST API (hang-ups and transfers through Twilio, outbound calls),
        #: when credentials are set
        self.twilio_rest = twilio_rest
        self.before_serving(self._configure)
        self.after_serving(self._close)
        self.add_url_rule("/", "health", self._health, methods=["GET"])
        self.add_url_rule("/ready", "ready", self._ready, methods=["GET"])
        self.add_url_rule("/metrics", "metrics", self._metrics, methods=["GET"])
        self.add_url_rule("/incoming-call", "incoming_call", self._incoming_call,
                          methods=["GET", "POST"])
        self.add_url_rule("/dial-action", "dial_action", self._dial_action, methods=["POST"])
        self.add_url_rule("/amd-status", "amd_status", self._amd_status, methods=["POST"])
        self.add_url_rule("/call-status", "call_status", self._call_status, methods=["POST"])
        #: per CallSid, where the status callbacks of a call placed from this process go
        self.status_watchers: dict[str, Callable[[Mapping[str, str]], None]] = {}

    async def _configure(self) -> None:
        _hypercorn_fix.install()
        _drain.hook_hypercorn_shutdown()
        if self.front_door:
            _frontdoor.install()
        self._draining = False
        self.drain_asked, self._drained = trio.Event(), trio.Event()
        if self.settings is None:
            self.settings = Settings.from_env()
        if self.call_agent is None:
            self.call_agent = self.settings.agent()
        if self.call_backend is None:
            self.call_backend = backend_for(self.settings)
        if self.settings.agents:
            named = {spec: load_agent(spec, variable="CALLBRIDGE_AGENTS")
                     for spec in self.settings.agents}
            self.call_agent = functools.partial(_agent_by_name, named, self.call_agent)
        if self.twilio_rest is None:
            self.twilio_rest = TwilioRest.from_env()
        self.watch = Watch.from_settings(self.settings)
        await self.watch.start(self.nursery)
        bind = self.settings.metrics_bind
        if bind is not None and self.serves_metrics_bind:
            from ._metrics import start_bind_server

            try:
                self._metrics_bind = start_bind_server(*bind)
            except OSError as exc:  # hypercorn --workers N: the first worker serves it
                log.warning("CALLBRIDGE_METRICS_BIND %s:%d: %s (another worker serves it?)",
                            *bind, exc)
        if self.settings.offline:
            log.warning(OFFLINE_VAPI_NOTICE if self.settings.backend == "vapi"
                        else OFFLINE_NOTICE)
        if self.settings.twilio_auth_token:
            self.guard = TwilioGuard(self.settings.twilio_auth_token,
                                     allow_unsigned_streams=self.settings.allow_unsigned_streams)
        else:
            log.warning(UNGUARDED_NOTICE)
        agent = self.call_agent
        if isinstance(agent, Agent):
            log.info("callbridge ready: model %s, voice %s", agent.model, agent.voice)
        else:
            log.info("callbridge ready: the agent is chosen per call by %s",
                     getattr(agent, "__qualname__", repr(agent)))
        _drain.serving().append(self)  # hypercorn's shutdown drains it

    async def _close(self) -> None:
        if self._metrics_bind is not None:
            self._metrics_bind()
            self._metrics_bind = None
        serving = _drain.serving()
        if self in serving:
            serving.remove(self)
        if self.twilio_rest is not None:
            await self.twilio_rest.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "websocket" and scope["path"] == MEDIA_PATH:
            await self._media_stream(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)  # type: ignore[arg-type]

    async def _media_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The media stream through ASGI (`hypercorn ... callbridge.app:app`; `callbridge
        serve` answers it in `callbridge._frontdoor` instead)."""
        if (await receive())["type"] != "websocket.connect":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refuse_stream(scope.get("query_string", b"").decode("latin-1"), headers)
        if refusal == 403:
            await send({"type": "websocket.close", "code": 1008})  # before accept: 403
        elif refusal is not None:
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": refusal, "reason": "try again later"})
        else:
            async def accept() -> MessageSocket:
                await send({"type": "websocket.accept"})
                return AsgiSocket(receive, send, max_message_size=MAX_TWILIO_MESSAGE)

            await self.run_stream(accept, headers)

    def refuse_stream(self, query: str, headers: Mapping[str, str]) -> int | None:
        """Whether to let a media stream in: None (yes), 403 (refuse the upgrade: not
        signed by Twilio), or 1013 (accept it, then close it with 1013 at once: the
        service is busy or draining; Twilio then runs what follows `</Connect>`, where
        a refused upgrade would be a handshake error, 31920). `headers` have lower-case
        names. Logs why. A stream let in counts against the limit from here on: call
        `run_stream` next, with no checkpoint between."""
        guard = self.guard
        if guard is not None:
            url = self.stream_url(headers) + (f"?{query}" if query else "")
            header = headers.get(signature.HEADER.lower())
            if not guard.upgrade_ok(url, header):
                log.warning("refused a media stream: %s X-Twilio-Signature for %s",
                            "missing" if header is None else "wrong", url)
                return 403
        busy = self._busy()
        if busy is not None:
            log.warning("refused a media stream: %s (closed 1013 before any model session)",
                        busy)
            return 1013
        self._admitting += 1  # counted from here: `_busy` sees it at once
        return None

    async def run_stream(self, accept: Callable[[], Awaitable[MessageSocket]],
                         headers: Mapping[str, str]) -> None:
        """Accept a media stream that `refuse_stream` let in (`accept()` answers the
        upgrade and returns the socket) and run its call to the end; `headers` are the
        upgrade request's, with lower-case names."""
        assert self.call_agent is not None
        assert self.call_backend is not None
        guard = self.guard
        admitted = False
        try:
            socket = await accept()
            watch = self.watch.call()
            call = Call(socket, agent=self.call_agent, backend=self.call_backend,
                        limits=self.call_limits, on_event=watch.on_event,
                        authorize=guard.authorize if guard else None,
                        twilio=self.twilio_rest, service_url=self.public_base(headers))
            try:
                async with trio.open_nursery() as nursery:
                    watch.attach(call, nursery)
                    await nursery.start(call._run)
                    self._admitting -= 1
                    admitted = True
                    self.calls.add(call)
                    self._changed()
            except Exception:
                log.exception("call failed")
                watch.failed()
                await socket.aclose(1011)
            else:
                result = call.result
                assert result is not None
                try:
                    await watch.finish(result)
                except Exception:  # a bug of ours: the call itself went well
                    log.exception("call %s: keeping its record failed", result.call_sid)
            finally:
                self.calls.discard(call)
        finally:
            if not admitted:
                self._admitting -= 1
            self._changed()

    def _changed(self) -> None:
        """The live calls changed: wake whoever waits on them (a drain)."""
        self._calls_changed.set()
        self._calls_changed = trio.Event()

    def _live(self) -> int:
        """The calls live on this worker, and those being let in."""
        return len(self.calls) + self._admitting

    def _busy(self) -> str | None:
        """Why a new call is turned away now, or None: it is welcome."""
        if self._draining:
            return "the service is draining"
        limit = self.settings.max_calls if self.settings is not None else None
        if limit is not None and self._live() >= limit:
            return f"live calls: {self._live()} (CALLBRIDGE_MAX_CALLS={limit})"
        return None

    @property
    def active_calls(self) -> int:
        """How many calls this worker is running."""
        return len(self.calls)

    @property
    def draining(self) -> bool:
        """The service is shutting down: new calls are turned away (see `drain`)."""
        return self._draining

    async def _health(self) -> dict[str, Any]:
        health: dict[str, Any] = {"status": "ok", "active_calls": self.active_calls}
        if self._draining:
            health["draining"] = True
        return health

    async def _ready(self) -> tuple[dict[str, Any], int]:
        """Whether a load balancer should send new calls here: not while draining."""
        if self._draining:
            return {"ready": False, "draining": True}, 503
        return {"ready": True}, 200

    async def _metrics(self) -> Response:
        """Prometheus metrics, to those bearing `CALLBRIDGE_METRICS_TOKEN` (see
        `callbridge._metrics.metrics_status`)."""
        from ._metrics import exposition, metrics_status

        settings = self.settings or Settings()
        status = metrics_status(request.headers.get("Authorization"), settings.metrics_token,
                                bind=settings.metrics_bind is not None)
        if status == 401:
            return Response("a bearer token is needed\n", 401, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="callbridge metrics"'})
        if status != 200:
            return Response("not found\n", status, content_type="text/plain")
        body, content_type = await trio.to_thread.run_sync(exposition)
        return Response(body, 200, content_type=content_type)

    def ask_to_drain(self, why: str) -> None:
        """Have `drain` run where the server runs it (`callbridge._drain`): what
        SIGTERM does to a hypercorn worker. Returns at once."""
        if not self.drain_asked.is_set():
            self.drain_why = why
            self.drain_asked.set()
        elif why == "SIGTERM":
            log.info("SIGTERM again: %s", "the worker is exiting" if self._drained.is_set()
                     else "the drain goes on")

    async def drain(self, why: str = "asked to") -> None:
        """Shut down gently: turn new calls away (busy TwiML at the webhook, streams
        closed with 1013, `GET /ready` 503), let the live calls go on for
        `Settings.drain_s`, then have the agent say `Settings.drain_line` to each one
        still live, in full, and hang up (`Call.hang_up`); wait at most
        `GOODBYE_WAIT_S` for those calls to be over, and end any left at once. Each
        step is logged. Returns once no call is live; the service goes on turning
        calls away. A second caller waits for the first drain to be over.

        Under hypercorn, SIGTERM runs this before hypercorn's own shutdown begins
        (docs/drain.md); an application serving the app itself may call it."""
        if self._draining:
            await self._drained.wait()
            return
        self._draining = True
        self.drain_asked.set()
        try:
            await self._drain_calls(why)
        finally:
            self._drained.set()

    async def _drain_calls(self, why: str) -> None:
        settings = self.settings or Settings()
        began = trio.current_time()
        log.info("draining (%s): live calls: %d; new calls are turned away, GET /ready "
                 "answers 503; the live calls may go on for %g s", why, self._live(),
                 settings.drain_s)
        with trio.move_on_after(settings.drain_s):
            await self._until_no_call()
        if self._live():
            log.info("drain: %g s passed, live calls left: %d; the agent says goodbye to "
                     "each, then it hangs up", settings.drain_s, self._live())
            told: set[Call] = set()
            with trio.move_on_after(GOODBYE_WAIT_S):
                while self._live():
                    for call in self.calls:
                        if call not in told:
                            told.add(call)
                            log.info("call %s: the drain ends it with its goodbye",
                                     call.call_sid)
                            call.hang_up(say=settings.drain_line)
                    await self._calls_changed.wait()
        if self._live():
            log.warning("drain: %g s after their goodbye, live calls left: %d; ending them "
                        "now", GOODBYE_WAIT_S, self._live())
            for call in self.calls:
                call.end("the service is shutting down")
            with trio.move_on_after(END_WAIT_S):
                await self._until_no_call()
        if self._live():
            log.error("drain: %g s later, calls still open: %d; the server cuts them",
                      END_WAIT_S, self._live())
        else:
            log.info("drained in %.1f s: no call is live", trio.current_time() - began)

    async def _until_no_call(self) -> None:
        while self._live():
            await self._calls_changed.wait()

    def public_base(self, headers: Mapping[str, str], scheme: str = "https") -> str:
        """`scheme://host[/prefix]` as Twilio addresses this service: the configured
        public URL, else the request's `Host` (and, only when a proxy is trusted, its
        `X-Forwarded-Proto` and `-Host`). `headers` have lower-case names."""
        settings = self.settings
        if settings is not None and settings.public_url:
            return settings.public_url
        host = headers.get("host", "localhost")
        if settings is not None and settings.trust_proxy:
            host = _first(headers.get("x-forwarded-host")) or host
            scheme = _first(headers.get("x-forwarded-proto")) or scheme
        return f"{scheme}://{host}"

    def stream_url(self, headers: Mapping[str, str]) -> str:
        """`wss://host[/prefix]/media-stream`, the URL the TwiML sends Twilio to."""
        parts = urlsplit(self.public_base(headers))
        return f"wss://{parts.netloc}{parts.path}{MEDIA_PATH}"

    async def _signed_form(self) -> tuple[Mapping[str, str], Response | None]:
        """The webhook's fields, and the 403 to answer instead when it is not signed
        by Twilio (only checked when `TWILIO_AUTH_TOKEN` is set)."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        form = await request.form if request.method == "POST" else request.args
        guard = self.guard
        if guard is not None:
            url = self.public_base(headers, request.scheme) + request.path
            if request.query_string:
                url += "?" + request.query_string.decode("latin-1")
            header = request.headers.get(signature.HEADER)
            if "bodySHA256" in request.args:
                raw = await request.get_data(as_text=False)
                data = raw.encode() if isinstance(raw, str) else raw
                ok = guard.webhook_ok(url, header, body=data)
            else:
                params = form.to_dict(flat=False) if request.method == "POST" else None
                ok = guard.webhook_ok(url, header, form=params)
            if not ok:
                log.warning("refused a webhook: %s X-Twilio-Signature for %s",
                            "missing" if header is None else "wrong", url)
                return {}, Response("invalid Twilio signature\n", 403,
                                    content_type="text/plain")
        return form.to_dict(), None

    async def _incoming_call(self) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        form, refused = await self._signed_form()
        if refused is not None:
            return refused
        assert self.settings is not None
        busy = self._busy()
        if busy is not None:
            log.warning("turned away call %s at the webhook: %s", form.get("CallSid", "?"), busy)
            return Response(twiml.say_and_hang_up(self.settings.busy_line),
                            content_type="text/xml")
        guard = self.guard
        parameters = {name: form[key] for key, name in
                      [("From", "from"), ("To", "to"), ("CallSid", "call_sid")] if form.get(key)}
        parameters |= {key: form[key] for key in self.settings.stream_parameters
                       if form.get(key)}
        if request.args.get("agent"):  # an outbound call's agent (`place_call`)
            parameters["agent"] = request.args["agent"]
        if self.stream_parameters is not None:
            more = self.stream_parameters(form)
            if inspect.isawaitable(more):
                more = await more
            parameters |= {str(k): str(v) for k, v in more.items()}
        if guard is not None:  # last: nothing may stand in for it
            parameters[streamtoken.PARAMETER] = guard.stream_token(form.get("CallSid", ""))
        body = twiml.connect_stream(self.stream_url(headers), parameters=parameters,
                                    name="callbridge")
        return Response(body, content_type="text/xml")


    async def _dial_action(self) -> Response:
        """Twilio asks what next once a transferred call's dialled leg ended: if nobody
        answered, the caller hears the transfer's failure line, then the call ends."""
        form, refused = await self._signed_form()
        if refused is not None:
            return refused
        status = form.get("DialCallStatus", "")
        line = request.args.get("line") if status not in ("completed", "answered") else None
        log.info("call %s: the transfer ended %s", form.get("CallSid"), status or "?")
        return Response(twiml.say_and_hang_up(line), content_type="text/xml")

    async def _amd_status(self) -> Response:
        """Twilio's answering-machine detection result for an outbound call."""
        form, refused = await self._signed_form()
        if refused is not None:
            return refused
        call_sid, answered_by = form.get("CallSid", ""), form.get("AnsweredBy", "unknown")
        call = self.calls.by_call_sid(call_sid)
        if call is None:  # over, or its stream is served by another worker
            log.info("call %s answered by %s: not a call of this worker", call_sid, answered_by)
            return Response("", 204)
        call.answered(answered_by)
        return Response(f"{answered_by}: told the live call\n", 200, content_type="text/plain")

    async def _call_status(self) -> Response:
        """Twilio's status callbacks for calls placed through `place_call`."""
        form, refused = await self._signed_form()
        if refused is not None:
            return refused
        call_sid = form.get("CallSid", "")
        log.info("call %s: %s", call_sid, form.get("CallStatus"))
        watcher = self.status_watchers.get(call_sid)
        if watcher is not None:
            watcher(form)
        return Response("", 204)


async def _agent_by_name(named: Mapping[str, Agent | AgentFactory],
                         default: Agent | AgentFactory, context: CallContext) -> Agent:
    """The agent a call asks for by name (an outbound call's `agent` parameter), if
    `CALLBRIDGE_AGENTS` lists it; the service's own agent otherwise."""
    name = context.parameters.get("agent")
    agent = named.get(name, default) if name else default
    if name and name not in named:
        log.warning("call %s asks for agent %r, which CALLBRIDGE_AGENTS does not list: "
                    "the default agent answers", context.call_sid, name)
    if isinstance(agent, Agent):
        return agent
    chosen = agent(context)
    return await chosen if inspect.isawaitable(chosen) else chosen


def _first(value: str | None) -> str:
    """The first of a comma-separated proxy header: the hop nearest the client."""
    return (value or "").split(",")[0].strip()


def create_app(
    settings: Settings | None = None,
    *,
    agent: Agent | AgentFactory | None = None,
    backend: RealtimeBackend | None = None,
    limits: CallLimits | None = None,
    stream_parameters: ParameterHook | None = None,
    twilio_rest: TwilioRest | None = None,
    front_door: bool = False,
) -> CallbridgeApp:
    return CallbridgeApp(settings, agent=agent, backend=backend, limits=limits,
                         stream_parameters=stream_parameters, twilio_rest=twilio_rest,
                         front_door=front_door)


#: `hypercorn --worker-class trio callbridge.app:app`
app = create_app()
