"""The bridge's own CPU per frame, in one process: no kernel, no hypercorn, no JSON model.

`run_call` between an in-memory Twilio side (real Media Streams JSON, marks echoed at
once) and an echo model that hands events over without encoding them: every caller
frame comes back as one 20 ms delta. The caller keeps at most `--lag` frames ahead of
the echo, so the bridge is never far behind (an idle call's shape) yet never waits on
a clock. What it reports, CPU time per frame both ways with both peers included, is
a figure to compare commits by, back to back: it moves with the bridge's own code and
trio's scheduling, not with syscalls or the machine's network stack.

    .venv/bin/python bench/inprocess.py                       # this tree
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/inprocess.py   # another commit's
    .venv/bin/python bench/inprocess.py --sockets             # over socket pairs
    .venv/bin/python bench/inprocess.py --keep nothing all    # what keeping a call costs
    .venv/bin/python bench/inprocess.py --backend openai vapi # a PCM platform's path

`--sockets` puts both peers behind socket pairs instead, speaking RFC 6455 through
callbridge's own WebSocket (the front door's server end for Twilio's side, the
client end for the model's, whose echo parses each append as JSON): the whole
per-frame path of `callbridge serve` with the kernel's socket calls, minus TCP and
hypercorn.

`--keep` runs the call as the service runs it (`callbridge._watch`): with its record
built as it goes, with the metrics too (prometheus-client, in memory), or with those
and its recording; given several, they alternate, back to back, so their ratio holds
however the machine's speed drifts.

`--backend vapi` (or `vapi-mulaw`) puts a PCM voice platform in the echo's place,
VAPI's socket protocol through `callbridge.pcm`: the caller's audio transcoded to
16-bit PCM at 16 kHz and back (or not, in μ-law).

(`git worktree add /tmp/old COMMIT` gives another commit's tree.)
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import trio.lowlevel

import callbridge
from callbridge import codec, memory_socket_pair
from callbridge import realtime as rt
from callbridge import twilio as tw
from callbridge._watch import Watch, process_metrics, run_watched
from callbridge.config import Settings
from callbridge.local._vapirest import LocalVapiRest
from callbridge.vapi import VapiBackend
from callbridge.vapi_rest import VapiAudioFormat, VapiRest

if TYPE_CHECKING:
    from callbridge._websocket import WebSocket

SID = "MZ" + "0" * 32
FRAME = bytes(range(160))


class EchoModel:
    """Each caller append comes back at once as a delta of the same audio."""

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[Any]:
        send, receive = trio.open_memory_channel[rt.ServerEvent](10_000)
        send.send_nowait(rt.ResponseCreated(response={"id": "r1"}))

        class Connection:
            async def send(self, event: rt.ClientEvent) -> None:
                await trio.lowlevel.checkpoint()
                if isinstance(event, rt.InputAudioBufferAppend):
                    send.send_nowait(rt.OutputAudioDelta(response_id="r1", item_id="i1",
                                                         delta=event.audio))

            async def receive(self) -> rt.ServerEvent | None:
                return await receive.receive()

        yield Connection()


class SocketEchoModel:
    """`EchoModel` behind a socket pair: JSON both ways, over callbridge's WebSocket."""

    @asynccontextmanager
    async def connect(self, model: str) -> AsyncIterator[Any]:
        from callbridge.backend import EventConnection

        ours, theirs = websocket_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve, theirs)
            yield EventConnection(ours)
            nursery.cancel_scope.cancel()

    async def _serve(self, ws: WebSocket) -> None:
        ws.send_nowait('{"type":"response.created","response":{"id":"r1"}}')
        while (texts := await ws.receive_batch()) is not None:
            out = []
            for text in texts:
                if '"input_audio_buffer.append"' in text:
                    audio = json.loads(text)["audio"]
                    out.append('{"type":"response.output_audio.delta","response_id":"r1",'
                               f'"item_id":"i1","output_index":0,"content_index":0,'
                               f'"delta":"{audio}"}}')
            if out:
                ws.send_nowait(*out)
            await ws.drain()


def pcm_echo(sockets: bool, audio: VapiAudioFormat) -> VapiBackend:
    """A PCM voice platform (VAPI's socket protocol) that sends the caller's audio
    straight back: the call goes through `callbridge.pcm`, transcoded both ways (at
    16 kHz) or not (μ-law), the call created through the local VAPI's REST API."""
    rest = LocalVapiRest(api_key="vk-bench")

    @asynccontextmanager
    async def open_socket(url: str) -> AsyncIterator[Any]:
        ours, theirs = websocket_pair() if sockets else memory_socket_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_echo, theirs)
            yield ours
            nursery.cancel_scope.cancel()

    return VapiBackend(rest=VapiRest("vk-bench", base_url="http://vapi.local",
                                     transport=rest.transport()),
                       assistant_id="bench", audio=audio, open_socket=open_socket)


async def _echo(socket: Any) -> None:
    while (message := await socket.receive()) is not None:
        if isinstance(message, bytes):
            await socket.send(message)


