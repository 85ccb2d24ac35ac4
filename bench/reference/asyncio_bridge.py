"""Reference bridge, asyncio: Twilio Media Streams <-> OpenAI Realtime, the popular way.

    uvicorn --ws websockets --app-dir bench/reference asyncio_bridge:app

The shape of the widely copied asyncio bridges: FastAPI on uvicorn for the Twilio side,
a `websockets` client connection to the model per call, `json` for every message, two
coroutines per call under `asyncio.gather`. The same behaviour as `trio_bridge.py`. It
exists only so that `bench/load.py --server reference-asyncio` can measure what such a
bridge costs on the same machine and under the same load as callbridge. No
optimisations on purpose; not part of callbridge.

    GET /              {"status": "ok", "active_calls": N}  (the bench polls it)
    WS  /media-stream  Twilio Media Streams
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import websockets
from fastapi import FastAPI, WebSocket

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

app = FastAPI()
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


@app.get("/")
async def health() -> dict[str, Any]:
    return {"status": "ok", "active_calls": active_calls}


@app.websocket("/media-stream")
async def media_stream(websocket: WebSocket) -> None:
    global active_calls
    await websocket.accept()
    active_calls += 1
    try:
        headers = {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
        async with websockets.connect(realtime_url(), additional_headers=headers) as model:
            await model.send(dumps(SESSION_UPDATE))
            call = Call()
            await asyncio.gather(twilio_to_model(websocket, model, call),
                                 model_to_twilio(websocket, model, call))
    finally:
        active_calls -= 1


async def twilio_to_model(websocket: WebSocket, model: Any, call: Call) -> None:
    async for message in websocket.iter_text():
        data = json.loads(message)
        event = data["event"]
        if event == "media":
            await model.send(dumps({
                "type": "input_audio_buffer.append", "audio": data["media"]["payload"]}))
        elif event == "start":
            call.stream_sid = data["start"]["streamSid"]
        elif event == "mark":
            item, _, ms = data["mark"]["name"].rpartition(":")
            call.heard = (item, int(ms))
        elif event == "stop":
            break
    await model.close()  # ends model_to_twilio's loop


async def model_to_twilio(websocket: WebSocket, model: Any, call: Call) -> None:
    async for message in model:
        event = json.loads(message)
        kind = event["type"]
        if kind == "response.output_audio.delta":
            if event["item_id"] == call.interrupted:
                continue  # sent before the model saw the caller interrupt
            if event["item_id"] != call.item_id:
                call.item_id, call.sent_ms = event["item_id"], 0
            call.sent_ms += len(base64.b64decode(event["delta"])) // 8  # μ-law: 8 bytes/ms
            await websocket.send_json({"event": "media", "streamSid": call.stream_sid,
                                       "media": {"payload": event["delta"]}})
            await websocket.send_json({"event": "mark", "streamSid": call.stream_sid,
                                       "mark": {"name": f"{call.item_id}:{call.sent_ms}"}})
        elif kind == "input_audio_buffer.speech_started":
            if call.item_id is not None and call.heard != (call.item_id, call.sent_ms):
                # still playing: stop it, and tell the model how much was heard
                await websocket.send_json({"event": "clear", "streamSid": call.stream_sid})
                item, ms = call.heard
                heard_ms = min(ms, call.sent_ms) if item == call.item_id else 0
                await model.send(dumps({
                    "type": "conversation.item.truncate", "item_id": call.item_id,
                    "content_index": 0, "audio_end_ms": heard_ms}))
                call.interrupted, call.item_id = call.item_id, None
        elif kind == "error":
            print("model error:", event.get("error"), flush=True)
