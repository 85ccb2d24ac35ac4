"""A whole call in memory: the synthetic caller, `run_call` and the local model.

    async def test_greets_then_listens(autojump_clock):
        call = await simulate_call(TwilioCaller(hangup_at=5), agent=MY_AGENT)
        call.check_protocols()
        assert call.result.reason == "caller_hangup"

Under pytest-trio's `autojump_clock` a call of minutes runs in milliseconds and
the same every time (the peers use only trio's clock). The pytest plugin in
`callbridge._pytest_plugin` offers this as the `simulate_call` fixture.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio

from .._call import run_call
from .._calldata import CallLimits, CallResult
from .._sockets import memory_socket_pair
from ..agent import Agent
from ..events import CallEvent
from ..local import LocalRealtimeServer, ServerSession, echo_brain
from ._twilio import TwilioCaller

__all__ = ["SimulatedCall", "simulate_call"]


@attrs.frozen(kw_only=True)
class SimulatedCall:
    """What happened on a simulated call, from the bridge's and both peers' sides."""

    result: CallResult
    caller: TwilioCaller
    model: LocalRealtimeServer
    #: every `CallEvent` the bridge emitted (the `on_event` hook)
    events: list[CallEvent]

    @property
    def session(self) -> ServerSession:
        """The model session of this call (the model served exactly one)."""
        if len(self.model.sessions) != 1:
            raise LookupError(f"the model served {len(self.model.sessions)} sessions, not 1")
        return self.model.sessions[0]

    def times(self, kind: str) -> list[float]:
        """When the bridge emitted events of `kind` (e.g. "clear", "truncate")."""
        return [e.at for e in self.events if e.kind == kind]

    def check_protocols(self) -> None:
        """Raise AssertionError if either peer saw a protocol violation: a message
        Twilio would reject, or an `error` event from the model."""
        assert self.caller.violations == [], self.caller.violations
        errors = [e for e in map(json.loads, self.session.sent) if e.get("type") == "error"]
        assert errors == [], errors


async def simulate_call(
    caller: TwilioCaller | None = None,
    *,
    agent: Agent | None = None,
    model: Any = None,
    limits: CallLimits | None = None,
) -> SimulatedCall:
    """Run one call of `agent` between `caller` (default: 10 s of silence, then
    hang-up) and `model` (default: a `LocalRealtimeServer` with the echo brain; any
    backend with `sessions` works), over in-memory sockets."""
    caller = caller if caller is not None else TwilioCaller()
    model = model if model is not None else LocalRealtimeServer(echo_brain())
    events: list[CallEvent] = []
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        result = await run_call(bridge_end, agent=agent or Agent(), backend=model,
                                limits=limits, on_event=events.append)
    return SimulatedCall(result=result, caller=caller, model=model, events=events)
