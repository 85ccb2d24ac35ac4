"""An outbound call placed from the CLI, through the real service, against the local Twilio.

`callbridge call` in a subprocess asks the local Twilio (served on loopback) to call
a number; the platform rings, POSTs the service's signed `/incoming-call` webhook,
opens the signed media stream to the service (`hypercorn --worker-class trio
callbridge.app:app` in its own process), where the agent talks through the local
model; the callee hangs up once it heard the agent. What must hold: the CLI prints
the statuses and exits 0, the callee heard the agent, every callback was signed
and accepted, and answering-machine detection reaches the live call.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

import pytest
import trio
from test_service import LocalRealtimeServer

from callbridge.testing import (
    LocalTwilio,
    OutboundCall,
    TwilioCaller,
    Utterance,
    answering_machine,
    hypercorn_process,
    serve_realtime_websocket,
)

CALLEE, NUMBER = "+14155550123", "+14155550199"


def callee(call: OutboundCall, *, listens: float = 1.0) -> TwilioCaller:
    """Says hello, listens to the agent, hangs up `listens` s after its audio began."""
    return TwilioCaller(utterances=[Utterance(at=0.2, duration=0.4)], hangup_at=30.0,
                        hangup_after_audio=listens, call_sid=call.sid)


async def place(answer: Any, *cli_args: str) -> tuple[Any, str, str, LocalTwilio]:
    model = LocalRealtimeServer(default_reply_ms=800)
    twilio = LocalTwilio(answer=answer)
    async with twilio, trio.open_nursery() as nursery:
        rest_url = await nursery.start(twilio.serve)
        port = await nursery.start(partial(serve_realtime_websocket, model))
        env = {"OPENAI_API_KEY": "sk-test-not-a-key",
               "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
               "CALLBRIDGE_GREETING": "Say hello: this is Pizza Co. calling.",
               "TWILIO_ACCOUNT_SID": twilio.account_sid,
               "TWILIO_AUTH_TOKEN": twilio.auth_token,
               "CALLBRIDGE_TWILIO_API_URL": rest_url}
        async with hypercorn_process("callbridge.app:app", env) as server:
            done = await trio.run_process(
                [sys.executable, "-m", "callbridge", "call", CALLEE, "--from", NUMBER,
                 "--service-url", f"http://{server.host}", *cli_args],
                env=env, capture_stdout=True, capture_stderr=True, check=False)
            log = server.log()
        nursery.cancel_scope.cancel()
    return done, done.stdout.decode(), log, twilio


@pytest.mark.slow
async def test_an_outbound_call_from_the_cli_talks_to_the_agent() -> None:
    with trio.fail_after(120):
        done, out, log, twilio = await place(callee)
    assert done.returncode == 0, (out, done.stderr.decode(), log)
    [call] = twilio.calls.values()
    statuses = [line.rsplit(": ", 1)[1] for line in out.splitlines()]
    assert statuses[0] == "queued" and statuses[-1] == "completed", out
    assert call.to == CALLEE and call.from_ == NUMBER
    # the service answered the webhook and every status callback, signatures checked
    kinds = [(c.kind, c.status) for c in twilio.callbacks]
    assert ("voice", 200) in kinds
    assert all(status in (200, 204) for _, status in kinds), kinds  # none refused (403)
    assert {c.form.get("CallStatus") for c in twilio.callbacks if c.kind == "status"} >= {
        "ringing", "in-progress", "completed"}
    [stream] = call.streams
    assert stream.caller.heard_audio()  # the agent spoke to the callee
    assert stream.caller.violations == []


@pytest.mark.slow
@pytest.mark.parametrize(("answer", "verdict"), [
    (lambda call: answering_machine(greeting_s=1.5, message_s=2.0), "machine_end_beep"),
    (partial(callee, listens=5.0), "human"),  # on the line until the verdict came
], ids=["machine", "human"])
async def test_answering_machine_detection_reaches_the_live_call(answer: Any,
                                                                 verdict: str) -> None:
    with trio.fail_after(120):
        done, out, log, twilio = await place(answer, "--machine-detection")
    assert done.returncode == 0, (out, done.stderr.decode(), log)
    [amd] = [c for c in twilio.callbacks if c.kind == "amd"]
    assert amd.form["AnsweredBy"] == verdict
    assert (amd.status, amd.body) == (200, f"{verdict}: told the live call\n")
