"""Draining under hypercorn: its shutdown waits for callbridge's drain, and SIGTERM in a
worker process starts the drain instead of killing the worker.

What hypercorn 0.18.0's trio worker does on its own (`hypercorn/trio/run.py`,
`worker_serve`, and `hypercorn/run.py`, `run`):

* The main process handles SIGTERM and SIGINT by setting a shutdown event that its
  worker processes poll every 0.1 s (`check_multiprocess_shutdown_event`). In a
  worker, a task per shutdown trigger runs `raise_shutdown(trigger)`: await the
  trigger, raise `ShutdownError`. That cancels the accept loop: the listening socket
  stays open (the main process holds it), so new connections wait in its backlog,
  unanswered. Then the open connections get `graceful_timeout` (3 s by default) and
  are cancelled, mid-frame and with no close frame; the app's lifespan shutdown
  (quart's `after_serving`) runs only after that, too late to do anything gently.
* As soon as one worker exits, the main process sends SIGTERM to the others
  (`process.terminate()`), whose default action kills them at once, calls and all.

So the drain runs inside `raise_shutdown`, between the trigger and the error: until
it is over the worker still accepts connections, answers `GET /ready` with 503 and
turns new calls away, and the live calls end in order (`CallbridgeApp.drain`). The
name is looked up in `hypercorn.trio.run` when the worker starts serving, after the
app's startup, which is where `hook_hypercorn_shutdown` replaces it. With no
callbridge app serving in the trio run, the task is hypercorn's own.

In a worker process of hypercorn's (its trigger is the main process's event) SIGTERM
asks for the drain too: it then comes either from the main process, once another
worker exited (a drain is under way: nothing changes), or from whoever signalled
this worker alone or the whole process group (systemd's default): the drain starts.
A worker drained on its own exits, and hypercorn's main process starts another.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

__all__ = ["Drains", "hook_hypercorn_shutdown", "serving"]

log = logging.getLogger("callbridge.app")

_MARK = "_callbridge_drains"


class Drains(Protocol):
    """What the shutdown hook needs of an app (`callbridge.app.CallbridgeApp`)."""

    drain_asked: trio.Event
    drain_why: str

    def ask_to_drain(self, why: str) -> None: ...

    async def drain(self, why: str = ...) -> None: ...


#: the apps serving in this trio run (they add themselves when they start serving)
_SERVING: trio.lowlevel.RunVar[list[Drains]] = trio.lowlevel.RunVar("callbridge_serving")
#: hypercorn's shutdown was let go on in this trio run (it runs a task per trigger)
_RELEASED: trio.lowlevel.RunVar[bool] = trio.lowlevel.RunVar("callbridge_released", False)


def serving() -> list[Drains]:
    """The apps serving in this trio run: hypercorn's shutdown drains them."""
    try:
        return _SERVING.get()
    except LookupError:
        apps: list[Drains] = []
        _SERVING.set(apps)
        return apps


def hook_hypercorn_shutdown() -> bool:
    """Replace `hypercorn.trio.run.raise_shutdown` with one that drains the apps
    serving first (see the module docstring); idempotent. False when hypercorn's
    trio worker is not importable."""
    try:
        from hypercorn.trio import run as hypercorn_run
        from hypercorn.utils import ShutdownError, check_multiprocess_shutdown_event
    except ImportError:
        return False
    original = hypercorn_run.raise_shutdown  # type: ignore[attr-defined]
    if getattr(original, _MARK, False):
        return True

    async def raise_shutdown(shutdown_event: Callable[..., Awaitable[object]]) -> None:
        trigger, apps = shutdown_event, list(serving())
        if not apps:
            await original(trigger)
            return
        worker = (isinstance(trigger, functools.partial)
                  and trigger.func is check_multiprocess_shutdown_event)
        if worker:
            _drain_on_sigterm(apps)
        why = ("the main process is shutting down (SIGTERM or SIGINT)" if worker
               else "the server's shutdown trigger")
        await _asked(trigger, apps, why)
        try:
            async with trio.open_nursery() as nursery:
                for app in apps:
                    nursery.start_soon(app.drain, app.drain_why or why)
        except Exception:  # a bug of ours must not keep the worker from shutting down
            log.exception("the drain failed")
        if not _RELEASED.get():
            _RELEASED.set(True)
            log.info("drained: hypercorn's own shutdown begins")
        raise ShutdownError

    setattr(raise_shutdown, _MARK, True)
    raise_shutdown.__wrapped__ = original  # type: ignore[attr-defined]
    hypercorn_run.raise_shutdown = raise_shutdown  # type: ignore[attr-defined]
    return True


async def _asked(trigger: Callable[..., Awaitable[object]], apps: list[Drains],
                 why: str) -> None:
    """Return once `trigger` fired (the apps are then asked to drain) or an app was
    asked to drain otherwise (SIGTERM to this worker)."""
    async with trio.open_nursery() as nursery:
        async def triggered() -> None:
            await trigger()
            for app in apps:
                app.ask_to_drain(why)

        async def asked(app: Drains) -> None:
            await app.drain_asked.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(triggered)
        for app in apps:
            nursery.start_soon(asked, app)


def _drain_on_sigterm(apps: list[Drains]) -> None:
    """From now on, SIGTERM asks `apps` to drain. For as long as the process lives:
    it is a hypercorn worker, which ends with its trio run."""
    token = trio.lowlevel.current_trio_token()

    def ask() -> None:
        for app in apps:
            app.ask_to_drain("SIGTERM")

    def on_sigterm(signum: int, frame: object) -> None:
        try:
            token.run_sync_soon(ask)  # safe in a signal handler
        except trio.RunFinishedError:
            pass  # the worker is exiting anyway

    signal.signal(signal.SIGTERM, on_sigterm)