def websocket_pair() -> tuple[WebSocket, WebSocket]:
    """Two ends of a WebSocket over a socket pair: (client, server)."""
    from callbridge._websocket import WebSocket
    from callbridge._wire import Wire

    a, b = trio.socket.socketpair()
    return (WebSocket(Wire(trio.SocketStream(a)), client=True),
            WebSocket(Wire(trio.SocketStream(b)), client=False))


async def measure(frames: int, lag: int, sockets: bool = False, watch: Watch | None = None,
                  platform: str = "openai") -> tuple[float, str, int]:
    if sockets:
        twilio, bridge_end = websocket_pair()
    else:
        twilio, bridge_end = memory_socket_pair()  # type: ignore[assignment]
    payload = base64.b64encode(FRAME).decode()
    texts = [json.dumps({"event": "media", "sequenceNumber": str(i + 3), "streamSid": SID,
                         "media": {"track": "inbound", "chunk": str(i + 1),
                                   "timestamp": str(i * 20), "payload": payload}})
             for i in range(frames)]
    echoed = heard = 0
    all_back = trio.Event()
    # a PCM platform's resamplers hold up to 60 ms each way (soxr works in blocks,
    # docs/audio.md; 120 ms with libsoxr's own block sizes): the caller may run that
    # far ahead, and the last of it stays held
    held = 0 if platform in ("openai", "vapi-mulaw") else 12
    lag, back = lag + held, frames - held

    async def hear() -> None:
        nonlocal echoed, heard
        while (text := await twilio.receive()) is not None:
            message = json.loads(text)
            if message["event"] == "media":  # (transcoded audio comes in any sizes)
                heard += len(base64.b64decode(message["media"]["payload"]))
                echoed = heard // len(FRAME)
                if echoed >= back:
                    all_back.set()
            elif message["event"] == "mark":
                await twilio.send(text)  # played at once

    async def talk() -> None:
        await twilio.send(codec.encode(tw.Connected()))
        await twilio.send(codec.encode(tw.Start(stream_sid=SID, account_sid="AC",
                                                call_sid="CA")))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hear)
            for i, text in enumerate(texts):
                await twilio.send(text)
                while echoed < i - lag:
                    await trio.lowlevel.checkpoint()
            await all_back.wait()
            await twilio.send(codec.encode(tw.Stop(stream_sid=SID)))
            await twilio.aclose()
            nursery.cancel_scope.cancel()

    backend: Any = SocketEchoModel() if sockets else EchoModel()
    if platform != "openai":
        backend = pcm_echo(sockets, VapiAudioFormat.mulaw() if platform == "vapi-mulaw"
                           else VapiAudioFormat())
    began = time.process_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(talk)
        if watch is None:
            result = await callbridge.run_call(bridge_end, backend=backend)
            reason, chunks = str(result.reason), result.stats.chunks_out
        else:  # kept as the service keeps its calls (the WAV is written after the clock)
            record = await run_watched(watch, bridge_end, agent=callbridge.Agent(),
                                       backend=backend)
            reason, chunks = record.end_reason, record.stats["chunks_out"]
    return time.process_time() - began, reason, chunks


def watch_for(keep: str, record_dir: str) -> Watch | None:
    """`--keep`: what the service keeps of the call (`callbridge._watch`)."""
    if keep == "nothing":
        return None
    metrics = None if keep == "record" else process_metrics()
    settings = Settings(record_dir=Path(record_dir) if keep == "all" else None)
    return Watch(settings, metrics=metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20_000, help="frames each way")
    parser.add_argument("--lag", type=int, default=5,
                        help="how many frames the caller may run ahead of the echo")
    parser.add_argument("--repeat", type=int, default=3, help="runs; each is reported")
    parser.add_argument("--sockets", action="store_true",
                        help="both peers behind socket pairs, over callbridge's WebSocket")
    parser.add_argument("--backend", nargs="+", default=["openai"],
                        choices=["openai", "vapi", "vapi-mulaw"],
                        help="the echo's protocol: OpenAI's events, or a PCM platform's "
                        "socket (VAPI's: 16-bit PCM at 16 kHz, transcoded both ways, or "
                        "μ-law); several: each in turn, every round (back to back)")
    parser.add_argument("--keep", nargs="+", default=["nothing"],
                        choices=["nothing", "record", "metrics", "all"],
                        help="what the service keeps of the call: nothing (run_call alone), "
                        "its record, its record and metrics, or those and its recording; "
                        "several: each in turn, every round (back to back)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as record_dir:
        for _ in range(args.repeat):
            for backend, keep in itertools.product(args.backend, args.keep):
                cpu, reason, chunks = trio.run(measure, args.frames, args.lag, args.sockets,
                                               watch_for(keep, record_dir), backend)
                print(f"{args.frames} frames each way, {backend}, keeping {keep}: "
                      f"{cpu / args.frames * 1e6:.1f} µs CPU per frame (both ways, peers "
                      f"included); {reason}, {chunks} media messages to Twilio")


if __name__ == "__main__":
    main()
