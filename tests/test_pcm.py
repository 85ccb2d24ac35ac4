"""`callbridge.pcm.PcmConnection`, the translation between the core's events and a PCM
platform's socket, against a scripted platform end (in memory)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import trio

from callbridge import realtime as rt
from callbridge.local import LocalVapi
from callbridge.pcm import VAPI_CONTROLS, PcmConnection, PcmControls
from callbridge.testing import memory_socket_pair
from callbridge.vapi import VapiBackend
from callbridge.vapi_rest import VapiAudioFormat

FRAME = bytes(range(0, 256, 2)) + bytes(32)  # 160 bytes of μ-law


def pair(**options: Any) -> tuple[PcmConnection, Any]:
    ours, platform = memory_socket_pair()
    return PcmConnection(ours, controls=options.pop("controls", VAPI_CONTROLS), **options), platform


async def events(connection: PcmConnection, count: int) -> list[rt.ServerEvent]:
    got = []
    for _ in range(count):
        event = await connection.receive()
        assert event is not None
        got.append(event)
    return got


async def test_caller_audio_goes_up_as_pcm_at_the_platforms_rate() -> None:
    connection, platform = pair()
    for _ in range(10):
        await connection.send(rt.InputAudioBufferAppend(audio=base64.b64encode(FRAME).decode()))
    await connection.send(rt.SessionUpdate(session=rt.Session()))  # the platform's agent:
    await connection.send(rt.ResponseCreate())  # nothing of these goes up
    await connection.send(rt.ConversationItemTruncate(item_id="i", audio_end_ms=5))
    sent = []
    with trio.move_on_after(1):
        while True:
            sent.append(await platform.receive())
    assert all(isinstance(m, bytes) for m in sent)
    # 200 ms of caller audio: 16-bit at 16 kHz, less what the resampler still holds
    assert 0 < sum(len(m) for m in sent) <= 200 * 32
    assert sum(len(m) for m in sent) % 2 == 0


async def test_mulaw_passes_through_untouched() -> None:
    connection, platform = pair(encoding="mulaw", rate=8000)
    await connection.send(rt.InputAudioBufferAppend(audio=base64.b64encode(FRAME).decode()))
    assert await platform.receive() == FRAME
    await platform.send(FRAME)
    created, delta = await events(connection, 2)
    assert isinstance(created, rt.ResponseCreated) and isinstance(delta, rt.OutputAudioDelta)
    assert base64.b64decode(delta.delta) == FRAME
    assert (delta.response_id, delta.item_id) == (created.response_id, "item_1")


async def test_a_turn_of_the_agent_barge_in_and_the_next_turn() -> None:
    connection, platform = pair(encoding="mulaw", rate=8000)
    await platform.send(FRAME)
    await platform.send(FRAME)
    await platform.send(json.dumps({"type": "speech-update", "status": "started",
                                    "role": "user"}))
    await platform.send(json.dumps({"type": "user-interrupted", "turnId": "t1"}))  # (once)
    await platform.send(json.dumps({"type": "speech-update", "status": "stopped",
                                    "role": "user"}))
    await platform.send(FRAME)
    await platform.send(json.dumps({"type": "speech-update", "status": "stopped",
                                    "role": "assistant"}))
    got = await events(connection, 10)
    assert [type(e).__name__ for e in got] == [
        "ResponseCreated", "OutputAudioDelta", "OutputAudioDelta",
        "OutputAudioDone", "ResponseDone", "SpeechStarted", "SpeechStopped",
        "ResponseCreated", "OutputAudioDelta", "OutputAudioDone"]
    assert isinstance(got[4], rt.ResponseDone) and got[4].status == "cancelled"
    assert got[7].response_id == "resp_2" != got[0].response_id  # type: ignore[attr-defined]
    [done] = await events(connection, 1)
    assert isinstance(done, rt.ResponseDone) and done.status == "completed"


async def test_transcripts_reach_the_records() -> None:
    connection, platform = pair(encoding="mulaw", rate=8000)
    await platform.send(FRAME)
    for role, text in [("assistant", "Hello!"), ("user", "Hi."), ("user", "partial")]:
        await platform.send(json.dumps({"type": "transcript", "role": role, "transcript": text,
                                        "transcriptType": "partial" if text == "partial"
                                        else "final"}))
    await platform.aclose()
    got = [e async for e in _all(connection)]
    said = [e for e in got if isinstance(e, rt.OutputAudioTranscriptDone)]
    heard = [e for e in got if isinstance(e, rt.InputTranscriptionCompleted)]
    assert [(e.item_id, e.transcript) for e in said] == [("item_1", "Hello!")]
    assert [e.transcript for e in heard] == ["Hi."]  # the partial one is not kept


async def _all(connection: PcmConnection) -> Any:
    while (event := await connection.receive()) is not None:
        yield event


@pytest.mark.parametrize("ending", [{"type": "status-update", "status": "ended",
                                     "endedReason": "assistant-ended-call"},
                                    {"type": "hangup"}, None])
async def test_the_platform_ends_the_call(ending: dict[str, str] | None) -> None:
    connection, platform = pair(encoding="mulaw", rate=8000)
    await platform.send(FRAME)
    if ending is not None:
        await platform.send(json.dumps(ending))
    else:
        await platform.aclose()  # a VAPI call's socket is for one connection
    got = [e async for e in _all(connection)]
    assert isinstance(got[-1], rt.ResponseDone)  # the turn under way is closed first
    assert connection.hung_up
    await connection.hang_up()  # nothing to tell a platform that ended the call
    if ending is not None:
        with trio.move_on_after(1):
            assert await platform.receive() is None


async def test_without_close_ends_call_a_close_is_a_lost_connection() -> None:
    connection, platform = pair(controls=PcmControls(), encoding="mulaw", rate=8000)
    await platform.aclose()
    assert await connection.receive() is None and not connection.hung_up


async def test_we_end_the_call_with_end_call_once() -> None:
    connection, platform = pair()
    await connection.hang_up()
    assert json.loads(await platform.receive()) == {"type": "end-call"}


async def test_a_bad_text_frame_is_logged_and_lost_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    connection, platform = pair(encoding="mulaw", rate=8000)
    await platform.send("not json")
    await platform.send("[1, 2]")
    await platform.send(json.dumps({"type": "model-output", "output": "x"}))  # not ours
    await platform.send(FRAME)
    [created, delta] = await events(connection, 2)
    assert isinstance(created, rt.ResponseCreated) and isinstance(delta, rt.OutputAudioDelta)
    assert [r.getMessage() for r in caplog.records if r.name == "callbridge.pcm"] == [
        "the platform sent a text frame that is not a JSON object: 'not json'",
        "the platform sent a text frame that is not a JSON object: '[1, 2]'"]


def test_the_formats_a_connection_takes() -> None:
    ours, _ = memory_socket_pair()
    with pytest.raises(ValueError, match="mulaw at 8000"):
        PcmConnection(ours, controls=VAPI_CONTROLS, encoding="mulaw", rate=16000)
    with pytest.raises(ValueError, match="expected pcm_s16le"):
        PcmConnection(ours, controls=VAPI_CONTROLS, encoding="opus", rate=16000)


async def test_vapi_refusing_the_call_is_a_model_connect_error() -> None:
    """A bad key: refused (no retry would help); VAPI down: retried by the call."""
    from callbridge.backend import ModelConnectError
    from callbridge.vapi_rest import VapiRest

    vapi = LocalVapi()
    wrong = VapiBackend(rest=VapiRest("not-the-key", base_url="http://vapi.local",
                                      transport=vapi.rest.transport()),
                        assistant_id=LocalVapi.ASSISTANT_ID, open_socket=vapi.platform.open)
    with pytest.raises(ModelConnectError) as refused:
        async with wrong.connect("x"):
            pass
    assert refused.value.refused
    vapi.rest.fail_next(500, "down for maintenance")
    with pytest.raises(ModelConnectError) as failed:
        async with vapi.connect("x"):
            pass
    assert not failed.value.refused
    assert [r.status for r in vapi.rest.requests] == [401, 500]


def test_the_audio_format_reaches_the_rest_request() -> None:
    assert VapiAudioFormat.mulaw().to_json() == {"format": "mulaw", "container": "raw",
                                                 "sampleRate": 8000}
