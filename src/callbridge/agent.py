"""The agent: who the model is on this call, as plain data, and what it knows of the call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from . import realtime as rt
from . import twilio as tw

if TYPE_CHECKING:
    from .tools import Tool

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "PHONE_TURN_DETECTION",
    "Agent",
    "AgentFactory",
    "CallContext",
    "Guardrail",
]

log = logging.getLogger("callbridge.agent")

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant on a phone call. Speak naturally and briefly, "
    "one or two sentences at a time, and let the caller interrupt you."
)

#: Server VAD for narrowband phone audio: a little less eager than the API default
#: (line noise and breathing trip 0.5), the default 300 ms of lead-in, and a pause
#: long enough that callers can finish a thought. Every field is set explicitly:
#: omitted fields fall back to server defaults that have changed over time.
PHONE_TURN_DETECTION = rt.TurnDetection(
    type="server_vad",
    threshold=0.6,
    prefix_padding_ms=300,
    silence_duration_ms=600,
    create_response=True,
    interrupt_response=True,
)


@attrs.frozen(kw_only=True)
class CallContext:
    """Who is calling, as Twilio's `start` tells it.

    `from_number`, `to_number` come from the stream's `from` and `to` parameters
    (callbridge's webhook passes Twilio's `From` and `To` that way); `parameters` are
    all of the stream's `<Parameter>`s (`start.customParameters`).
    """

    call_sid: str
    stream_sid: str
    account_sid: str
    from_number: str | None = None
    to_number: str | None = None
    parameters: Mapping[str, str] = attrs.field(factory=dict)
    #: when the call's stream opened, as Unix time
    started_at: float = 0.0
    #: the live `callbridge.Call` (to end it, or talk to the model from a tool or a
    #: hook); None outside a running call
    live: Any = attrs.field(default=None, eq=False, repr=False)

    @property
    def answered_by(self) -> str | None:
        """On an outbound call with answering-machine detection, who answered
        (`human`, `machine_start`, `machine_end_beep`, `fax`, `unknown`...), once
        Twilio said; None until then, or without detection."""
        return None if self.live is None else self.live.answered_by

    @classmethod
    def from_start(cls, start: tw.Start, *, started_at: float, live: Any = None) -> CallContext:
        params = dict(start.custom_parameters)
        return cls(call_sid=start.call_sid, stream_sid=start.stream_sid,
                   account_sid=start.account_sid, from_number=params.get("from") or None,
                   to_number=params.get("to") or None, parameters=params,
                   started_at=started_at, live=live)


#: an output guardrail: sees the agent's words of one item as they stream, with the
#: call's context; returns None or False to let them pass, True to cut the agent off,
#: or a line for the agent to say instead
Guardrail = Callable[[str, CallContext], "bool | str | None"]


def _as_tools(entries: Iterable[Any]) -> tuple[Tool | Mapping[str, Any], ...]:
    from .tools import as_tools  # tools.py imports this module

    return as_tools(entries)


@attrs.frozen(kw_only=True)
class Agent:
    """Instructions, voice, tools and turn-taking for a realtime speech-to-speech model.

    `instructions` is a string, or a function of the call's `CallContext` returning
    one (the model connection then waits for Twilio's `start`, which brings the
    context). `greeting`, when set, is sent as the instructions of a first
    `response.create` so the agent speaks first; otherwise it waits for the caller.
    `tools` are `@callbridge.tool` functions (a plain function is wrapped), or tool
    definitions passed to the session as they are (e.g. `{"type": "mcp", ...}` for a
    hosted MCP server).
    """

    name: str = "agent"
    instructions: str | Callable[[CallContext], str] = DEFAULT_INSTRUCTIONS
    voice: str = "marin"
    model: str = "gpt-realtime"
    greeting: str | None = None
    turn_detection: rt.TurnDetection = PHONE_TURN_DETECTION
    noise_reduction: str | None = "near_field"
    transcription: Mapping[str, Any] | None = None
    speed: float | None = None
    #: keypresses reach the model as a user message ("The caller pressed 1 2 3 #.")
    #: followed by a response, once the caller paused this many seconds or pressed
    #: `dtmf_terminator`; None: they do not reach the model
    dtmf_timeout: float | None = 2.0
    dtmf_terminator: str | None = "#"
    #: takes the collected digits instead of the model (e.g. a PIN the model must not
    #: hear): called as `on_dtmf(digits, call)` with the live `Call`
    on_dtmf: Callable[[str, Any], None] | None = None
    #: told who answered an outbound call with answering-machine detection, as
    #: `on_answered_by(answered_by, call)` with the live `Call` (e.g. to leave a
    #: voicemail after the beep: `machine_end_beep`)
    on_answered_by: Callable[[str, Any], None] | None = None
    tools: tuple[Tool | Mapping[str, Any], ...] = attrs.field(default=(), converter=_as_tools)
    tool_choice: str = "auto"
    #: answers a hosted MCP server's `mcp_approval_request` (the request item, the
    #: call's context) with True to approve; None: every request is denied (logged)
    mcp_approval: Callable[[Mapping[str, Any], CallContext], bool] | None = None
    #: see `Guardrail`; one that raises is logged and does not trip
    guardrails: tuple[Guardrail, ...] = attrs.field(default=(), converter=tuple)
    #: seconds of silence, once the agent's audio has played, before the agent is
    #: prompted to check in (`idle_message`); after `idle_prompts` such prompts go
    #: unanswered it says goodbye (`idle_goodbye`) and the call ends. None: never
    idle_timeout: float | None = 8.0
    idle_prompts: int = 2
    idle_message: str = ("The caller has been silent for a while. Briefly ask whether "
                         "they are still there.")
    idle_goodbye: str = ("The caller has not answered. Say a short, polite goodbye; "
                         "the call will end.")
    #: what the agent says when the call reaches `CallLimits.max_call_s`, before it ends
    time_limit_line: str = ("We have reached the time limit for this call. Thank you for "
                            "calling. Goodbye.")
    #: what the caller hears (Twilio's `<Say>`, through the REST API) when the model
    #: cannot be reached or refuses the call, before it ends
    apology: str = ("Sorry, we are having technical trouble. Please call again in a few "
                    "minutes. Goodbye.")

    def find_tool(self, name: str) -> Tool | None:
        """The function tool called `name`, if this agent has one."""
        for tool in self.tools:
            if not isinstance(tool, Mapping) and tool.name == name:
                return tool
        return None

    def guard(self, text: str, context: CallContext) -> bool | str:
        """Run the guardrails on the agent's words so far: False to let them pass,
        True to cut the agent off, or the line to say instead."""
        for guardrail in self.guardrails:
            try:
                verdict = guardrail(text, context)
            except Exception:  # the application's bug: it must not end the call
                log.exception("guardrail %r raised; it does not trip", guardrail)
                continue
            if verdict:
                return verdict if isinstance(verdict, str) else True
        return False

    def approves_mcp(self, item: Mapping[str, Any], context: CallContext) -> bool:
        """The answer to a hosted MCP server's `mcp_approval_request` item."""
        if self.mcp_approval is None:
            log.warning("denied MCP tool %s of %s: agent %r has no mcp_approval",
                        item.get("name"), item.get("server_label"), self.name)
            return False
        try:
            return bool(self.mcp_approval(item, context))
        except Exception:
            log.exception("mcp_approval raised: denied")
            return False

    def handoff_refusal(self, to: Agent, *, spoken: bool) -> str | None:
        """Why the conversation cannot go on as agent `to`, if it cannot."""
        if to.model != self.model:
            return f"the model cannot change during a call ({self.model} to {to.model})"
        if to.voice != self.voice and spoken:
            return (f"the voice cannot change once the agent has spoken ({self.voice} to "
                    f"{to.voice}): give agent {to.name!r} the voice {self.voice!r}")
        return None

    def tool_definitions(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(t if isinstance(t, Mapping) else t.definition() for t in self.tools)

    @property
    def needs_context(self) -> bool:
        """Its session cannot be described before the call's `CallContext` is known."""
        return callable(self.instructions)

    @property
    def auto_cancel(self) -> bool:
        """The session cancels an in-progress response when the caller speaks."""
        return self.turn_detection.interrupt_response is not False

    def session_update(self, context: CallContext | None = None) -> rt.SessionUpdate:
        """The GA `session.update` for a phone call: μ-law in and out, no transcoding.
        `context` is required when the instructions are a function of it."""
        instructions = self.instructions
        if callable(instructions):
            if context is None:
                raise ValueError("these instructions need the call's context (after `start`)")
            instructions = instructions(context)
            if not isinstance(instructions, str):
                raise TypeError(f"instructions(context) returned {type(instructions).__name__}, "
                                "not a string")
        return rt.SessionUpdate(
            session=rt.Session(
                type="realtime",
                model=self.model,
                instructions=instructions,
                output_modalities=("audio",),
                audio=rt.AudioConfig(
                    input=rt.AudioInput(
                        format=rt.AudioFormat(type="audio/pcmu"),
                        turn_detection=self.turn_detection,
                        noise_reduction=(
                            {"type": self.noise_reduction} if self.noise_reduction else None
                        ),
                        transcription=self.transcription,
                    ),
                    output=rt.AudioOutput(
                        format=rt.AudioFormat(type="audio/pcmu"), voice=self.voice, speed=self.speed
                    ),
                ),
                tools=self.tool_definitions() if self.tools else None,
                tool_choice=self.tool_choice if self.tools else None,
            )
        )

    def dtmf_message(self, digits: str) -> rt.ConversationItemCreate:
        """The user message that tells the model which keys the caller pressed."""
        text = f"The caller pressed {' '.join(digits)}."
        return rt.ConversationItemCreate(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]})



#: picks the agent for a call from its context (sync or async): one service, an agent
#: per dialled number
AgentFactory = Callable[[CallContext], Agent | Awaitable[Agent]]
