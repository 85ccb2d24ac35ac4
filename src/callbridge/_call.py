"""One phone call on trio: thin pumps around the sans-I/O `Bridge`.

Every decision is the `Bridge`'s (`callbridge._bridge`); this layer owns the sockets
and the clock, and only moves messages between them and the bridge:

    Twilio reader ──receive_twilio──▶ ┌────────┐ ──next_to_model──▶ model socket
    model reader  ──receive_model───▶ │ Bridge │ ──next_to_twilio─▶ Twilio socket
                                      └────────┘

* A reader feeds the bridge what arrives (every message one read brought), with the
  time, then `_wake` writes what the bridge has for either peer at once, in the
  reader's own task: a caller frame reaches the model, and model audio Twilio, with
  no hop to another task (measured: the hop and the per-message checkpoint were most
  of a call's cost, bench/README.md). Writes never wait (`Sender.send_nowait`); what
  a socket does not take at once is its backlog, and then that peer's writer task
  drains it (waiting for writability, or awaiting the sends of a socket that can
  only be awaited: `Queued`), and nothing more is written to that peer until it
  has: one stalled peer never blocks the other, nor grows our memory.
* The Twilio reader never waits on anything but its socket (the bridge buffers
  caller audio with a drop-oldest policy), so marks and `stop` are handled even
  while the model stalls. The model reader waits while the bridge's playout is full:
  the model is read no faster than Twilio takes audio.
* A Twilio socket that takes nothing for `send_timeout` ends the call; no frame is
  ever torn (a non-blocking socket keeps the rest queued, a `Queued` send is shielded).
* The model connection comes from the backend and can be replaced mid-call
  (`callbridge._modelloop`: reconnects, rotation, keepalive), while the call's state
  stays in the bridge.

The bridge's one timer (`next_deadline`: the pause that ends a run of keypresses, a
filler line, the idle prompt) is kept by a timer task that `_wake` re-arms. The
agent's function calls run as tasks of their own, started by the model reader as the
bridge hands them out (`next_tool_call`), so audio keeps flowing while they run
(`callbridge._toolrun` turns exceptions, timeouts and bad arguments into outputs).

Nurseries, each with one job: the call's own holds the Twilio reader and, inside it,
the pumps' nursery (the Twilio writer, the model task, the timer, the `start` timeout,
the tool calls), so that ending the call cancels the pumps while the reader stays to
see Twilio's close; the model task opens one nursery per model connection (its
reader and writer). Nothing outlives `run_call`.

Teardown: Twilio's `stop` ends the model side at once, then we wait (bounded) for
Twilio to close its socket rather than closing it ourselves (closing while the
client's close is in flight is what crashes hypercorn's trio worker). When the call
ends otherwise, we close the Twilio socket so Twilio runs the next TwiML verb. When
the agent hung up or transferred the call (once its last words had played), Twilio's
REST API is told (`Status=completed`, or TwiML that `<Dial>`s) and Twilio stops the
stream itself; without REST credentials a hang-up closes the stream.

`run_call` hands out a `Call` handle through `task_status` (`nursery.start`): the
seam for ending the call and talking to the model from outside it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from . import events as ev
from . import realtime as rt
from . import twilio as tw
from ._bridge import Bridge, PendingTool
from ._calldata import CallLimits, CallRefused, CallResult, CallStats, LiveCalls
from ._errors import RemoteProtocolError
from ._logs import CALL, CallTag
from ._modelloop import ModelLoop
from ._sockets import (
    BatchSocket,
    MessageSocket,
    NowaitSocket,
    Queued,
    Sender,
    SocketClosed,
    as_message_socket,
    one_batch,
)
from ._toolrun import run_tool
from ._twilioctl import TwilioActions, TwilioControl
from .agent import Agent, AgentFactory, CallContext
from .backend import (
    EventConnection,
    OpenAIRealtime,
    RealtimeBackend,
    RealtimeConnection,
    one_event_batch,
)
from .events import CallEvent, EndReason

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

__all__ = [
    "Call",
    "CallEvent",
    "CallLimits",
    "CallRefused",
    "CallResult",
    "CallStats",
    "LiveCalls",
    "run_call",
]

log = logging.getLogger("callbridge.call")

class Call(ModelLoop):
    """A live call: what `run_call` is doing, and the seam to act on it from outside
    (the application, tools, hooks). Get one from `nursery.start(run_call, ...)`."""

    def __init__(
        self,
        socket: MessageSocket,
        *,
        agent: Agent | AgentFactory,
        backend: RealtimeBackend,
        limits: CallLimits,
        on_event: Callable[[CallEvent], None] | None,
        authorize: Callable[[tw.Start], None] | None,
        on_raw: Callable[[ev.Raw], None] | None = None,
        twilio: TwilioControl | None = None,
        service_url: str | None = None,
    ) -> None:
        self.limits = limits
        self._twilio_actions = TwilioActions(twilio, service_url)
        #: who answered (an outbound call with answering-machine detection), once known
        self.answered_by: str | None = None
        self._on_event = on_event
        self._twilio = socket
        #: what goes to Twilio: the socket itself when its writes never wait, else a
        #: queue that its writer sends (shielded: a frame started must not be torn)
        self._to_twilio_out: Sender[str] = (
            socket if isinstance(socket, NowaitSocket)
            else Queued(socket.send, shielded_for=limits.send_timeout))
        self._to_model_out: Sender[rt.ClientEvent] | None = None  # the connection's
        self._model_broken: SocketClosed | None = None  # a write to it failed
        self._owed_twilio = self._owed_model = False  # written, not yet `sent_to_*`
        self._backend = backend
        self._choose_agent = None if isinstance(agent, Agent) else agent
        self._bridge = Bridge(agent=agent if isinstance(agent, Agent) else None, limits=limits,
                              now=trio.current_time(), wall=time.time(), on_event=on_event,
                              authorize=authorize, handle=self, on_raw=on_raw)
        self._started = trio.Event()
        self._ended = trio.Event()  # the bridge ended the call: tear it down
        self._done = trio.Event()  # torn down: `result` is set
        self._twilio_closed = trio.Event()
        self._to_twilio = trio.lowlevel.ParkingLot()  # the Twilio writer waits here
        self._to_model = trio.lowlevel.ParkingLot()  # the model writer waits here
        self._playout_room = trio.lowlevel.ParkingLot()  # the model reader waits here
        self._timer = trio.lowlevel.ParkingLot()  # the timer waits here for a new deadline
        self._armed: float | None = None  # the deadline the timer waits for
        self._model_link: trio.CancelScope | None = None
        self._pumps: trio.Nursery | None = None  # where tool calls run
        self._replacing = False
        self._rotation_due = False  # the session is old: replace it at a turn boundary
        self._last_frame = trio.current_time()  # when Twilio last sent anything
        self._model_parked = False  # the model reader waits for Twilio to take audio
        self._model_unparked = -math.inf
        self._result: CallResult | None = None
        self._tag = CallTag()  # who the call's log lines name

    # --- the handle --------------------------------------------------------------------

    @property
    def start(self) -> tw.Start | None:
        """Twilio's `start` (stream and call SIDs, custom parameters), once it came."""
        return self._bridge.start

    @property
    def context(self) -> CallContext | None:
        """Who is calling (SIDs, numbers, the stream's parameters), once `start` came."""
        return self._bridge.context

    @property
    def agent(self) -> Agent | None:
        """The call's agent (None until it is chosen, when it is chosen per call)."""
        return self._bridge.agent

    @property
    def stream_sid(self) -> str | None:
        return self._bridge.start.stream_sid if self._bridge.start else None

    @property
    def call_sid(self) -> str | None:
        return self._bridge.start.call_sid if self._bridge.start else None

    @property
    def stats(self) -> CallStats:
        """The call's counters, live."""
        return self._bridge.stats

    @property
    def result(self) -> CallResult | None:
        """How the call ended, once it has (what `run_call` returns)."""
        return self._result

    def end(self, detail: str = "") -> None:
        """End the call now: the model session closes, and the Twilio socket closes so
        Twilio goes on with the TwiML after `<Connect>` (none: the call hangs up).
        Returns at once; `run_call` returns once the call is torn down. Idempotent."""
        self._bridge.end(EndReason.ENDED, detail)
        self._wake()

    def request_response(self) -> None:
        """Have the agent respond, as soon as no other response is active (e.g. after
        adding a message with `send_to_model`)."""
        self._bridge.request_response()
        self._wake()

    def hang_up(self, say: str | None = None) -> None:
        """Hang up once the agent's words under way have played: the response being
        generated, its tool calls, and every bit of its audio confirmed played by Twilio
        (at most 30 s). `say`: have the agent say this line first (e.g. when the service
        shuts down). Then Twilio is told to end the call (REST, with credentials), or the
        stream closes (nothing after `</Connect>`: Twilio ends the call). Returns at
        once; the call ends as `hung_up`. Once a call is ending, this is a no-op."""
        self._bridge.end_after_playout(EndReason.HUNG_UP, trio.current_time(), say=say)
        self._wake()

    def transfer(self, to: str, *, caller_id: str | None = None, timeout: int | None = None,
                 failure_line: str | None = None) -> None:
        """Hand the caller to `to` (a phone number, or a `sip:` URI) once the agent's
        words under way have played, as `hang_up` waits. `caller_id` and `timeout`
        (seconds of ringing) are `<Dial>`'s; `failure_line`, when set, is what the caller
        hears if nobody answers (then the call ends). Needs Twilio's REST API
        (credentials); raises RuntimeError without it. The call ends as `transferred`."""
        self._twilio_actions.prepare_transfer(to, caller_id=caller_id, timeout=timeout,
                                              failure_line=failure_line)
        self._bridge.end_after_playout(EndReason.TRANSFERRED, trio.current_time())
        self._wake()

    def answered(self, answered_by: str) -> None:
        """Twilio's answering-machine detection said who answered: `answered_by`, and
        the agent's `on_answered_by` hook (whose errors are logged)."""
        self.answered_by = answered_by
        log.info("call %s was answered by %s", self.call_sid, answered_by)
        agent = self._bridge.agent
        if agent is not None and agent.on_answered_by is not None:
            try:
                agent.on_answered_by(answered_by, self)
            except Exception:  # the application's bug: it must not end the call
                log.exception("on_answered_by(%r) raised; the call goes on", answered_by)
        self._wake()

    def watch_raw(self, on_raw: Callable[[ev.Raw], None] | None) -> None:
        """From now on, `on_raw` sees every message as it arrives (as `run_call`'s
        `on_raw` does); None: nothing does."""
        self._bridge.on_raw = on_raw

    def watch_caller_audio(self, on_audio: Callable[[str, int | None, float], None] | None
                           ) -> None:
        """From now on, `on_audio(payload, timestamp, at)` sees each frame of the
        caller's audio the call takes (base64 μ-law, Twilio's timestamp in ms, the
        call clock); None: nothing does."""
        self._bridge.on_caller_audio = on_audio

    def send_to_model(self, event: rt.ClientEvent) -> None:
        """Queue a client event for the model (e.g. `conversation.item.create`), in
        order after those already queued and ahead of caller audio still waiting."""
        self._bridge.send_to_model(event)
        self._wake()

    async def wait_ended(self) -> CallResult:
        """Wait for the call to be over; its result."""
        await self._done.wait()
        if self._result is None:
            raise RuntimeError("the call failed (its exception went to run_call's caller)")
        return self._result

    # --- running -----------------------------------------------------------------------

    def _wake(self) -> None:
        """Something was fed to the bridge: let the tasks that wait on it look."""
        bridge = self._bridge
        if bridge.end_reason is not None:
            self._ended.set()
        elif bridge.start is not None and not self._started.is_set():
            self._tag.call_sid = bridge.start.call_sid
            self._tag.stream_sid = bridge.start.stream_sid
            self._started.set()
        if self._started.is_set() and not self._ended.is_set():
            self._push_twilio()
        if self._to_model_out is not None:
            self._push_model(self._to_model_out)
        if bridge.next_deadline != self._armed:
            self._timer.unpark_all()
        if self._rotation_due and bridge.conversation.quiet and not bridge.playout.playing:
            self._rotation_due = False
            self._replace_model()

    def _end(self, reason: EndReason, detail: str = "") -> None:
        self._bridge.end(reason, detail)
        self._wake()

    async def _run(self, task_status: trio.TaskStatus[Call]) -> CallResult:
        CALL.set(self._tag)  # every task of the call logs as the call's (`_logs`)
        try:
            return await self._run_call(task_status)
        finally:
            self._done.set()

    async def _run_call(self, task_status: trio.TaskStatus[Call]) -> CallResult:
        bridge = self._bridge
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_twilio)
            async with trio.open_nursery() as pumps:
                self._pumps = pumps
                pumps.start_soon(self._run_model)
                pumps.start_soon(self._write_twilio)
                pumps.start_soon(self._expect_start)
                pumps.start_soon(self._run_timer)
                pumps.start_soon(self._watch_limits)
                task_status.started(self)
                await self._ended.wait()
                pumps.cancel_scope.cancel()
            # The model connection is closed now. After `stop` Twilio closes its end:
            # wait for that rather than race it. Otherwise, closing is our job (it is
            # how Twilio learns to run the next TwiML verb).
            reason = bridge.end_reason
            if await self._twilio_actions.after(reason, self.call_sid, bridge.agent,
                                                within=self.limits.rest_timeout,
                                                on_event=self._on_event):
                pass  # Twilio stops the stream itself: wait for it below
            elif reason not in (EndReason.CALLER_HANGUP, EndReason.TWILIO_CLOSED):
                await self._close_twilio(1008 if reason is EndReason.REFUSED else 1000)
            with trio.move_on_after(self.limits.close_wait):
                await self._twilio_closed.wait()
            if not self._twilio_closed.is_set():
                await self._close_twilio()
            nursery.cancel_scope.cancel()
        self._result = bridge.result(trio.current_time())
        return self._result

    async def _watch_limits(self) -> None:
        """End a call whose stream went silent (`media_idle_s`: Twilio sends a frame
        every 20 ms), and have the agent close one that reached `max_call_s`."""
        limits, opened = self.limits, trio.current_time()
        ends_at = math.inf if limits.max_call_s is None else opened + limits.max_call_s
        while True:
            quiet_until = self._last_frame + limits.media_idle_s
            await trio.sleep_until(min(quiet_until, ends_at))
            now = trio.current_time()
            if now >= ends_at:
                ends_at = math.inf
                agent = self._bridge.agent or Agent()
                self._bridge.end_after_playout(EndReason.TIME_LIMIT, now,
                                               say=agent.time_limit_line)
                self._wake()
            elif now - self._last_frame >= limits.media_idle_s:
                self._end(EndReason.MEDIA_TIMEOUT,
                          f"nothing from Twilio for {limits.media_idle_s:g} s")
                return

    async def _expect_start(self) -> None:
        with trio.move_on_after(self.limits.start_timeout):
            await self._started.wait()
            return
        self._end(EndReason.NO_START, f"no `start` within {self.limits.start_timeout} s")

    async def _run_timer(self) -> None:
        """Call the bridge's `tick` when its `next_deadline` comes (`_wake` re-arms)."""
        bridge = self._bridge
        while True:
            self._armed = bridge.next_deadline
            with trio.move_on_at(math.inf if self._armed is None else self._armed):
                await self._timer.park()
                continue
            bridge.tick(trio.current_time())
            self._wake()

    async def _close_twilio(self, code: int = 1000) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 2):
            try:
                await self._twilio.aclose(code)
            except Exception:  # already gone: there is nobody left to tell
                log.debug("closing the Twilio socket failed", exc_info=True)

    # --- Twilio --------------------------------------------------------------------------

    async def _read_twilio(self) -> None:
        """Feed the bridge every message a read brought, then `_wake` once."""
        bridge, socket = self._bridge, self._twilio
        receive = socket.receive_batch if isinstance(socket, BatchSocket) else one_batch(socket)
        try:
            while True:
                try:
                    texts = await receive()
                except RemoteProtocolError as exc:  # the socket failed the connection
                    self._end(EndReason.TWILIO_CLOSED, str(exc))
                    return
                if texts is None:
                    self._end(EndReason.TWILIO_CLOSED)
                    return
                self._last_frame = now = trio.current_time()
                for text in texts:
                    bridge.receive_twilio(text, now)
                self._wake()
        finally:
            self._twilio_closed.set()

    def _push_twilio(self) -> None:
        """Write what the bridge has for Twilio now, in the calling task (the reader
        that fed the bridge: no hop to a writer task), until a write leaves a backlog
        (the socket's buffers are full, or its sends must be awaited): then the writer
        drains it, and only then are those messages `sent_to_twilio`."""
        bridge, out = self._bridge, self._to_twilio_out
        sent = False
        while not out.backlog and not self._owed_twilio:
            texts = bridge.next_to_twilio()
            if texts is None:
                break
            try:
                out.send_nowait(*texts)
            except SocketClosed:
                self._end(EndReason.TWILIO_CLOSED, "Twilio socket closed while sending")
                return
            if out.backlog:
                self._owed_twilio = True
                break
            bridge.sent_to_twilio(trio.current_time())
            sent = True
        if out.backlog and self._to_twilio:
            self._to_twilio.unpark_all()  # (a backlog may come from a pong too)
        if sent and self._playout_room:
            self._playout_room.unpark_all()

    async def _write_twilio(self) -> None:
        """Drain what `_push_twilio` left, then push more. A socket that takes nothing
        for `send_timeout` is dead: the call ends (nothing is torn: what waits stays
        queued for the close, or the queue's send is shielded)."""
        await self._started.wait()  # nothing goes to Twilio before `start`
        bridge, out, timeout = self._bridge, self._to_twilio_out, self.limits.send_timeout
        while True:
            self._push_twilio()
            if not out.backlog:
                await self._to_twilio.park()
                continue
            try:
                with trio.fail_after(timeout):
                    await out.drain()
            except SocketClosed:
                self._end(EndReason.TWILIO_CLOSED, "Twilio socket closed while sending")
                return
            except trio.TooSlowError:
                self._end(EndReason.TWILIO_STALLED, f"a send took over {timeout} s")
                log.warning("Twilio stopped taking audio for %s s: ending the call", timeout)
                return
            if self._owed_twilio:
                self._owed_twilio = False
                bridge.sent_to_twilio(trio.current_time())
                if self._playout_room:
                    self._playout_room.unpark_all()

    # --- the model -----------------------------------------------------------------------

    async def _read_model(self, model: RealtimeConnection) -> None:
        """Feed the bridge every event a read brought, then `_wake` once (several
        audio deltas then go to Twilio together); wait while the playout is full."""
        bridge = self._bridge
        receive = (model.receive_batch if isinstance(model, EventConnection)
                   else one_event_batch(model))
        while True:
            events = await receive()
            if events is None:  # closed: the model task decides what next
                return
            now = trio.current_time()
            for event in events:
                if isinstance(event, RemoteProtocolError):
                    bridge.protocol_error("model", str(event), now)
                    continue
                bridge.receive_model(event, now)
                if type(event) is not rt.OutputAudioDelta:
                    while (pending := bridge.next_tool_call()) is not None:
                        assert self._pumps is not None
                        self._pumps.start_soon(self._run_tool, pending)
            self._wake()
            if bridge.playout.full:  # not reading: a quiet model is not a stalled one
                self._model_parked = True
                while bridge.playout.full:
                    await self._playout_room.park()
                self._model_parked, self._model_unparked = False, trio.current_time()

    async def _run_tool(self, pending: PendingTool) -> None:
        await self._started.wait()  # the tool gets the call's context
        context = self._bridge.context
        assert context is not None
        result = await run_tool(pending.tool, pending.arguments, context,
                                log_context=pending.call_id)
        self._bridge.tool_result(pending.call_id, result, trio.current_time())
        self._wake()

    def _push_model(self, out: Sender[rt.ClientEvent]) -> None:
        """Write what the bridge has for the model now, in the calling task, until a
        write leaves a backlog; as `_push_twilio` does."""
        bridge = self._bridge
        while not out.backlog and not self._owed_model and self._model_broken is None:
            event = bridge.next_to_model()
            if event is None:
                break
            try:
                out.send_nowait(event)
            except SocketClosed as exc:
                self._model_broken = exc  # the writer ends the connection
                break
            if out.backlog:
                self._owed_model = True
                break
            bridge.sent_to_model()
        if (out.backlog or self._model_broken) and self._to_model:
            self._to_model.unpark_all()

    async def _write_model(self, model: RealtimeConnection) -> None:
        """The model's writer: drain what `_push_model` left, then push more."""
        bridge = self._bridge
        out: Sender[rt.ClientEvent] = (
            model if isinstance(model, EventConnection) and model.nowait is not None
            else Queued(model.send))
        self._to_model_out, self._model_broken, self._owed_model = out, None, False
        try:
            while True:
                self._push_model(out)
                if self._model_broken is not None:
                    raise self._model_broken
                if not out.backlog:
                    await self._to_model.park()
                    continue
                await out.drain()
                if self._owed_model:
                    self._owed_model = False
                    bridge.sent_to_model()
        finally:
            self._to_model_out = None


