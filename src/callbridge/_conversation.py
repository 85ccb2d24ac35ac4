"""Whose turn it is, and what the agent does between turns: the `Conversation` sub-state.

Theory of operation
-------------------
**One response at a time.** The Realtime API lets one response write to the
conversation at a time: a `response.create` while one is active is refused with
`conversation_already_has_active_response`. So a response the bridge wants (after
keypresses, tool outputs, an idle prompt) goes out only when no response is open and
none of ours is on its way; otherwise it waits for the open one's `response.done`.
Ours carry `metadata: {"callbridge": <purpose>}` (`greeting`, `reply`, `filler`,
`line`, `idle`, `goodbye`), which `response.created` echoes, so a response the
server started by itself (server VAD) is never taken for ours. When the caller
starts a turn (`speech_started`), server VAD answers it with everything in the
conversation so far, so a waiting request is dropped, and a request made before
that turn was answered is already answered by it: never a double response. A
request the server refused anyway (it raced a VAD response) waits for the next
`response.done`, unless the caller's turn answers it.

**Tools.** A function call is complete at `response.function_call_arguments.done`;
the call layer runs it at once, while audio flows. Its output goes into the
conversation as soon as it is ready (a `function_call_output` item may be added
while a response is active), and exactly one response is requested once every call
of that response has its output *and* the response is done. Every call gets an
output, always: a call left unanswered stalls the conversation. Hosted MCP
approval requests are answered the same way. A tool may have a filler line, said
by an out-of-band response (`conversation: "none"`) if the tool is still running
`filler_after` seconds on and no response is open; when the real answer is due
while a filler is still being generated, the filler is cancelled: it never delays
the answer.

**Idle caller.** Once nothing is happening (no response open, wanted or on its way,
no tool running, the caller silent, and every bit of the agent's audio confirmed
played) for `Agent.idle_timeout` seconds, the agent is prompted to check in; after
`Agent.idle_prompts` prompts the caller did not answer, it says goodbye, and the
call ends once that has played (`finished`). The caller speaking resets the count.

**Keypresses** are collected until the caller pauses (`Agent.dtmf_timeout`) or
presses the terminator; the bridge delivers the whole entry.

Like `Playback`, this is a sub-state of the `Bridge`: synchronous, no clock (`now`
is an argument). It returns the client events to queue; the bridge queues them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from . import realtime as rt
from .agent import Agent, CallContext
from .events import EndReason

if TYPE_CHECKING:
    from .tools import Tool

__all__ = ["OURS", "Conversation"]

#: the `response.metadata` key that marks a response as ours, with its purpose
OURS = "callbridge"

#: how long a goodbye may take to play before the call ends anyway
GOODBYE_LIMIT = 30.0


@attrs.define
class _Batch:
    """The function calls (and MCP approval requests) of one response."""

    pending: set[str] = attrs.field(factory=set)
    done: bool = False  # its `response.done` came


def system_message(text: str) -> rt.ConversationItemCreate:
    return rt.ConversationItemCreate(item={
        "type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]})


class Conversation:
    """Response, tool-call, idle and keypress state of one call; see the module
    docstring. `agent` is the call's agent (None until it is chosen)."""

    def __init__(self, agent: Agent | None) -> None:
        self.agent = agent
        self._open: dict[str, str] = {}  # response id -> our purpose ("": the server's)
        self._requested: deque[tuple[str, Mapping[str, Any] | None]] = deque()  # on their way
        self._wanted: tuple[str, Mapping[str, Any] | None] | None = None
        self._cancelling: set[str] = set()  # fillers we cancelled
        self._connected = False
        self._caller_turn = False  # the caller spoke; server VAD has not answered yet
        self._speaking = False  # between `speech_started` and `speech_stopped`
        self._batches: dict[str, _Batch] = {}
        self._calls: dict[str, str] = {}  # call id -> its response id
        self._fillers: dict[str, tuple[float, str]] = {}  # call id -> (when, line)
        self._digits = ""
        self._dtmf_at: float | None = None
        self._idle_at: float | None = None
        self._unanswered = 0  # idle prompts in a row the caller has not answered
        #: idle prompts so far, the goodbye included
        self.prompts = 0
        self._ending: tuple[EndReason, float] | None = None
        #: set once the call should end (the goodbye played): the reason
        self.finished: EndReason | None = None

    @property
    def ending(self) -> EndReason | None:
        """The call ends once the goodbye under way has played, for this reason."""
        return None if self._ending is None else self._ending[0]

    @property
    def next_deadline(self) -> float | None:
        """When `tick` must be called next (None: no timer is running)."""
        dtmf, idle = self._dtmf_at, self._idle_at
        if not self._fillers and self._ending is None:  # the usual case: asked per frame
            return idle if dtmf is None else dtmf if idle is None else min(dtmf, idle)
        times = [t for t in (dtmf, idle) if t is not None]
        times += [when for when, _ in self._fillers.values()]
        if self._ending is not None:
            times.append(self._ending[1])
        return min(times) if times else None

    # --- responses -------------------------------------------------------------------

    def request(self, purpose: str = "reply",
                body: Mapping[str, Any] | None = None) -> list[rt.ClientEvent]:
        """A response is wanted: the events to send now (maybe none: it waits, or the
        caller's pending turn answers it)."""
        if purpose == "reply" and (self._caller_turn or self._ending is not None):
            return []  # the caller's turn answers it, or the call is ending
        if self._open or self._requested or not self._connected:
            if self._wanted is None or purpose != "reply":
                self._wanted = (purpose, body)
            return self._cancel_fillers()
        return [self._create(purpose, body)]

    def _create(self, purpose: str, body: Mapping[str, Any] | None) -> rt.ResponseCreate:
        self._requested.append((purpose, body))
        return rt.ResponseCreate(response={**(body or {}), "metadata": {OURS: purpose}})

    def _cancel_fillers(self) -> list[rt.ClientEvent]:
        fillers = [rid for rid, purpose in self._open.items()
                   if purpose == "filler" and rid not in self._cancelling]
        if fillers and len(fillers) == len(self._open):
            self._cancelling.update(fillers)
            return [rt.ResponseCancel(response_id=rid) for rid in fillers]
        return []

    def send_waiting(self) -> list[rt.ClientEvent]:
        """The response that waited, if it can go now."""
        if self._wanted is None or self._open or self._requested or not self._connected:
            return []
        (purpose, body), self._wanted = self._wanted, None
        return [self._create(purpose, body)]

    def connected(self, *, first: bool) -> list[rt.ClientEvent]:
        """A model connection opened (after its `session.update`): the greeting, on the
        first. A response that waited for the connection follows `send_waiting`."""
        self._open.clear()
        self._requested.clear()
        self._cancelling.clear()
        self._caller_turn = self._speaking = False
        self._connected = True
        events: list[rt.ClientEvent] = []
        if not first:  # the old session's requests named its conversation; its calls are
            self._wanted = None  # restored (`History`), and their responses are over
            for response_id, batch in list(self._batches.items()):
                batch.done = True
                if not batch.pending:  # answered, but its response never got to end
                    del self._batches[response_id]
                    self._wanted = ("reply", None)
            self._fillers.clear()
        elif self.agent is not None and self.agent.greeting is not None:
            events.append(self._create("greeting", {"instructions": self.agent.greeting}))
        return events

    def created(self, response: Mapping[str, Any]) -> str:
        """A response started; its purpose ("" for one the server started itself)."""
        metadata = response.get("metadata")
        tag = metadata.get(OURS) if isinstance(metadata, Mapping) else None
        purpose = ""
        if tag is not None:
            purpose = str(tag)
            for i, (requested, _) in enumerate(self._requested):
                if requested == purpose:
                    del self._requested[i]
                    break
        elif "metadata" not in response and self._requested:
            # lenient: a server that does not echo metadata started our oldest request
            purpose = self._requested.popleft()[0]
        self._open[str(response.get("id", ""))] = purpose
        self._caller_turn = False
        return purpose

    def done(self, response_id: str) -> list[rt.ClientEvent]:
        """A response ended (whatever its status)."""
        self._open.pop(response_id, None)
        self._cancelling.discard(response_id)
        events: list[rt.ClientEvent] = []
        batch = self._batches.get(response_id)
        if batch is not None:
            batch.done = True
            events += self._answered(response_id, batch)
        return events + self.send_waiting()

    def rejected(self) -> list[rt.ClientEvent]:
        """Our oldest `response.create` was refused (a response was already active):
        it waits for that one to end, unless the caller's turn answers it."""
        if not self._requested:
            return []
        purpose, body = self._requested.popleft()
        if not (self._caller_turn and purpose == "reply") and self._wanted is None:
            self._wanted = (purpose, body)
        return self.send_waiting()

    def caller_spoke(self) -> None:
        """The caller started a turn: server VAD answers it, not a waiting request."""
        create = self.agent is None or self.agent.turn_detection.create_response is not False
        self._caller_turn = create
        self._speaking = True
        if self._wanted is not None and create:
            self._wanted = None
        self._unanswered = 0
        if self._ending is not None and self._ending[0] is EndReason.IDLE:
            self._ending = None  # they are there after all

    def caller_stopped(self) -> None:
        self._speaking = False

    # --- tools ---------------------------------------------------------------------------

    def function_call(self, response_id: str, call_id: str, now: float,
                      tool: Tool | None = None) -> bool:
        """A call (or MCP approval request) of `response_id` needs an output. False:
        already known. `tool`: the one called, whose filler line may be due."""
        if call_id in self._calls:
            return False
        self._batches.setdefault(response_id, _Batch()).pending.add(call_id)
        self._calls[call_id] = response_id
        if tool is not None and tool.filler_after is not None:
            self._fillers[call_id] = (now + tool.filler_after, tool.filler)
        return True

    def output(self, call_id: str, item: Mapping[str, Any]) -> list[rt.ClientEvent]:
        """The output `item` of a call: into the conversation now, and the response
        after it once the call's whole response is answered. Nothing for a call the
        conversation does not know (an old session's)."""
        response_id = self._calls.pop(call_id, None)
        self._fillers.pop(call_id, None)
        if response_id is None:
            return []
        events: list[rt.ClientEvent] = [rt.ConversationItemCreate(item=item)]
        batch = self._batches[response_id]
        batch.pending.discard(call_id)
        return events + self._answered(response_id, batch)

    def _answered(self, response_id: str, batch: _Batch) -> list[rt.ClientEvent]:
        if not batch.done or batch.pending:
            return []
        del self._batches[response_id]
        return self.request("reply")

    def mcp_approval(self, response_id: str, item: Mapping[str, Any], context: CallContext | None,
                     now: float) -> list[rt.ClientEvent]:
        """A hosted MCP server asks to run a tool: `Agent.mcp_approval` answers (no
        context yet, or no callback: denied), like a function call's output."""
        request_id = str(item.get("id", ""))
        if self.agent is None or not self.function_call(response_id, request_id, now):
            return []
        approve = context is not None and self.agent.approves_mcp(item, context)
        return self.output(request_id, {
            "type": "mcp_approval_response", "id": f"mcpa_{request_id}"[:32],
            "approval_request_id": request_id, "approve": approve})

    @property
    def quiet(self) -> bool:
        """Between turns: no response open, asked for or waiting, no tool running, the
        caller not speaking nor waiting for an answer (with the audio all played, a
        moment to switch model sessions unnoticed)."""
        return not (self._open or self._requested or self._wanted or self._calls
                    or self._caller_turn or self._speaking)

    @property
    def tools_running(self) -> bool:
        return bool(self._calls)

    # --- time ----------------------------------------------------------------------------

    def tick(self, now: float) -> list[rt.ClientEvent]:
        """Time passed: fillers, idle prompts and the end of a goodbye that was due."""
        events: list[rt.ClientEvent] = []
        for call_id, (when, line) in list(self._fillers.items()):
            if when <= now:
                del self._fillers[call_id]
                if not (self._open or self._requested or self._caller_turn):
                    events.append(self._create("filler", {
                        "conversation": "none", "tool_choice": "none",
                        "instructions": f"Say this, briefly and nothing else: {line}"}))
        if self._idle_at is not None and self._idle_at <= now:
            self._idle_at = None
            events += self._idle_prompt(now)
        if self._ending is not None and self._ending[1] <= now:
            self.finished = self._ending[0]
        return events

    def _idle_prompt(self, now: float) -> list[rt.ClientEvent]:
        agent = self.agent
        assert agent is not None
        self.prompts += 1
        if self._unanswered < agent.idle_prompts:
            self._unanswered += 1
            return [system_message(agent.idle_message), *self.request("idle")]
        return [system_message(agent.idle_goodbye), *self.end_after_goodbye(EndReason.IDLE, now)]

    def end_after_goodbye(self, reason: EndReason, now: float,
                          say: str | None = None) -> list[rt.ClientEvent]:
        """Have the agent speak once more (`say`: exactly this), then end the call with
        `reason` once that has played (or `GOODBYE_LIMIT` seconds on, whichever first)."""
        self.end_after_playout(reason, now)
        body = None if say is None else {"instructions": f"Say exactly this: {say}"}
        return self.request("goodbye", body)

    def end_after_playout(self, reason: EndReason, now: float) -> None:
        """End the call with `reason` once the agent's words under way have played:
        the response being generated, the tool calls it made, and every bit of audio
        confirmed played (within `GOODBYE_LIMIT` seconds). The caller's own turn is not
        waited for, and no reply is asked for meanwhile. The first reason counts."""
        if self._ending is None:
            self._ending = (reason, now + GOODBYE_LIMIT)
            self._idle_at = None
            if self._wanted is not None and self._wanted[0] == "reply":
                self._wanted = None  # no more replies

    def settle(self, now: float, *, playing: bool) -> None:
        """Re-check the idle timer and an ending that may be due; call when something
        may have changed them. `playing`: the agent's audio is not all confirmed."""
        speaking = bool(playing or self._open or self._requested or self._calls)
        if self._ending is not None:
            if not (speaking or self._wanted):  # a goodbye may wait for its turn
                self.finished = self._ending[0]
            return
        if speaking or self._wanted or self._caller_turn or self._speaking:
            self._idle_at = None
        elif self._idle_at is None and self._connected and self.agent is not None:
            timeout = self.agent.idle_timeout
            self._idle_at = None if timeout is None else now + timeout

    # --- keypresses ------------------------------------------------------------------------

    def keypress(self, digit: str, now: float) -> str | None:
        """A key; the whole entry when it ends with this one (the terminator). Keys
        are not collected when the agent's `dtmf_timeout` is None."""
        agent = self.agent
        if agent is None or agent.dtmf_timeout is None:
            return None
        self._digits += digit
        if digit == agent.dtmf_terminator:
            return self._entry()
        self._dtmf_at = now + agent.dtmf_timeout
        return None

    def keypress_tick(self, now: float) -> str | None:
        """Time passed: the entry, if the caller paused long enough."""
        if self._dtmf_at is not None and now >= self._dtmf_at:
            return self._entry()
        return None

    def _entry(self) -> str:
        digits, self._digits, self._dtmf_at = self._digits, "", None
        return digits

