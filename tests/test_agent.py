"""The agent as data: its session for a phone call, and the call's context it may use."""

from __future__ import annotations

import pytest
from _schema import validate_client_event

from callbridge import Agent, CallContext
from callbridge import twilio as tw
from callbridge.codec import encode

START = tw.Start(stream_sid="MZ1", account_sid="AC1", call_sid="CA1",
                 custom_parameters={"from": "+15551230000", "to": "+15559870000", "x": "1"})


def test_the_context_comes_from_start() -> None:
    context = CallContext.from_start(START, started_at=1_700_000_000.0)
    assert context == CallContext(
        call_sid="CA1", stream_sid="MZ1", account_sid="AC1", from_number="+15551230000",
        to_number="+15559870000", parameters=dict(START.custom_parameters),
        started_at=1_700_000_000.0)
    bare = CallContext.from_start(tw.Start(stream_sid="MZ1", account_sid="", call_sid="CA1"),
                                  started_at=0.0)
    assert (bare.from_number, bare.to_number, bare.parameters) == (None, None, {})


def test_instructions_may_be_a_function_of_the_context() -> None:
    agent = Agent(instructions=lambda c: f"Caller {c.from_number}.")
    assert agent.needs_context and not Agent().needs_context
    update = agent.session_update(CallContext.from_start(START, started_at=0.0))
    assert update.session.instructions == "Caller +15551230000."
    validate_client_event(encode(update))
    with pytest.raises(ValueError, match="need the call's context"):
        agent.session_update()
    with pytest.raises(TypeError, match="returned int, not a string"):
        Agent(instructions=lambda c: 7).session_update(  # type: ignore[arg-type,return-value]
            CallContext.from_start(START, started_at=0.0))
