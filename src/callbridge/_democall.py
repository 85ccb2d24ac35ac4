"""How `callbridge demo` places its call, and what the service kept of it.

Two ways, one scenario (`callbridge._demo`):

* over loopback, as `callbridge serve` runs: callbridge's front door in hypercorn's
  trio worker in this process, the model on a real WebSocket (the local realtime
  model's, or the local VAPI's call socket, dialled at the URL its REST API gave);
  the app keeps the call as the service does (`callbridge._watch`): its record in
  `Settings.db`, its recording in `Settings.record_dir`, its metrics, read back from
  `/metrics` with the demo's own bearer token once the call is over;
* in memory on virtual time (`MockClock`), with no sockets: `run_call`'s `Call` with
  the same `CallWatch`, for the tests.

Either way the call goes through the local Twilio (`LocalTwilio`: the agent's
hang-up is a REST request), and the result is a `Placed`: where the call ran, how it
ended, and the `CallRecord` the service made of it. The local platforms' records
carry no time: `Clocked` notes when each REST request reached the local Twilio and
each control message of VAPI's reached callbridge.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import attrs
import trio

from ._sockets import memory_socket_pair
from ._watch import Watch, run_watched
from .agent import Agent
from .config import Settings
from .local import LocalRealtimeServer, LocalVapi
from .pcm import PlatformSocket
from .records import CallRecord
from .testing import LocalTwilio, TwilioCaller
from .twilio_rest import TwilioCredentials, TwilioRest
from .vapi import Opener, open_platform_socket

__all__ = ["Clocked", "Placed", "kept", "place_call"]

#: the model's side of a demo call: the local model itself (OpenAI mode), or VAPI
Model = LocalRealtimeServer | LocalVapi


@attrs.frozen(kw_only=True)
class Placed:
    """One demo call, placed: where it ran and what was kept of it."""

    how: str
    #: how the call ended (`CallResult.reason`)
    reason: str | None
    record: CallRecord | None
    #: the `/metrics` lines about calls, once the call was over ("" in memory)
    metrics: str = ""


@attrs.define
class Clocked:
    """When the local platforms' records were made (trio time)."""

    #: the REST requests the local Twilio got, as they arrived
    requests: list[float] = attrs.field(factory=list)
    #: the JSON messages callbridge got from the voice platform (VAPI's controls)
    controls: list[tuple[float, dict[str, Any]]] = attrs.field(factory=list)

    async def watch(self, twilio: LocalTwilio) -> None:
        """Note when each REST request reaches `twilio`."""
        while True:  # `wait_for` wakes us the moment a record changes
            await twilio.wait_for(lambda: len(twilio.requests) > len(self.requests))
            self.requests.extend([trio.current_time()]
                                 * (len(twilio.requests) - len(self.requests)))

    def tap(self, vapi: LocalVapi, opener: Opener) -> None:
        """Have `vapi`'s backend open its call sockets with `opener`, tapped."""
        vapi.backend = attrs.evolve(vapi.backend, open_socket=partial(self._open, opener))

    @asynccontextmanager
    async def _open(self, opener: Opener, url: str) -> AsyncIterator[PlatformSocket]:
        async with opener(url) as socket:
            yield _Tapped(socket, self.controls)


async def place_call(caller: TwilioCaller, agent: Agent, model: Model, twilio: LocalTwilio,
                     clocked: Clocked, *, loopback: bool, settings: Settings,
                     watch: Watch) -> Placed:
    """Play the call through `twilio` (entered here), over loopback or in memory."""
    async with twilio, trio.open_nursery() as platform:
        platform.start_soon(clocked.watch, twilio)
        where = ({"base_url": await platform.start(twilio.serve)} if loopback
                 else {"transport": twilio.transport})
        sid, token = twilio.account_sid, twilio.auth_token
        credentials = TwilioCredentials(account_sid=sid, username=sid, password=token)
        twilio.attach(caller)  # an inbound call of the platform's: REST ends it by CallSid
        async with TwilioRest(credentials, **where) as rest:  # (the service closes it too)
            if loopback:
                placed = await _over_loopback(caller, agent, model, rest, settings, clocked)
            else:
                async with trio.open_nursery() as keeper:
                    await watch.start(keeper)
                    placed = await _in_memory(caller, agent, model, rest, watch, clocked)
                    if watch.writer is not None:
                        await watch.writer.settled()
                    keeper.cancel_scope.cancel()
        platform.cancel_scope.cancel()
    return placed


class _Tapped:
    """A platform socket whose text frames are noted as they are received."""

    def __init__(self, socket: PlatformSocket, got: list[tuple[float, dict[str, Any]]]) -> None:
        self._socket, self._got = socket, got

    async def send(self, message: str | bytes) -> None:
        await self._socket.send(message)

    async def receive(self) -> str | bytes | None:
        message = await self._socket.receive()
        if isinstance(message, str):
            self._got.append((trio.current_time(), json.loads(message)))
        return message

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._socket.aclose(code, reason)

    def __getattr__(self, name: str) -> Any:  # `ping`, `last_heard`: as the socket has them
        return getattr(self._socket, name)


