"""Outbound calls: have Twilio call a number and connect it to the service's agent.

`place_call` asks Twilio's REST API to call `to` from `from_`; when the call is
answered Twilio fetches the service's `/incoming-call` webhook (signed, like any
call's), which answers `<Connect><Stream>` with the call's parameters and stream
token, so an outbound call is served exactly like an inbound one. The agent may be
named (`agent=`: one of the service's `CALLBRIDGE_AGENTS`, or what its agent
factory reads from `CallContext.parameters["agent"]`). With `machine_detection`,
Twilio's answering-machine detection runs alongside the conversation and posts who
answered to the service's `/amd-status`, which hands it to the live call
(`CallContext.answered_by`, `Agent.on_answered_by`: e.g. leave a voicemail after the
beep). Status changes go to the service's `/call-status`; `watch_call` follows them
from anywhere by asking the REST API, which is what `callbridge call` prints.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode

import attrs
import trio

from .twilio_rest import TwilioRest

__all__ = ["FINAL_STATUSES", "PlacedCall", "place_call", "watch_call"]

#: a call in one of these is over (Twilio's call statuses)
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
#: every status change, for the service's `/call-status`
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


@attrs.frozen(kw_only=True)
class PlacedCall:
    """A call Twilio accepted to place: its CallSid and status (`queued` at first)."""

    sid: str
    status: str
    to: str
    from_: str


async def place_call(
    rest: TwilioRest,
    *,
    to: str,
    from_: str,
    service_url: str,
    agent: str | None = None,
    machine_detection: bool = False,
    ring_timeout: int | None = None,
) -> PlacedCall:
    """Have Twilio call `to` from `from_` (a Twilio number of the account) and, once
    answered, connect it to the service at `service_url` (its public `https://` base,
    `CALLBRIDGE_PUBLIC_URL`). `agent` names the agent (see the module docstring);
    `machine_detection` turns on Twilio's asynchronous answering-machine detection
    (`DetectMessageEnd`: for a machine, the result comes once its greeting ended, at
    the beep). Raises `TwilioRestError` when Twilio refuses."""
    base = service_url.rstrip("/")
    query = f"?{urlencode({'agent': agent})}" if agent else ""
    resource = await rest.create_call(
        to=to, from_=from_, url=f"{base}/incoming-call{query}",
        status_callback=f"{base}/call-status", status_callback_events=STATUS_EVENTS,
        machine_detection="DetectMessageEnd" if machine_detection else None,
        async_amd=machine_detection,
        async_amd_status_callback=f"{base}/amd-status" if machine_detection else None,
        ring_timeout=ring_timeout)
    return PlacedCall(sid=str(resource["sid"]), status=str(resource.get("status", "queued")),
                      to=to, from_=from_)


async def watch_call(rest: TwilioRest, sid: str, *, every: float = 1.0
                     ) -> AsyncIterator[str]:
    """Each new status of call `sid`, asked of the REST API every `every` seconds,
    until it is over (one of `FINAL_STATUSES`, the last one yielded)."""
    last = None
    while True:
        status = str((await rest.fetch_call(sid)).get("status", ""))
        if status != last:
            last = status
            yield status
        if status in FINAL_STATUSES:
            return
        await trio.sleep(every)
