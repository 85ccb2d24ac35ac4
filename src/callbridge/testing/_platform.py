"""A local Twilio platform: the REST API, the callbacks and the Media Streams, wired to
the synthetic caller, for the tests, the demo and users' own tests.

    async with LocalTwilio(webhook_transport=..., connect_stream=...) as twilio:
        rest = httpx.AsyncClient(transport=twilio.transport)  # or over HTTP:
        base_url = await nursery.start(twilio.serve)
        ...
        await twilio.wait_for(lambda: twilio.transfers)

What it does, as Twilio does it (details in `_platform_rest`, `_platform_calls`,
`_platform_twiml` and `_platform_peers`):

* REST `POST .../Calls/{CallSid}.json`: `Status=completed` ends the call; its
  stream's caller sends `stop`, then closes (`TwilioCaller.hang_up`). `Twiml=` or
  `Url=` (fetched, signed) replaces the running document: the stream ends the same
  way, and the new TwiML runs; a `<Dial>` in it is a transfer (`transfers`), whose
  outcome is `dial_outcome`, after which its `action` URL is requested (signed)
  with `DialCallStatus` and the returned TwiML runs. A call no longer live: 21220.
* REST `POST .../Calls.json` places a call: `queued`, then in the background
  `ringing` (`ring_s`), answered by `answer(OutboundCall)`: a `TwilioCaller` to play
  the callee, or "busy"/"no-answer"/"failed". Then the TwiML (inline `Twiml`, or the
  `Url` webhook, POSTed signed with the call's fields) runs: `<Connect><Stream>`
  opens the Media Stream to its `url` with the `<Parameter>`s as
  `start.customParameters` and `X-Twilio-Signature` on the upgrade; when the server
  closes it the next verb runs, when the callee hangs up the call is over. Status
  callbacks go to `StatusCallback` for the `StatusCallbackEvent`s asked (default
  `completed`), signed, numbered (`SequenceNumber`); with `MachineDetection` and
  `AsyncAmd=true`, the verdict goes to `AsyncAmdStatusCallback` a while after the
  stream opens: the callee's (`answering_machine()` ends its greeting with a beep:
  `machine_end_beep` with `DetectMessageEnd`, else `machine_start`; a caller who
  says a short hello is `human`, a silent one `unknown`, after Twilio's default
  thresholds), or whatever the `answer` function set on `OutboundCall.answered_by`.
* `attach(caller)`: an inbound call already running elsewhere (`simulate_call`, a
  socket): REST updates for `caller.call_sid` act on it.

In memory or on sockets: the platform's own HTTP requests (webhooks, callbacks) go
through an `httpx.AsyncClient` on `webhook_transport` (default: the network), and
its streams through `connect_stream(url, caller, headers)` (default `dial_stream`:
a real WebSocket; a `wss://` URL on a loopback host is dialled as `ws://`, no TLS
locally, while the signature covers the `wss://` URL as Twilio's does). In memory,
on `MockClock`, give `webhook_transport=httpx.ASGITransport(app=service)` (it runs
under trio; start the app's lifespan with `async with service.test_app():`) or an
`httpx.MockTransport`, and `connect_stream=asgi_stream(service)` (the service's
WebSocket endpoint over ASGI messages) or `memory_stream(serve)` (e.g. `run_call`
on an in-memory socket). The REST API itself is `transport` in memory and
`serve()` on loopback. Real sockets need the real clock.

`requests`, `calls`, `hangups`, `transfers` and `callbacks` record what happened;
`wait_for(predicate)` waits until a record says what a test waits for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

import httpx
import trio

from ._platform_calls import Callback, CallRun, Fetch, Inline, Source, Transfer, new_sid
from ._platform_peers import (
    AnsweringMachine,
    OutboundCall,
    StreamConnector,
    answering_machine,
    asgi_stream,
    dial_stream,
    memory_stream,
)
from ._platform_rest import (
    CallUpdate,
    NewCall,
    PlatformCall,
    RestAsgiApp,
    RestRequest,
    RestResponse,
    RestTransport,
    handle,
)
from ._platform_twiml import parse_twiml
from ._twilio import TwilioCaller

__all__ = ["AnsweringMachine", "Callback", "LocalTwilio", "OutboundCall", "Transfer",
           "answering_machine", "asgi_stream", "dial_stream", "memory_stream"]

DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "local-twilio-token"

CallOutcome: TypeAlias = Literal["busy", "no-answer", "failed"]
DialOutcome: TypeAlias = Literal["completed", "busy", "no-answer", "failed"]


class LocalTwilio:
    """A fake Twilio platform (see the module docstring). Use `async with`.

    `api_keys` (SID -> secret) may use the REST API besides the account and its
    token; `answer` plays the far end of each placed call (default: a silent
    `TwilioCaller` that hangs up after 10 s), or says "busy", "no-answer" or
    "failed"; `ring_s` is how long a placed call rings; a `<Dial>`'s leg ends with
    `dial_outcome` after `dial_duration_s` (completed), its `timeout` (no-answer) or
    at once.
    """

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        api_keys: Mapping[str, str] | None = None,
        answer: Callable[[OutboundCall], TwilioCaller | CallOutcome] | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        connect_stream: StreamConnector | None = None,
        ring_s: float = 1.0,
        dial_outcome: DialOutcome = "completed",
        dial_duration_s: float = 5.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        #: who may use the REST API: the account with its token, API keys with secrets
        self.credentials = {account_sid: auth_token, **(api_keys or {})}
        self.answer = answer or (lambda call: TwilioCaller())
        self.connect_stream: StreamConnector = connect_stream or dial_stream
        self.ring_s = ring_s
        self.dial_outcome: DialOutcome = dial_outcome
        self.dial_duration_s = dial_duration_s
        #: the REST API in memory: `httpx.AsyncClient(transport=twilio.transport)`
        self.transport: httpx.AsyncBaseTransport = RestTransport(self.handle)
        #: `http://127.0.0.1:PORT` once `serve` runs
        self.base_url: str | None = None
        # records
        self.requests: list[RestRequest] = []
        self.calls: dict[str, PlatformCall] = {}
        self.hangups: list[str] = []
        self.transfers: list[Transfer] = []
        self.callbacks: list[Callback] = []
        self._webhook_transport = webhook_transport
        self._runs: dict[str, CallRun] = {}
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._http: httpx.AsyncClient | None = None
        self._epoch = time.time()
        self._change = trio.Event()

    # --- lifetime --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._epoch = time.time() - trio.current_time()
        stack = AsyncExitStack()
        self._http = await stack.enter_async_context(httpx.AsyncClient(
            transport=self._webhook_transport, timeout=15.0))  # Twilio waits 15 s
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        """Waits for the calls in progress to end (cancel the enclosing scope not to)."""
        assert self._stack is not None
        try:
            return await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            self._nursery = self._stack = None

    async def serve(self, *, host: str = "127.0.0.1", port: int = 0,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the REST API over HTTP on `host:port` (hypercorn) until cancelled;
        `nursery.start` returns its base URL, `http://127.0.0.1:PORT`."""
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = None
        app: Any = RestAsgiApp(self.handle)  # hypercorn's types want its TypedDict events
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, app, config, mode="asgi"))
            self.base_url = str(binds[0])
            task_status.started(self.base_url)

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        """Return once `predicate()` is true, checked whenever a record changes."""
        while not predicate():
            await self._change.wait()

    def _changed(self) -> None:
        self._change.set()
        self._change = trio.Event()

    def _wall(self) -> float:
        """Now, in seconds since the epoch, on trio's clock (virtual on MockClock)."""
        return self._epoch + trio.current_time()

    def _start(self, call: PlatformCall, source: Source | None = None,
               attached: TwilioCaller | None = None) -> None:
        if self._nursery is None or self._http is None:
            raise RuntimeError("LocalTwilio is not running: use `async with LocalTwilio() as ...`")
        self.calls[call.sid] = call
        run = self._runs[call.sid] = CallRun(self, call, self._http, source, attached)
        self._nursery.start_soon(run.drive)
        self._changed()

    # --- the REST side (synchronous: Twilio answers, then acts) ---------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str],
               body: bytes) -> RestResponse:
        """Answer one REST request: what `transport` and `serve` do, and what a
        synchronous adapter (e.g. for the `twilio` SDK's `HttpClient`) can call."""
        response, record = handle(self, method.upper(), path, headers, body)
        self.requests.append(record)
        self._changed()
        return response

    def create_call(self, new: NewCall) -> PlatformCall:
        now = self._wall()
        call = PlatformCall(sid=new_sid("CA"), account_sid=self.account_sid, from_=new.from_,
                            to=new.to, direction="outbound-api", statuses=["queued"],
                            date_created=now, date_updated=now, request=new,
                            status_callback=new.status_callback,
                            status_callback_method=new.status_callback_method)
        self._start(call)
        return call

    def update_call(self, call: PlatformCall, update: CallUpdate) -> None:
        run = self._runs[call.sid]
        if update.status_callback is not None:
            call.status_callback = update.status_callback
        if update.status_callback_method is not None:
            call.status_callback_method = update.status_callback_method
        answered = call.status == "in-progress"
        if update.status == "completed":
            self.hangups.append(call.sid)
            # [UNCONFIRMED] that a call hung up before it was answered reads "canceled"
            run.end("completed" if answered else "canceled")
            run.interrupt(final=call.status)
        elif update.status == "canceled" and not answered:
            run.end("canceled")
            run.interrupt(final="canceled")
        elif update.twiml is not None or update.url is not None:
            source: Source = (Inline(update.twiml) if update.twiml is not None else Fetch(
                url=update.url or "", method=update.method,
                fallback=(update.fallback_url, update.fallback_method)
                if update.fallback_url else None))
            if answered:
                run.interrupt(then=source)
            else:
                run.pending = source  # runs once it is answered
        # Status=canceled on an answered call changes nothing, as Twilio documents

    def attach(self, caller: TwilioCaller, *, from_: str = "+15550100", to: str = "+15550199",
               twiml: str | None = None) -> PlatformCall:
        """Make `caller` (an inbound call running elsewhere) a live call of this
        platform, so REST updates for its `call_sid` act on it. `twiml`, if given,
        is the document it runs: its first `<Connect><Stream>` is this caller, and
        what follows `</Connect>` runs when the server closes the stream."""
        if twiml is not None:
            parse_twiml(twiml)  # raises TwimlError now rather than mid-call
        now = self._wall()
        call = PlatformCall(sid=caller.call_sid, account_sid=self.account_sid, from_=from_,
                            to=to, direction="inbound", statuses=["in-progress"],
                            date_created=now, date_updated=now, start_time=now)
        self._start(call, None if twiml is None else Inline(twiml), caller)
        return call
