"""pytest fixtures for testing your own agents against callbridge's local peers.

Installed with callbridge and loaded automatically (a `pytest11` entry point named
`callbridge`, the way pytest-trio is); it imports nothing heavy until a fixture is
used. With pytest-trio in `trio_mode`, a whole call in a few lines:

    from callbridge.testing import TwilioCaller, Utterance

    async def test_my_agent_answers(autojump_clock, simulate_call):
        caller = TwilioCaller(utterances=[Utterance(at=1.0, duration=1.5)], hangup_at=6)
        call = await simulate_call(caller, agent=MY_AGENT)
        call.check_protocols()
        assert call.session.responses and call.caller.heard_audio()

Ask for `autojump_clock` too (pytest-trio hands the clock only to the test
itself), so the call runs on virtual time: instant and deterministic.

Fixtures (a fixture of the same name in your conftest.py wins):

* `realtime_model`: a fresh `LocalRealtimeServer` with the echo brain. Override it
  to script your model, e.g. `LocalRealtimeServer(scripted_brain([...]))`.
* `simulate_call`: `await simulate_call(caller=None, *, agent=None, model=None,
  limits=None) -> SimulatedCall`, using `realtime_model` unless given a model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .local import LocalRealtimeServer
    from .testing import SimulatedCall

__all__ = ["realtime_model", "simulate_call"]


@pytest.fixture
def realtime_model() -> LocalRealtimeServer:
    """A fresh local realtime model (echo brain) for this test."""
    from .local import LocalRealtimeServer, echo_brain

    return LocalRealtimeServer(echo_brain())


@pytest.fixture
def simulate_call(realtime_model: LocalRealtimeServer) -> Callable[..., Awaitable[SimulatedCall]]:
    """`await simulate_call(caller, agent=...)`: one whole call against `realtime_model`."""
    from .testing import simulate_call as simulate

    async def run(*args: Any, model: Any = None, **kwargs: Any) -> SimulatedCall:
        return await simulate(*args, model=realtime_model if model is None else model, **kwargs)

    return run

