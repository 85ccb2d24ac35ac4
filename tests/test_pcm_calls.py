"""Whole calls against either kind of voice platform, on virtual time: the local model
in OpenAI mode, and the same model behind a local VAPI (PCM mode: 16-bit PCM at
16 kHz, or μ-law at 8 kHz, transcoded as it streams). The same barge-in guarantees,
hang-ups from either side, the caller's audio kept while the platform's socket
opens, a platform that stalls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from callbridge import Agent, CallLimits, EndReason, run_call
from callbridge import events as ev
from callbridge import twilio as tw
from callbridge.backend import RealtimeConnection
from callbridge.local import (
    LocalPcmPlatform,
    LocalRealtimeServer,
    LocalVapi,
    Reply,
    ToolCall,
    scripted_brain,
)
from callbridge.local._vapirest import LocalVapiRest
from callbridge.testing import (
    TwilioCaller,
    Utterance,
    babble,
    memory_socket_pair,
    serve_pcm_websocket,
)
from callbridge.vapi import VapiBackend
from callbridge.vapi_rest import VapiAudioFormat, VapiRest

KINDS = ["openai", "vapi-pcm16k", "vapi-mulaw"]
GREETER = Agent(greeting="Greet the caller.")


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def platform(kind: str, model: LocalRealtimeServer) -> Any:
    """The backend of `kind` around `model` (in PCM mode the agent speaks first, as a
    VAPI assistant with a first message does: `GREETER`'s greeting in OpenAI mode)."""
    if kind == "openai":
        return model
    audio = VapiAudioFormat.mulaw() if kind == "vapi-mulaw" else VapiAudioFormat()
    return LocalVapi(model=model, audio=audio, first_message=True)


class SlowToConnect:
    """A backend that takes `delay` seconds to open (a far-away platform)."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        await trio.sleep(self.delay)
        async with self.inner.connect(model) as connection:
            yield connection


async def call(caller: TwilioCaller, backend: Any, **more: Any) -> Any:
    twilio_end, bridge_end = memory_socket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run, twilio_end)
        return await run_call(bridge_end, backend=backend, **{"agent": GREETER, **more})


def model_times(model: LocalRealtimeServer, kind: str) -> list[float]:
    """When the model sent events of `kind` (its one session)."""
    [session] = model.sessions
    return [at for at, way, text in session.timeline
            if way == "out" and json.loads(text)["type"] == kind]


def media_times(caller: TwilioCaller) -> list[float]:
    return [at for at, message in caller.received if isinstance(message, tw.Media)]


async def test_barge_in_clears_at_once_and_the_cut_audio_never_plays(
        autojump_clock: trio.testing.MockClock, kind: str) -> None:
    model = LocalRealtimeServer(default_reply_ms=4000, speedup=1.25)
    caller = TwilioCaller(utterances=[Utterance(at=1.5, duration=0.5)], hangup_at=6.0)
    seen: list[ev.CallEvent] = []
    result = await call(caller, platform(kind, model), on_event=seen.append)
    assert result.reason is EndReason.CALLER_HANGUP
    assert caller.violations == []
    [speech_started] = model_times(model, "input_audio_buffer.speech_started")
    [cleared] = caller.clears
    assert cleared == speech_started  # the same virtual instant: nothing queued first
    assert result.stats.barge_ins == 1
    # a PCM platform cannot be told what was heard: no truncation is sent or counted
    assert result.stats.truncations == (1 if kind == "openai" else 0)
    # when the caller started: exact by the model's input clock less its VAD's padding;
    # a PCM platform's message tells no position: where the caller's audio was then
    [started] = [e for e in seen if isinstance(e, ev.SpeechStarted)]
    assert started.caller_at is not None and caller.t0 is not None
    began = started.caller_at - caller.t0
    assert abs(began - 1.5) <= 0.02 if kind == "openai" else 1.5 <= began <= 1.5 + 0.2
    # the greeting heard up to the clear, and nothing of it after: the next audio is
    # the answer, once the model has started it
    answer = model_times(model, "response.created")[1]
    assert not [t for t in media_times(caller) if cleared < t < answer]
    assert [t for t in media_times(caller) if t < cleared]


async def test_the_caller_hanging_up_ends_the_platforms_call(
        autojump_clock: trio.testing.MockClock, kind: str) -> None:
    model = LocalRealtimeServer(default_reply_ms=10_000, speedup=1.0)
    backend = platform(kind, model)
    caller = TwilioCaller(hangup_at=2.0)
    began = trio.current_time()
    result = await call(caller, backend)
    assert result.reason is EndReason.CALLER_HANGUP
    assert trio.current_time() - began < 3  # no waiting on the platform
    [session] = model.sessions
    assert session.closed
    if kind != "openai":
        [record] = backend.platform.calls
        assert record.client_hung_up and record.controls_in == [{"type": "end-call"}]
        assert not record.platform_hung_up


async def test_the_agent_hanging_up_ends_the_call_after_its_goodbye(
        autojump_clock: trio.testing.MockClock, kind: str) -> None:
    """OpenAI mode: the model calls callbridge's `end_call`; PCM mode: the platform
    runs its own and hangs up. Either way the goodbye plays in full first."""
    goodbye = babble(1500, pitch_hz=210, seed=4)
    brain = scripted_brain([Reply(audio=goodbye, transcript="Goodbye!",
                                  tool_calls=[ToolCall("end_call", {})])])
    model = LocalRealtimeServer(brain=brain, speedup=5)
    caller = TwilioCaller(hangup_at=30.0)
    from callbridge.calltools import end_call

    result = await call(caller, platform(kind, model),
                        agent=Agent(greeting="Say goodbye.", tools=[end_call]))
    assert result.reason is EndReason.HUNG_UP
    heard = caller.heard_audio()
    assert len(heard) >= len(goodbye) - 160  # all of it (less a frame of resampling)
    assert caller.clears == []


async def test_the_callers_audio_waits_for_the_platforms_socket(
        autojump_clock: trio.testing.MockClock, kind: str) -> None:
    """The platform takes 1.5 s to open: what the caller said meanwhile reaches it."""
    model = LocalRealtimeServer(default_reply_ms=500)
    speech = babble(1000, pitch_hz=130, seed=7, level=0.35)
    caller = TwilioCaller(utterances=[Utterance.recorded(speech, at=1.0)], hangup_at=4.0)
    result = await call(caller, SlowToConnect(platform(kind, model), 1.5), agent=Agent())
    assert result.reason is EndReason.CALLER_HANGUP
    assert result.stats.frames_dropped == 0
    [session] = model.sessions
    got = bytes(session.input_audio)
    # everything from the first frame on, the 1.5 s before the socket opened included
    # (the last 200 ms may still be on their way, or in the resamplers, at the hang-up)
    assert len(got) >= len(caller.sent_audio) - 200 * 8
    # the words are where the caller said them, in the platform's input audio
    [started] = [json.loads(t)["audio_start_ms"] for _, way, t in session.timeline
                 if way == "out" and json.loads(t)["type"] == "input_audio_buffer.speech_started"]
    assert abs(started + 300 - 1000) <= 60  # (the VAD's 300 ms of prefix padding)


async def test_a_platform_that_stalls_holds_nothing_on_the_callers_side(
        autojump_clock: trio.testing.MockClock, kind: str) -> None:
    """The platform stops answering mid-call: the caller's frames are still read (and
    bounded), Twilio's marks still handled, and the caller's hang-up ends it."""
    model = LocalRealtimeServer(default_reply_ms=1000)
    backend = Stalls(platform(kind, model), after=2.0)
    caller = TwilioCaller(hangup_at=8.0)
    result = await call(caller, backend, limits=CallLimits(caller_buffer_frames=50))
    assert result.reason is EndReason.CALLER_HANGUP
    assert result.stats.frames_in == len(caller.sent_audio) // 160
    assert result.stats.frames_dropped > 0  # bounded: the oldest went


class Stalls:
    """A backend whose connection stops being read from and written to `after` s."""

    def __init__(self, inner: Any, after: float) -> None:
        self.inner, self.after = inner, after

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[RealtimeConnection]:
        async with self.inner.connect(model) as connection:
            yield _Stalled(connection, trio.current_time() + self.after)


class _Stalled:
    def __init__(self, inner: RealtimeConnection, at: float) -> None:
        self.inner, self.at = inner, at

    async def send(self, event: Any) -> None:
        if trio.current_time() >= self.at:
            await trio.sleep_forever()
        await self.inner.send(event)

    async def receive(self) -> Any:
        if trio.current_time() >= self.at:
            await trio.sleep_forever()
        return await self.inner.receive()


@pytest.mark.slow
async def test_a_call_to_vapi_over_real_sockets() -> None:
    """`VapiBackend` as configured for VAPI: the call created over REST, its socket
    opened with callbridge's own WebSocket client at the URL VAPI gave (here the
    local model as a PCM platform on loopback), kept alive by pings."""
    model = LocalRealtimeServer(default_reply_ms=800)
    platform = LocalPcmPlatform(model, first_message=True)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_pcm_websocket, platform)
            rest = LocalVapiRest(api_key="vk-test", assistants=["asst"],
                                 websocket_url=lambda call_id, audio:
                                 f"ws://127.0.0.1:{port}/{call_id}/transport")
            backend = VapiBackend(rest=VapiRest("vk-test", transport=rest.transport()),
                                  assistant_id="asst")
            caller = TwilioCaller(hangup_at=2.5)
            result = await call(caller, backend, limits=CallLimits(model_ping_s=0.5))
            nursery.cancel_scope.cancel()
    assert result.reason is EndReason.CALLER_HANGUP and result.stats.model_connections == 1
    assert caller.violations == [] and len(caller.heard_audio()) >= 700 * 8  # the greeting
    [record] = platform.calls
    assert record.client_hung_up and len(record.received) >= 2000 * 8
    [created] = rest.calls.values()
    assert created.audio_format == VapiAudioFormat()
