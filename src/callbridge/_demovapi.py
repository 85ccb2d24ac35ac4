"""`callbridge demo --backend vapi`: the demo call with VAPI's assistant as the agent.

With VAPI the assistant is VAPI's (`callbridge.vapi`): its prompt, tools and first
message are configured there, and callbridge's `Agent` does not reach it (the PCM
translation drops what the bridge would tell a realtime model: `callbridge.pcm`).
So this scenario is what a VAPI assistant does: it greets first (its first message);
the caller cuts in (VAPI's `speech-update` of the caller; the local platform adds
`user-interrupted` only while the assistant's response is still being generated, and
the greeting is done by then): callbridge clears Twilio's queue at once, but VAPI
cannot be told what the caller heard, so there is no truncation. The assistant
answers, the caller orders, and the assistant confirms, says goodbye and ends the
call with its own end-call function (VAPI's `status-update` `ended`): callbridge
ends the call, `hung_up`, once the goodbye has played, through Twilio's REST API.
No tool of callbridge's, no keypresses. The audio is 16-bit PCM at 16 kHz
(`VapiAudioFormat()`), transcoded both ways.

VAPI is `LocalVapi`: its REST API in memory, its call socket (`LocalPcmPlatform`,
the local model behind it) in memory or on a loopback WebSocket. The call, the
timeline and the report are `callbridge._demo`'s.
"""

from __future__ import annotations

from typing import Any

from ._demo import ANSWER, CALLER_LINES, GREETING, Scenario, _says
from .agent import Agent
from .local import Brain, LocalRealtimeServer, LocalVapi, Reply, ToolCall

__all__ = ["GOODBYE", "VAPI"]

GOODBYE = ("One large margherita, ready in twenty minutes. Thanks for calling Callbridge "
           "Pizza, goodbye!")


def _script() -> list[Reply | Brain]:
    """VAPI's assistant: its first message, its answer, its goodbye with its end-call."""
    return [_says(GREETING, 5.0, seed=0), _says(ANSWER, 1.8, seed=1),
            _says(GOODBYE, 4.4, 4, ToolCall("end_call", {}))]


def _platform(model: LocalRealtimeServer) -> LocalVapi:
    return LocalVapi(model=model, first_message=True)  # PCM 16 kHz: VapiAudioFormat()


def _control(message: dict[str, Any]) -> str | None:
    """A timeline line for what VAPI told callbridge (the assistant's turns and the
    transcripts are in the agent's lines already)."""
    kind, role, status = (message.get(k) for k in ("type", "role", "status"))
    if kind == "speech-update" and role == "user":
        return f"speech-update: the caller {status} speaking"
    if kind == "user-interrupted":
        return "user-interrupted: the caller cut the assistant off"
    if kind == "status-update" and status == "ended":
        return (f"status-update ended ({message.get('endedReason')}): VAPI hung up, "
                "the call ends once the assistant's audio has played")
    return None


VAPI = Scenario(
    backend="vapi", script=_script, caller_lines=CALLER_LINES, platform=_platform,
    agent=Agent(),  # nothing of callbridge's agent reaches VAPI's assistant
    about="about 13 s of call time, until VAPI's assistant hangs up; audio as PCM 16 kHz",
    control=_control,
    notes=("No truncation: VAPI cannot be told what the caller heard, so its assistant's "
           "conversation keeps all of the greeting (the caller's phone stopped playing it "
           "at once).",
           "No tools of callbridge's and no keypresses: the assistant is VAPI's (its prompt, "
           "tools and first message); it ended the call with its own end-call function."))
