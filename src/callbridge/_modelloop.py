"""The model side of a call: its connection's life, from connect to the next one.

A call needs one model connection at a time, for as long as it lasts, and the
conversation must outlive each connection (the state is the bridge's):

* **Connecting** is bounded by `CallLimits.model_connect_budget` per outage: failed
  attempts are retried with backoff (0.25 s doubling, at most 2 s) while the
  caller's audio is kept; once the budget is spent the call ends as
  `model_unavailable`. HTTP 401/403 (a bad key, no access) ends it at once.
* **A connection lost mid-call** is reopened at once if it had lasted
  `HEALTHY_SESSION_S`, else it counts as another failed attempt of the same outage
  (a connection that keeps dropping backs off); the bridge restores the conversation.
* **Rotation**: before the API's session age limit (`session_max_s`) a new session
  is asked for, and the switch waits for a turn boundary (`Call._wake`).
* **Keepalive**: pings every `model_ping_s`; a connection that sent nothing for two
  intervals while we were reading it (not holding back for Twilio) has stalled and
  is dropped (then reopened as above).

`ModelLoop` is a part of `callbridge._call.Call` (a mixin: it shares the call's
bridge, parking lots and limits); the reading and writing of each connection stay
in `Call`.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import TYPE_CHECKING

import trio

from ._sockets import SocketClosed
from .agent import Agent, AgentFactory, CallContext
from .backend import ModelConnectError, RealtimeBackend, RealtimeConnection
from .events import EndReason

if TYPE_CHECKING:
    from ._bridge import Bridge
    from ._calldata import CallLimits

__all__ = ["HEALTHY_SESSION_S", "ModelLoop"]

log = logging.getLogger("callbridge.call")

#: a model connection that lasted this long was healthy: losing it starts a new outage
#: (one that drops sooner counts as a failed attempt of the same outage, with backoff)
HEALTHY_SESSION_S = 5.0


class ModelLoop:
    """The model connection's life, for `Call` (see the module docstring)."""

    limits: CallLimits
    _bridge: Bridge
    _backend: RealtimeBackend
    _choose_agent: AgentFactory | None
    _started: trio.Event
    _model_link: trio.CancelScope | None
    _replacing: bool
    _rotation_due: bool
    _model_parked: bool
    _model_unparked: float
    #: the last connection's voice platform ended the call (`PcmConnection.hung_up`)
    _hung_up_by_platform: bool = False

    if TYPE_CHECKING:  # what `Call` provides
        @property
        def call_sid(self) -> str | None: ...

        def _end(self, reason: EndReason, detail: str = "") -> None: ...

        def _wake(self) -> None: ...

        async def _read_model(self, model: RealtimeConnection) -> None: ...

        async def _write_model(self, model: RealtimeConnection) -> None: ...

    async def _run_model(self) -> None:
        bridge = self._bridge
        if not bridge.may_connect_model:
            # nothing is paid for before `start` is authorized, and what the session
            # needs to know of the call comes with it
            await self._started.wait()
        if bridge.agent is None:
            assert self._choose_agent is not None
            assert bridge.context is not None
            bridge.use_agent(await _chosen(self._choose_agent, bridge.context))
        assert bridge.agent is not None
        assert bridge.may_connect_model
        budget = self.limits.model_connect_budget
        outage: float | None = None  # since when no connection would open
        failures = 0  # attempts of this outage that failed
        why = "first"  # why the next connection opens (`ModelConnected.why`)
        while not bridge.ended:
            self._replacing = False
            began, connections = trio.current_time(), bridge.stats.model_connections
            left = budget if outage is None else budget - (began - outage)
            try:
                await self._model_session(bridge.agent.model, left, why)
            except* (ModelConnectError, SocketClosed, OSError) as group:
                log.warning("model connection: %s", group.exceptions[0])
                refused = [e for e in group.exceptions
                           if isinstance(e, ModelConnectError) and e.refused]
                if refused:  # a bad key or no access: no retry would fare better
                    self._end(EndReason.MODEL_ERROR, str(refused[0]))
            connected = bridge.stats.model_connections > connections
            if bridge.ended:
                return
            if self._hung_up_by_platform:  # nothing to reconnect to: the call ends
                log.info("call %s: the voice platform hung up: the call ends once the "
                         "agent's audio has played", self.call_sid)
                bridge.end_after_playout(EndReason.HUNG_UP, trio.current_time())
                self._wake()
                await trio.sleep_forever()
            if self._replacing:
                why = "rotation"
                continue  # the next session at once
            why = "reconnect" if bridge.stats.model_connections else "first"
            now = trio.current_time()
            if connected:  # lost mid-call: reconnect; the caller stays on the line
                log.warning("call %s: the model connection was lost: reconnecting",
                            self.call_sid)
                if now - began >= HEALTHY_SESSION_S:  # a new outage: at once
                    outage, failures = now, 0
                    continue
                outage = now if outage is None else outage  # flapping: back off
            elif outage is None:
                outage = began
            if now - outage >= budget:
                self._end(EndReason.MODEL_UNAVAILABLE, f"no model connection for {budget:g} s")
                return
            failures += 1
            await trio.sleep(min(0.25 * 2 ** (failures - 1), 2.0, outage + budget - now))

    async def _model_session(self, model_name: str, within: float, why: str) -> None:
        """One model connection, from its connect (given `within` seconds) to its end;
        the conversation goes on across connections. `why` it opens: `first`,
        `reconnect`, `rotation`."""
        bridge = self._bridge
        # one scope around the whole connection (a connection may hold a nursery, which
        # must close inside it): its deadline bounds the connect, then is lifted
        with trio.CancelScope(deadline=trio.current_time() + max(within, 0.0)) as scope:
            async with self._backend.connect(model_name) as model:
                scope.deadline = math.inf
                bridge.model_connected(trio.current_time(), why,
                                       truncates=getattr(model, "truncates", True),
                                       vad=getattr(model, "turn_detection", None))
                self._wake()
                async with trio.open_nursery() as link:
                    self._model_link = link.cancel_scope
                    link.start_soon(self._write_model, model)
                    link.start_soon(self._rotate, trio.current_time())
                    link.start_soon(self._keepalive, model)
                    await self._read_model(model)
                    link.cancel_scope.cancel()
                self._model_link = None
                # a voice platform that ended the call itself (`callbridge.pcm`)
                self._hung_up_by_platform = bool(getattr(model, "hung_up", False))
        if scope.cancelled_caught:
            raise ModelConnectError(f"no connection within {within:g} s")

    async def _keepalive(self, model: RealtimeConnection) -> None:
        """Ping the model; a connection that sent nothing for two intervals while we
        were reading it (not holding back for Twilio) has stalled: drop it (the model
        task reopens it). Connections that cannot say when they last heard: no check."""
        interval, ping = self.limits.model_ping_s, getattr(model, "ping", None)
        if ping is None or getattr(model, "last_heard", None) is None:
            return
        while True:
            await trio.sleep(interval)
            heard = max(model.last_heard, self._model_unparked)  # type: ignore[attr-defined]
            if not self._model_parked and trio.current_time() - heard > 2 * interval:
                raise SocketClosed(f"the model sent nothing for {2 * interval:g} s")
            await ping()

    async def _rotate(self, opened: float) -> None:
        """Ask for a new session before this one reaches the API's age limit; the
        switch itself waits for a turn boundary (`_wake`)."""
        await trio.sleep_until(opened + self.limits.session_max_s)
        log.info("call %s: the model session is %g s old: rotating at the next pause",
                 self.call_sid, self.limits.session_max_s)
        self._rotation_due = True
        self._wake()

    def _replace_model(self) -> None:
        """Close the model connection and open another; the call goes on. The seam
        for reconnects and session rotation (which also restore the conversation)."""
        if self._model_link is not None:
            self._replacing = True
            self._model_link.cancel()


async def _chosen(choose: AgentFactory, context: CallContext) -> Agent:
    agent = choose(context)
    if inspect.isawaitable(agent):
        agent = await agent
    if not isinstance(agent, Agent):
        raise TypeError(f"the agent factory returned {type(agent).__name__}, not an Agent")
    return agent