async def run_call(
    twilio_socket: MessageSocket | WebSocketConnection,
    *,
    agent: Agent | AgentFactory | None = None,
    backend: RealtimeBackend | None = None,
    limits: CallLimits | None = None,
    on_event: Callable[[CallEvent], None] | None = None,
    authorize: Callable[[tw.Start], None] | None = None,
    on_raw: Callable[[ev.Raw], None] | None = None,
    twilio: TwilioControl | None = None,
    service_url: str | None = None,
    task_status: trio.TaskStatus[Call] = trio.TASK_STATUS_IGNORED,
) -> CallResult:
    """Bridge one accepted Twilio Media Streams WebSocket to a realtime model.

    `twilio_socket` is any WebSocket that sends and receives text: a trio-websocket
    connection, or anything with `send(str)`, `receive() -> str | None` and
    `aclose()` (see `callbridge.MessageSocket`). `backend` defaults to OpenAI's
    Realtime API configured from the environment. Returns when the call is over,
    with nothing left running; `on_event` sees what happens as it happens (a
    `callbridge.events.CallEvent` each). `on_raw` sees every message as it arrived,
    for what callbridge does not model (a `callbridge.events.Raw` each; nothing is
    made for it when unset).

    `agent` is an `Agent`, or a function of the call's `CallContext` returning one
    (sync or async), called once Twilio's `start` arrived: one service, an agent per
    dialled number. Then, or when the agent's instructions are a function of the
    context, the model connection opens after `start`.

    Started with `call = await nursery.start(run_call, socket, ...)`, it hands out
    the live `Call` as soon as the call is running.

    `authorize`, if given, is called with Twilio's `start` before the model is
    connected (without it the connection opens in parallel with waiting for
    `start`); raising `CallRefused` ends the call as `refused`, closing the Twilio
    socket with 1008 and never opening a model session.

    `twilio`, Twilio's REST API (`callbridge.twilio_rest.TwilioRest`), lets the call
    hang up through Twilio and transfer (`Call.hang_up`, `Call.transfer`, the
    `end_call` and `transfer_call` tools); `service_url` is the service's public
    `https://` base, for the `<Dial action>` that tells a caller a transfer failed.
    """
    call = Call(
        as_message_socket(twilio_socket),
        agent=agent or Agent(),
        backend=backend or OpenAIRealtime.from_env(),
        limits=limits or CallLimits(),
        on_event=on_event,
        authorize=authorize,
        on_raw=on_raw,
        twilio=twilio,
        service_url=service_url,
    )
    return await call._run(task_status)
