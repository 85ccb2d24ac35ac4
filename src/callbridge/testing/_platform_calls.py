"""One call's life on `LocalTwilio`: a task (`CallRun.drive`) the REST side steers.

The driver places the call (outbound: `queued`, `ringing`, answered or not), then
runs TwiML documents one after another: each comes inline or from a URL (requested
signed, as Twilio does), and its verbs run in order until one hands over to another
document (`<Redirect>`, a `<Dial action>`, `<Connect action>`) or the call ends.

The REST side never touches the running document: it calls `interrupt` (a new
document to run, or a final status) and the driver notices wherever it waits. A
stream it interrupts is not cut but ended as Twilio ends one: the caller sends
`stop` and closes (`TwilioCaller.hang_up`), with `STREAM_GRACE_S` to do so. Every
task of the call lives in the call's nursery; the completed status callback goes
out last, then `PlatformCall.ended` is set.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlencode, urljoin, urlsplit

import attrs
import httpx
import trio

from ..signature import compute_signature
from ._platform_peers import STREAM_GRACE_S, OutboundCall, Verdict, amd_verdict
from ._platform_rest import API_VERSION, PlatformCall, PlatformStream, rfc2822
from ._platform_twiml import (
    Connect,
    Dial,
    Hangup,
    Pause,
    Play,
    Redirect,
    Say,
    TwimlError,
    Verb,
    parse_twiml,
)
from ._twilio import TwilioCaller

if TYPE_CHECKING:
    from ._platform import LocalTwilio

__all__ = ["CallRun", "Callback", "Fetch", "Inline", "Source", "Transfer", "new_sid"]


@attrs.frozen(kw_only=True)
class Transfer:
    """A `<Dial>` the call ran: it left the stream for another party."""

    call_sid: str
    #: the TwiML document with the `<Dial>`
    twiml: str
    #: "number", "sip", "client", "conference", "queue" or "application"
    kind: str
    targets: tuple[str, ...]
    action: str | None
    caller_id: str | None
    timeout: int
    #: the dialled leg's `DialCallStatus`
    outcome: str


@attrs.frozen(kw_only=True)
class Callback:
    """A request the platform made to the application, and its answer."""

    #: "voice" (TwiML for `Url`, `<Redirect>`, a fallback), "status", "amd",
    #: "dial-action", "connect-action" or "stream-status"
    kind: str
    call_sid: str
    url: str
    method: str
    form: dict[str, str]
    #: the `X-Twilio-Signature` it carried
    signature: str
    #: the answer's HTTP status, None if none came (`error` says why)
    status: int | None
    body: str = ""
    error: str | None = None


@attrs.frozen
class Inline:
    """TwiML given in the request (`Twiml=`)."""

    twiml: str
    base: str | None = None  # what a relative URL in it is relative to


@attrs.frozen(kw_only=True)
class Fetch:
    """TwiML to request from a URL (`Url=`, `<Redirect>`, an `action`)."""

    url: str
    method: str = "POST"
    kind: str = "voice"
    extra: Mapping[str, str] = attrs.field(factory=dict)
    fallback: tuple[str, str] | None = None  # (url, method)


Source: TypeAlias = Inline | Fetch


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class CallRun:
    """The driver of one call, and the handle the REST side steers it by."""

    def __init__(self, platform: LocalTwilio, call: PlatformCall, http: httpx.AsyncClient,
                 source: Source | None = None, attached: TwilioCaller | None = None) -> None:
        self.platform, self.call, self._http = platform, call, http
        self._source, self._attached_caller = source, attached
        self.nursery: trio.Nursery | None = None
        self.interrupted = trio.Event()
        self.next: Source | None = None
        #: the status the call ends with, once decided
        self.final: str | None = None
        #: TwiML given by an update before the call was answered
        self.pending: Source | None = None
        self.callee: TwilioCaller | None = None
        self.amd: Verdict | None = None
        self.sequence = 0

    def interrupt(self, then: Source | None = None, final: str | None = None) -> None:
        """Stop what the call does: run `then` instead, or end with `final`."""
        self.next, self.final = then, final or self.final
        self.interrupted.set()

    def take(self) -> Source | None:
        """What to run after an interruption (None: the call is over)."""
        source, self.next = self.next, None
        self.interrupted = trio.Event()
        return None if self.final is not None else source

    def set_status(self, status: str) -> None:
        self.call.statuses.append(status)
        self.call.date_updated = self.platform._wall()
        self.platform._changed()

    def end(self, status: str) -> None:
        if self.call.live:
            self.set_status(status)
            self.call.end_time = self.call.date_updated

    async def drive(self) -> None:
        call, source, attached = self.call, self._source, self._attached_caller
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if call.direction == "outbound-api":
                    source = await self._place()
                elif source is None and attached is not None:
                    await self._until_over(attached, attached.finished.wait)
                    source = self.take() if self.interrupted.is_set() else None
                    attached = None
                while source is not None and self.final is None:
                    document = await self._document(source)
                    if document is None:
                        break
                    source = await self._run(*document, attached)
                    attached = None
                nursery.cancel_scope.cancel()
            self.end(self.final or "completed")
            await self._status("completed")
        finally:
            self.end(self.final or "completed")
            call.ended.set()
            self.platform._changed()

    async def _wait(self, seconds: float) -> bool:
        """Sleep; True if the REST side interrupted first."""
        with trio.move_on_after(seconds):
            await self.interrupted.wait()
            return True
        return False

    async def _place(self) -> Source | None:
        call, new, platform = self.call, self.call.request, self.platform
        assert new is not None
        assert self.nursery is not None
        await self._status("initiated")
        self.set_status("ringing")
        await self._status("ringing")
        if await self._wait(min(platform.ring_s, new.timeout)):
            return self.take()
        if platform.ring_s >= new.timeout:
            self.final = "no-answer"
            return None
        outbound = OutboundCall(sid=call.sid, from_=call.from_, to=call.to,
                                machine_detection=new.machine_detection)
        callee = platform.answer(outbound)
        if isinstance(callee, str):
            self.final = callee
            return None
        self.callee = callee
        self.set_status("in-progress")
        call.start_time = call.date_updated
        self.nursery.start_soon(self._time_limit, new.time_limit)
        await self._status("answered")
        extra = {}
        if new.machine_detection is not None:
            verdict = amd_verdict(outbound, callee, new)
            if new.async_amd:
                self.amd = verdict  # posted once the stream opens
                if new.amd_callback is None:
                    call.notices.append("21262 No AMD status callback URL provided")
            else:
                if await self._wait(verdict.after):
                    return self.take()
                call.answered_by = extra["AnsweredBy"] = verdict.answered_by
        if self.pending is not None:
            return self.pending
        if new.twiml is not None:
            return Inline(new.twiml)
        assert new.url is not None
        return Fetch(url=new.url, method=new.method, extra=extra,
                     fallback=(new.fallback_url, new.fallback_method)
                     if new.fallback_url else None)

    async def _time_limit(self, seconds: int) -> None:
        await trio.sleep(seconds)
        if self.call.live:
            self.end("completed")
            self.interrupt(final="completed")

    async def _until_over(self, caller: TwilioCaller,
                          stream: Callable[[], Awaitable[object]]) -> None:
        """Run `stream`; if the REST side interrupts, the caller hangs up (`stop`,
        close), and the stream has `STREAM_GRACE_S` to end before it is cut."""
        async with trio.open_nursery() as nursery:
            async def hang_up_when_told() -> None:
                await self.interrupted.wait()
                caller.hang_up()
                await trio.sleep(STREAM_GRACE_S)
                nursery.cancel_scope.cancel()

            nursery.start_soon(hang_up_when_told)
            await stream()
            nursery.cancel_scope.cancel()

    async def _document(self, source: Source) -> tuple[list[Verb], str | None, str] | None:
        """The verbs `source` gives (requested if need be), or None: the call ends."""
        call = self.call
        if isinstance(source, Inline):
            text, base = source.twiml, source.base
        else:
            answer = await self._request(source.kind, source.url, source.method,
                                         self._call_form() | dict(source.extra))
            if answer.status is None or not 200 <= answer.status < 300:
                call.notices.append(f"11200 HTTP retrieval failure: {source.method} "
                                    f"{source.url} -> {answer.status or answer.error}")
                if source.fallback is None:
                    return None
                url, method = source.fallback
                return await self._document(Fetch(url=url, method=method, extra=source.extra))
            text, base = answer.body, source.url
        try:
            return parse_twiml(text), base, text
        except TwimlError as exc:
            call.notices.append(str(exc))
            return None

    async def _run(self, verbs: list[Verb], base: str | None, text: str,
                   attached: TwilioCaller | None) -> Source | None:
        """Run a document's verbs; returns the next document to run, or None."""
        if self.amd is not None and not (verbs and isinstance(verbs[0], Connect)):
            self._start_amd()
        for verb in verbs:
            if self.interrupted.is_set():
                return self.take()
            if isinstance(verb, Connect):
                outcome = await self._stream(verb, attached)
                attached = None
                if outcome == "interrupted":
                    return self.take()
                if outcome == "hangup":
                    return None
                if outcome == "closed" and verb.action is not None:
                    return self._follow(base, verb.action, verb.action_method, "connect-action")
            elif isinstance(verb, Dial):
                dialled = await self._dial(verb, text)
                if dialled is None:
                    return self.take()
                if verb.action is not None:
                    return self._follow(base, verb.action, verb.method, "dial-action", dialled)
            elif isinstance(verb, Say | Play | Pause):
                if isinstance(verb, Say):
                    self.call.said.append(verb.text)
                    seconds = 0.5 + 0.06 * len(verb.text)  # about 150 words a minute
                elif isinstance(verb, Play):
                    seconds = 0.5 * len(verb.digits) if verb.digits else 1.0
                else:
                    seconds = verb.length
                if await self._wait(seconds):
                    return self.take()
            elif isinstance(verb, Hangup):
                return None
            elif isinstance(verb, Redirect):
                return self._follow(base, verb.url, verb.method, "voice")
            else:
                self.call.notices.append(f"<{verb.tag}> is not modelled by LocalTwilio: skipped")
        return None  # the end of the document hangs up

    def _follow(self, base: str | None, url: str, method: str, kind: str,
                extra: Mapping[str, str] | None = None) -> Source | None:
        absolute = urljoin(base or "", url)
        if urlsplit(absolute).scheme not in ("http", "https"):
            self.call.notices.append(f"11200 cannot request {url!r}: no absolute URL")
            return None
        return Fetch(url=absolute, method=method, kind=kind, extra=dict(extra or {}))

    async def _stream(self, verb: Connect, attached: TwilioCaller | None) -> str:
        """Run one `<Connect><Stream>`: "closed" (by the server: the next verb runs),
        "hangup" (the callee hung up), "interrupted" (REST) or "failed"."""
        call, platform = self.call, self.platform
        if attached is not None:
            caller = attached
            call.streams.append(PlatformStream(url=verb.url, stream_sid=caller.stream_sid,
                                               caller=caller, parameters=dict(verb.parameters),
                                               headers={}, name=verb.name))
            await self._until_over(caller, caller.finished.wait)
        else:
            if not verb.url.startswith("wss://"):
                call.notices.append("31922 Stream - WebSocket - URL Schema Not Supported")
                return "failed"
            if verb.track not in (None, "inbound_track"):
                call.notices.append("31941 Stream - Invalid Track configuration")
                return "failed"
            callee = self.callee or platform.answer(OutboundCall(
                sid=call.sid, from_=call.from_, to=call.to, machine_detection=None))
            self.callee = None
            if isinstance(callee, str):
                call.notices.append(f"the stream's far end answered {callee!r}: no stream")
                return "failed"
            caller = callee
            caller.call_sid, caller.account_sid = call.sid, call.account_sid
            caller.stream_sid, caller.custom_parameters = new_sid("MZ"), dict(verb.parameters)
            headers = {"X-Twilio-Signature": compute_signature(platform.auth_token, verb.url)}
            stream = PlatformStream(url=verb.url, stream_sid=caller.stream_sid, caller=caller,
                                    parameters=dict(verb.parameters), headers=headers,
                                    name=verb.name)
            call.streams.append(stream)
            platform._changed()
            await self._stream_status(verb, stream, "stream-started")
            if self.amd is not None:
                self._start_amd()
            try:
                await self._until_over(caller, partial(
                    platform.connect_stream, verb.url, caller, headers))
            except Exception as exc:
                stream.error = f"31920 Stream - WebSocket - Handshake Error: {_describe(exc)}"
                call.notices.append(stream.error)
            await self._stream_status(verb, stream, "stream-stopped")
            if stream.error is not None:
                return "failed"
        platform._changed()
        if self.interrupted.is_set():
            return "interrupted"
        return "closed" if caller.closed_by_server else "hangup"

    async def _stream_status(self, verb: Connect, stream: PlatformStream, event: str) -> None:
        if verb.status_callback is not None:
            await self._request("stream-status", verb.status_callback,
                                verb.status_callback_method, {
                                    "AccountSid": self.call.account_sid,
                                    "CallSid": self.call.sid, "StreamSid": stream.stream_sid,
                                    "StreamName": verb.name or stream.stream_sid,
                                    "StreamEvent": event,
                                    "Timestamp": _iso8601(self.platform._wall())})

    async def _dial(self, verb: Dial, text: str) -> dict[str, str] | None:
        """Run a `<Dial>`: the `action` fields once the dialled leg ends, or None if
        the REST side interrupted."""
        platform = self.platform
        outcome = platform.dial_outcome
        platform.transfers.append(Transfer(
            call_sid=self.call.sid, twiml=text, kind=verb.kind, targets=verb.targets,
            action=verb.action, caller_id=verb.caller_id, timeout=verb.timeout, outcome=outcome))
        platform._changed()
        seconds = {"completed": platform.dial_duration_s, "no-answer": float(verb.timeout),
                   "busy": 1.0, "failed": 0.0}[outcome]
        if await self._wait(seconds):
            return None
        fields = {"DialCallStatus": outcome, "DialCallSid": new_sid("CA")}
        if outcome == "completed":
            fields["DialCallDuration"] = str(round(seconds))
        return fields

    # --- AMD -------------------------------------------------------------------------

    def _start_amd(self) -> None:
        verdict, self.amd = self.amd, None
        assert verdict is not None
        assert self.nursery is not None
        self.nursery.start_soon(self._post_amd, verdict)

    async def _post_amd(self, verdict: Verdict) -> None:
        await trio.sleep(verdict.after)
        call, new = self.call, self.call.request
        if not call.live or new is None:
            return  # [UNCONFIRMED] whether Twilio still posts for a call that ended
        call.answered_by = verdict.answered_by
        self.platform._changed()
        if new.amd_callback is not None:
            await self._request("amd", new.amd_callback, new.amd_callback_method, {
                "AccountSid": call.account_sid, "CallSid": call.sid,
                "AnsweredBy": verdict.answered_by,
                "MachineDetectionDuration": str(round(verdict.after * 1000))})

    # --- requests to the application -------------------------------------------------

    def _call_form(self) -> dict[str, str]:
        """The fields of every voice request about the call."""
        call = self.call
        return {"AccountSid": call.account_sid, "ApiVersion": API_VERSION, "CallSid": call.sid,
                "CallStatus": call.status, "Called": call.to, "Caller": call.from_,
                "Direction": call.direction, "From": call.from_, "To": call.to}

    async def _status(self, event: str) -> None:
        call, new = self.call, self.call.request
        events = new.status_callback_events if new is not None else frozenset({"completed"})
        if call.status_callback is None or event not in events:
            return
        status = {"initiated": "initiated", "ringing": "ringing",  # [OBS] "initiated"
                  "answered": "in-progress"}.get(event, call.status)
        form = self._call_form() | {
            "CallStatus": status, "CallbackSource": "call-progress-events",
            "SequenceNumber": str(self.sequence),
            "Timestamp": rfc2822(self.platform._wall()) or ""}
        if event == "completed":
            start, end = call.start_time, call.end_time
            form["CallDuration"] = str(round(end - start) if start and end else 0)
        self.sequence += 1
        await self._request("status", call.status_callback, call.status_callback_method, form)

    async def _request(self, kind: str, url: str, method: str, form: dict[str, str]) -> Callback:
        """One signed request to the application, as Twilio makes it."""
        token = self.platform.auth_token
        headers = {"User-Agent": "TwilioProxy/1.1"}
        content = b""
        if method == "GET":  # the fields go in the query, and the URL is what is signed
            target = url + ("&" if "?" in url else "?") + urlencode(form)
            signature = compute_signature(token, target)
        else:
            target = url
            signature = compute_signature(token, url, form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            content = urlencode(form).encode()
        headers["X-Twilio-Signature"] = signature
        record = partial(Callback, kind=kind, call_sid=self.call.sid, url=url, method=method,
                         form=form, signature=signature)
        try:
            response = await self._http.request(method, target, content=content,
                                                headers=headers)
            callback = record(status=response.status_code, body=response.text)
        except httpx.HTTPError as exc:  # what the app raises in memory is the test's to see
            callback = record(status=None, error=repr(exc))
        self.platform.callbacks.append(callback)
        self.platform._changed()
        return callback


def _describe(exc: BaseException) -> str:
    """What went wrong, through the nurseries' exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _iso8601(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