async def _in_memory(caller: TwilioCaller, agent: Agent, model: Model, rest: TwilioRest,
                     watch: Watch, clocked: Clocked) -> Placed:
    if isinstance(model, LocalVapi):
        clocked.tap(model, model.platform.open)
        how = ("run_call <-> the local VAPI (its REST API and call socket in memory, PCM "
               "16 kHz) <-> the local model")
    else:
        how = "run_call <-> local model"
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        record = await run_watched(watch, bridge_end, agent=agent, backend=model, twilio=rest)
    return Placed(how=f"in memory on virtual time: {how}, the local Twilio's REST API in "
                  "memory, no sockets", reason=record.end_reason, record=record)


@contextmanager
def _quiet_servers() -> Iterator[None]:
    """Without the warning that the service runs without TWILIO_AUTH_TOKEN (it listens on
    127.0.0.1 for the demo's caller) and the local Twilio's "Running on": noise here."""
    from .app import UNGUARDED_NOTICE

    quiet = [(logging.getLogger("callbridge.app"), lambda r: r.msg is not UNGUARDED_NOTICE),
             (logging.getLogger("hypercorn.error"), lambda r: "Running on" not in str(r.msg))]
    for log, keep in quiet:
        log.addFilter(keep)
    try:
        yield
    finally:
        for log, keep in quiet:
            log.removeFilter(keep)


async def _over_loopback(caller: TwilioCaller, agent: Agent, model: Model, rest: TwilioRest,
                         settings: Settings, clocked: Clocked) -> Placed:
    """`model` is served on a loopback WebSocket; `settings` say what to keep."""
    import httpx
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from .app import create_app
    from .testing import dial_twilio_stream, serve_realtime_websocket

    token = secrets.token_urlsafe(16)
    with _quiet_servers():
        async with trio.open_nursery() as nursery:
            if isinstance(model, LocalVapi):
                # the platform's call socket on loopback, at the URL its REST API gives
                port = await nursery.start(partial(
                    serve_realtime_websocket, model.platform))  # type: ignore[arg-type]
                model.rest.websocket_url = (
                    lambda call_id, _: f"ws://127.0.0.1:{port}/v1/realtime?call={call_id}")
                clocked.tap(model, open_platform_socket)
                settings = attrs.evolve(settings, backend="vapi", metrics_token=token,
                                        vapi_api_key=LocalVapi.API_KEY,
                                        vapi_assistant_id=LocalVapi.ASSISTANT_ID)
                backend, local = model, model.model
                where = (f"the local VAPI (its REST API in memory, its call socket at "
                         f"ws://127.0.0.1:{port}/v1/realtime, PCM 16 kHz) <-> the local model")
            else:
                port = await nursery.start(partial(serve_realtime_websocket, model))
                settings = attrs.evolve(settings, openai_api_key="sk-local-demo-not-a-key",
                                        openai_base_url=f"http://127.0.0.1:{port}/v1",
                                        metrics_token=token)
                backend, local = None, model
                where = f"local model at ws://127.0.0.1:{port}/v1/realtime"
            config = Config.from_mapping(bind=["127.0.0.1:0"], accesslog=None, errorlog=None)
            app = create_app(settings, agent=agent, backend=backend, twilio_rest=rest,
                             front_door=True)
            binds: list[str] = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
            host = binds[0].removeprefix("http://")
            await dial_twilio_stream(caller, f"ws://{host}/media-stream")
            with trio.move_on_after(5):  # the model session ends right after the call
                await local.wait_for_sessions(
                    lambda sessions: bool(sessions) and sessions[0].closed)
            with trio.move_on_after(5):
                await app.watch.wait_finished(1)
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://{host}/metrics",
                                          headers={"Authorization": f"Bearer {token}"})
            nursery.cancel_scope.cancel()
    record = app.watch.last
    return Placed(how=f"callbridge (`callbridge serve`: its front door in hypercorn's trio "
                  f"worker) at http://{host}, {where}, "
                  f"local Twilio's REST API at {rest.base_url}",
                  reason=record.end_reason if record is not None else None, record=record,
                  metrics=_call_lines(answer.text))


def _call_lines(exposition: str) -> str:
    """The `/metrics` samples that say something about calls (no buckets, no zeros)."""
    keep = []
    for line in exposition.splitlines():
        sample, _, value = line.rpartition(" ")
        name = sample.partition("{")[0]
        if (name.startswith("callbridge_") and not name.endswith(("_bucket", "_created"))
                and value not in ("0.0", "0")):
            keep.append(line)
    return "\n".join(keep)


def kept(placed: Placed, settings: Settings) -> str:
    """What the service kept of the call, and how to look at it."""
    record = placed.record
    if record is None:
        return "\nThe service kept no record of the call."
    lines = ["", f"The service kept call {record.call_sid}:"]
    if settings.db is not None:
        lines.append(f"  its record in {settings.db}: `callbridge calls show {record.call_sid}` "
                     "prints it, `--html call.html` writes its viewer page")
    if record.recording is not None:
        lines.append(f"  its recording (caller left, agent right): {record.recording}")
    if placed.metrics:
        lines += ["  its metrics, from /metrics:", *(f"    {m}" for m in
                                                     placed.metrics.splitlines())]
    return "\n".join(lines)
