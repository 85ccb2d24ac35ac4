"""How `callbridge demo` places its call, and what the service kept of it.

Two ways, one scenario (`callbridge._demo`):

* over loopback, as `callbridge serve` runs: callbridge's front door in hypercorn's
  trio worker in this process, the local model on a real WebSocket; the app keeps the
  call as the service does (`callbridge._watch`): its record in `Settings.db`, its
  recording in `Settings.record_dir`, its metrics, read back from `/metrics` with the
  demo's own bearer token once the call is over;
* in memory on virtual time (`MockClock`), with no sockets: `run_call`'s `Call` with
  the same `CallWatch`, for the tests.

Either way the result is a `Placed`: where the call ran, how it ended, and the
`CallRecord` the service made of it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import attrs
import trio

from ._sockets import memory_socket_pair
from ._watch import Watch, run_watched
from .agent import Agent
from .backend import RealtimeBackend
from .config import Settings
from .records import CallRecord
from .testing import TwilioCaller
from .twilio_rest import TwilioRest

__all__ = ["Placed", "call_in_memory", "call_over_loopback"]


@attrs.frozen(kw_only=True)
class Placed:
    """One demo call, placed: where it ran and what was kept of it."""

    how: str
    #: how the call ended (`CallResult.reason`)
    reason: str | None
    record: CallRecord | None
    #: the `/metrics` lines about calls, once the call was over ("" in memory)
    metrics: str = ""


async def call_in_memory(caller: TwilioCaller, agent: Agent, model: RealtimeBackend,
                         rest: TwilioRest, watch: Watch) -> Placed:
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        record = await run_watched(watch, bridge_end, agent=agent, backend=model, twilio=rest)
    return Placed(how="in memory on virtual time: run_call <-> local model, the local "
                  "Twilio's REST API in memory, no sockets", reason=record.end_reason,
                  record=record)


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


async def call_over_loopback(caller: TwilioCaller, agent: Agent, model: RealtimeBackend,
                             rest: TwilioRest, settings: Settings) -> Placed:
    """`model` is served on a loopback WebSocket; `settings` say what to keep."""
    import httpx
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from .app import create_app
    from .local import LocalRealtimeServer
    from .testing import dial_twilio_stream, serve_realtime_websocket

    assert isinstance(model, LocalRealtimeServer)
    token = secrets.token_urlsafe(16)
    with _quiet_servers():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_realtime_websocket, model))
            settings = attrs.evolve(settings, openai_api_key="sk-local-demo-not-a-key",
                                    openai_base_url=f"http://127.0.0.1:{port}/v1",
                                    metrics_token=token)
            config = Config.from_mapping(bind=["127.0.0.1:0"], accesslog=None, errorlog=None)
            app = create_app(settings, agent=agent, twilio_rest=rest, front_door=True)
            binds: list[str] = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
            host = binds[0].removeprefix("http://")
            await dial_twilio_stream(caller, f"ws://{host}/media-stream")
            with trio.move_on_after(5):  # the model session ends right after the call
                await model.wait_for_sessions(
                    lambda sessions: bool(sessions) and sessions[0].closed)
            with trio.move_on_after(5):
                await app.watch.wait_finished(1)
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://{host}/metrics",
                                          headers={"Authorization": f"Bearer {token}"})
            nursery.cancel_scope.cancel()
    record = app.watch.last
    return Placed(how=f"callbridge (`callbridge serve`: its front door in hypercorn's trio "
                  f"worker) at http://{host}, local model at ws://127.0.0.1:{port}/v1/realtime, "
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
