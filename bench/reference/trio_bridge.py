"""Reference bridge, trio: Twilio Media Streams <-> OpenAI Realtime, written plainly.

    hypercorn --worker-class trio bench/reference/trio_bridge.py:app

What a developer would typically write with trio and no framework: a raw ASGI app, one
trio-websocket client connection to the model per call, `json` for every message, two
tasks per call. It exists only so that `bench/load.py --server reference-trio` can
measure what such a bridge costs on the same machine and under the same load as
callbridge. No optimisations on purpose; not part of callbridge.

    GET /              {"status": "ok", "active_calls": N}  (the bench polls it)
    WS  /media-stream  Twilio Media Streams
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

MEDIA_PATH = "/media-stream"
MODEL = os.environ.get("OPENAI_MODEL", "gpt-realtime")
SESSION_UPDATE = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}},
        },
    },
}

active_calls = 0


def dumps(message: dict[str, Any]) -> str:
    # compact: the bench peers match bytes such as '"type":"' rather than parse JSON
    return json.dumps(message, separators=(",", ":"))


def realtime_url() -> str:
    base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
    base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/realtime?model={MODEL}"


class Call:
    """What one call needs to know for barge-in."""

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.item_id: str | None = None      # the assistant item being played
        self.sent_ms = 0                     # how much of it went to Twilio
        self.heard: tuple[str, int] = ("", 0)  # last mark Twilio echoed: (item, ms)
        self.interrupted: str | None = None  # item cut off by the caller: drop its audio


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await health(scope, send)
    elif scope["type"] == "websocket" and scope["path"] == MEDIA_PATH:
        await media_stream(receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008})


async def health(scope: dict[str, Any], send: Any) -> None:
    if scope["path"] == "/":
        status, body = 200, dumps({"status": "ok", "active_calls": active_calls}).encode()
    else:
        status, body = 404, b'{"error": "not found"}'
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def media_stream(receive: Any, send: Any) -> None:
    global active_calls
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    active_calls += 1
    try:
        headers = [(b"Authorization", f"Bearer {os.environ['OPENAI_API_KEY']}".encode())]
        async with open_websocket_url(realtime_url(), extra_headers=headers) as model:
            await model.send_message(dumps(SESSION_UPDATE))
            call = Call()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(twilio_to_model, receive, model, call, nursery.cancel_scope)
                nursery.start_soon(model_to_twilio, model, send, call, nursery.cancel_scope)
    finally:
        active_calls -= 1


async def twilio_to_model(receive: Any, model: Any, call: Call, done: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            break
        data = json.loads(message["text"])
        event = data["event"]
        if event == "media":
            await model.send_message(dumps({
                "type": "input_audio_buffer.append", "audio": data["media"]["payload"]}))
        elif event == "start":
            call.stream_sid = data["start"]["streamSid"]
        elif event == "mark":
            item, _, ms = data["mark"]["name"].rpartition(":")
            call.heard = (item, int(ms))
        elif event == "stop":
            break
    done.cancel()


async def model_to_twilio(model: Any, send: Any, call: Call, done: trio.CancelScope) -> None:
    async def to_twilio(message: dict[str, Any]) -> None:
        await send({"type": "websocket.send", "text": dumps(message)})

    try:
        while True:
            event = json.loads(await model.get_message())
            kind = event["type"]
            if kind == "response.output_audio.delta":
                if event["item_id"] == call.interrupted:
                    continue  # sent before the model saw the caller interrupt
                if event["item_id"] != call.item_id:
                    call.item_id, call.sent_ms = event["item_id"], 0
                call.sent_ms += len(base64.b64decode(event["delta"])) // 8  # μ-law: 8 bytes/ms
                await to_twilio({"event": "media", "streamSid": call.stream_sid,
                                 "media": {"payload": event["delta"]}})
                await to_twilio({"event": "mark", "streamSid": call.stream_sid,
                                 "mark": {"name": f"{call.item_id}:{call.sent_ms}"}})
            elif kind == "input_audio_buffer.speech_started":
                if call.item_id is not None and call.heard != (call.item_id, call.sent_ms):
                    # still playing: stop it, and tell the model how much was heard
                    await to_twilio({"event": "clear", "streamSid": call.stream_sid})
                    item, ms = call.heard
                    heard_ms = min(ms, call.sent_ms) if item == call.item_id else 0
                    await model.send_message(dumps({
                        "type": "conversation.item.truncate", "item_id": call.item_id,
                        "content_index": 0, "audio_end_ms": heard_ms}))
                    call.interrupted, call.item_id = call.item_id, None
            elif kind == "error":
                print("model error:", event.get("error"), flush=True)
    except ConnectionClosed:
        pass
    done.cancel()
