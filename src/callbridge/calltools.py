"""Call-control tools for the agent: hang up after the goodbye, transfer the caller.

Add them to an agent's tools like any other:

    desks = {"sales": "+14155550100", "support": "sip:desk@pbx.example.com"}
    agent = callbridge.Agent(tools=[callbridge.end_call, callbridge.transfer_call(desks)])

They act through the live call (`CallContext.live`, a `callbridge.Call`): the call
ends, or is handed on, once the agent's words under way have played, never in the
middle of them (`Call.hang_up`, `Call.transfer`), and no reply is asked of the model
after their output. Transfers need Twilio's REST API (credentials in the
environment); without it a transfer's output tells the model it failed.

Sending DTMF to the far end (`<Play digits>` on the live call, for IVR navigation)
is not offered: it needs the conversation carried over to the new stream Twilio
opens after the redirect, which callbridge does not do yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .agent import CallContext
from .tools import Tool, tool

__all__ = ["end_call", "transfer_call"]


def _live(call: CallContext) -> Any:
    if call.live is None:
        raise RuntimeError("there is no live call to act on")
    return call.live


@tool
async def end_call(call: CallContext) -> str:
    """End the phone call. Say goodbye first, in the same response: the call ends once
    the caller has heard your last words."""
    _live(call).hang_up()
    return "The call ends once your last words have played. Say nothing more."


def transfer_call(
    destinations: Mapping[str, str] | str,
    *,
    caller_id: str | None = None,
    timeout: int | None = None,
    failure_line: str | None = None,
    description: str | None = None,
) -> Tool:
    """A tool that transfers the caller, once the agent's line under way has played.

    `destinations` is one phone number or `sip:` URI, or several by name
    (`{"sales": "+14155550100", "support": "sip:desk@pbx.example.com"}`), of which
    the model picks one by name (it never sees the numbers). `caller_id` and
    `timeout` (seconds of ringing) go to Twilio's `<Dial>`; `failure_line` is what the
    caller hears if nobody answers, before the call ends.
    """
    options = {"caller_id": caller_id, "timeout": timeout, "failure_line": failure_line}
    if isinstance(destinations, str):
        number = destinations

        async def transfer(call: CallContext) -> str:
            _live(call).transfer(number, **options)
            return "The caller is transferred once your line has played. Say nothing more."

        transfer.__annotations__ = {"call": CallContext, "return": str}
        text = "Transfer the caller to a person. Tell them first, in the same response."
    else:
        named = dict(destinations)
        if not named:
            raise ValueError("transfer_call needs at least one destination")

        async def transfer(call: CallContext, to: str) -> str:  # type: ignore[misc]
            _live(call).transfer(named[to], **options)
            return (f"The caller is transferred to {to} once your line has played. "
                    "Say nothing more.")

        # the model picks a name from the list: the schema says which (an enum)
        transfer.__annotations__ = {"call": CallContext, "to": Literal[tuple(named)],
                                    "return": str}
        text = ("Transfer the caller to one of these: " + ", ".join(named)
                + ". Tell them first, in the same response. to: where to transfer them.")
    transfer.__doc__ = text
    return tool(name="transfer_call", description=description)(transfer)
