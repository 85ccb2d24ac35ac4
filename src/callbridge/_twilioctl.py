"""What a call asks of Twilio's REST API when it ends: hang up, hand on, or apologise.

The bridge decides *when* a call ends (once the agent's last words have played);
this decides what Twilio is told then, by the call's end reason:

    hung_up, idle, time_limit      Status=completed (the call is over)
    transferred                    TwiML that <Dial>s the transfer's target
    model_unavailable, model_error TwiML that <Say>s the agent's apology, then <Hangup/>

Twilio then stops the stream itself. Without credentials, or when the request fails
(logged, with what Twilio said and never a secret), the call layer closes the stream
instead, and with nothing after `</Connect>` Twilio ends the call.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

import trio

from . import events as ev
from . import twiml
from .agent import Agent
from .events import EndReason

__all__ = ["TwilioActions", "TwilioControl"]

log = logging.getLogger("callbridge.call")


class TwilioControl(Protocol):
    """What a call needs of Twilio's REST API to hang up and transfer
    (`callbridge.twilio_rest.TwilioRest` is one)."""

    async def hang_up(self, call_sid: str) -> bool: ...

    async def update_call(self, call_sid: str, *, twiml: str | None = None) -> Mapping[str, Any]:
        ...


class TwilioActions:
    """One call's REST requests: `rest` (None without credentials), the service's
    public `service_url` (for a transfer's `<Dial action>`)."""

    def __init__(self, rest: TwilioControl | None, service_url: str | None) -> None:
        self.rest = rest
        self.service_url = service_url
        self._transfer: str | None = None  # the TwiML that hands the call on

    def prepare_transfer(self, to: str, *, caller_id: str | None, timeout: int | None,
                         failure_line: str | None) -> None:
        """The `<Dial>` for a transfer (the first one asked for counts)."""
        if self.rest is None:
            raise RuntimeError("transferring a call needs Twilio's REST API: set "
                               "TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (or an API key pair)")
        if self._transfer is None:
            action = None
            if failure_line is not None and self.service_url is not None:
                action = f"{self.service_url}/dial-action?{urlencode({'line': failure_line})}"
            self._transfer = twiml.dial(to, caller_id=caller_id, timeout=timeout, action=action)

    async def after(self, reason: EndReason | None, call_sid: str | None, agent: Agent | None,
                    *, within: float,
                    on_event: Callable[[ev.CallEvent], None] | None) -> bool:
        """Tell Twilio how the call ended (see the module docstring), within `within`
        seconds; whether it took it (then Twilio stops the stream itself)."""
        rest = self.rest
        if rest is None or call_sid is None:
            return False
        document = self._transfer
        request: Callable[[], Awaitable[object]]
        if reason is EndReason.TRANSFERRED and document is not None:
            action, request = "transfer", functools.partial(rest.update_call, call_sid,
                                                            twiml=document)
        elif reason in (EndReason.HUNG_UP, EndReason.IDLE, EndReason.TIME_LIMIT):
            action, request = "hang_up", functools.partial(rest.hang_up, call_sid)
        elif reason in (EndReason.MODEL_UNAVAILABLE, EndReason.MODEL_ERROR):
            document = twiml.say_and_hang_up((agent or Agent()).apology)  # not dead air
            action, request = "apology", functools.partial(rest.update_call, call_sid,
                                                           twiml=document)
        else:
            return False
        ok = False
        with trio.move_on_after(within) as scope:
            try:
                await request()
                ok = True
            except Exception as exc:  # Twilio's error, or the network's: logged, not fatal
                # no traceback: the error says what Twilio (or the network) said
                log.error("Twilio REST %s of call %s failed: %s",  # noqa: TRY400
                          action, call_sid, exc)
        if scope.cancelled_caught:
            log.error("Twilio REST %s of call %s: no answer in %s s", action, call_sid, within)
        if on_event is not None:
            now = trio.current_time()
            on_event(ev.TwilioAction(at=now, wall=time.time(), action=action, ok=ok,
                                     twiml=None if action == "hang_up" else document))
        return ok
