"""The service's Twilio callbacks: `<Dial action>`, answering-machine detection and call
status, each signed like the voice webhook; an outbound call's agent by name.

Through quart's test client (the app as hypercorn serves it, without sockets);
signatures come from the twilio SDK's `RequestValidator`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from callbridge import Agent, CallContext
from callbridge.app import _agent_by_name, create_app
from callbridge.config import Settings

TOKEN = "f3c1a9e2b7d84c6a9e0b1c2d3e4f5a6b"
PUBLIC = "https://bridge.example.com"
CALL_SID = "CA" + "a1" * 16
SDK = RequestValidator(TOKEN)


def app(**settings: Any) -> Any:
    return create_app(Settings(openai_api_key="sk-test", public_url=PUBLIC,
                               twilio_auth_token=TOKEN, **settings))


async def post(application: Any, path: str, form: Mapping[str, str], *,
               signed: bool = True) -> tuple[int, str]:
    headers = {"Host": "bridge.example.com"}
    if signed:
        headers["X-Twilio-Signature"] = SDK.compute_signature(f"{PUBLIC}{path}", dict(form))
    async with application.test_app() as test_app:
        response = await test_app.test_client().post(path, form=dict(form), headers=headers)
        return response.status_code, await response.get_data(as_text=True)


@pytest.mark.parametrize(("status", "said"), [
    ("no-answer", "Sorry, nobody is free right now. Goodbye."),
    ("busy", "Sorry, nobody is free right now. Goodbye."),
    ("completed", None),
])
async def test_dial_action_tells_the_caller_when_the_transfer_failed(
    status: str, said: str | None,
) -> None:
    path = "/dial-action?" + urlencode({"line": "Sorry, nobody is free right now. Goodbye."})
    code, body = await post(app(), path, {"CallSid": CALL_SID, "DialCallStatus": status})
    expected = VoiceResponse()
    if said is not None:
        expected.say(said)
    expected.hangup()
    assert (code, body) == (200, str(expected))


class LiveCall:
    """What the app needs of a live call to hand it an AMD result."""

    call_sid = CALL_SID

    def __init__(self) -> None:
        self.answered_by: list[str] = []

    def answered(self, answered_by: str) -> None:
        self.answered_by.append(answered_by)


async def test_amd_result_reaches_the_live_call_and_status_reaches_its_watcher() -> None:
    application = app()
    live = LiveCall()
    application.calls.add(live)
    statuses: list[str] = []
    application.status_watchers[CALL_SID] = lambda form: statuses.append(form["CallStatus"])
    amd = {"CallSid": CALL_SID, "AnsweredBy": "machine_end_beep",
           "MachineDetectionDuration": "4200"}
    assert await post(application, "/amd-status", amd) == (
        200, "machine_end_beep: told the live call\n")
    assert live.answered_by == ["machine_end_beep"]
    for status in ("ringing", "in-progress", "completed"):
        form = {"CallSid": CALL_SID, "CallStatus": status}
        assert (await post(application, "/call-status", form))[0] == 204
    assert statuses == ["ringing", "in-progress", "completed"]
    # a result for a call this worker does not run is answered, not an error
    other = amd | {"CallSid": "CA" + "b2" * 16}
    assert (await post(application, "/amd-status", other))[0] == 204


@pytest.mark.parametrize("path", ["/dial-action", "/amd-status", "/call-status"])
async def test_every_callback_is_refused_unsigned(path: str) -> None:
    code, body = await post(app(), path, {"CallSid": CALL_SID}, signed=False)
    assert (code, body) == (403, "invalid Twilio signature\n")


async def test_an_outbound_calls_agent_travels_as_a_stream_parameter() -> None:
    form = {"CallSid": CALL_SID, "From": "+15550100", "To": "+15550199"}
    code, body = await post(app(), "/incoming-call?agent=sales%3Aagent", form)
    stream = ET.fromstring(body).find("./Connect/Stream")
    assert code == 200 and stream is not None
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parameters["agent"] == "sales:agent"


async def test_a_call_gets_the_agent_it_names_only_if_the_service_lists_it() -> None:
    default, sales = Agent(name="default"), Agent(name="sales")

    def context(**parameters: str) -> CallContext:
        return CallContext(call_sid=CALL_SID, stream_sid="MZ1", account_sid="AC1",
                           parameters=parameters)

    named = {"sales:agent": sales}
    assert await _agent_by_name(named, default, context(agent="sales:agent")) is sales
    assert await _agent_by_name(named, default, context(agent="evil:agent")) is default
    assert await _agent_by_name(named, default, context()) is default

    async def factory(call: CallContext) -> Agent:
        return sales

    assert await _agent_by_name({}, factory, context()) is sales
