"""Barge-in over real sockets: N concurrent calls through `hypercorn --worker-class trio`.

    python bench/barge_in.py [--calls 25] [--json out.json]

Starts the local realtime server (in this process, on loopback), callbridge under
hypercorn's trio worker (a subprocess) pointed at it, and N synthetic Twilio callers
who each interrupt the agent's greeting once. For every call it checks the audio
both ways bit for bit and measures:

* clear latency: the model sending `speech_started` -> the caller receiving `clear`;
* truncation error: bytes the caller really heard of the item minus `audio_end_ms * 8`
  (positive: the bridge claimed less than was heard; it must never be negative beyond
  a frame, and never exceed what was produced).

It prints a table and exits non-zero if any call was not intact. Measurement only:
the test suite checks correctness, this reports numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path
from typing import Any

import trio

from callbridge.testing import (
    LocalRealtimeServer,
    ServerSession,
    TwilioCaller,
    Utterance,
    dial_twilio_stream,
    hypercorn_process,
    serve_realtime_websocket,
)


def speech_started_at(session: ServerSession) -> float:
    """When the model sent its first `speech_started` (the session's own record)."""
    return next(at for at, direction, text in session.timeline
                if direction == "out" and '"input_audio_buffer.speech_started"' in text)


async def run(calls: int) -> dict[str, Any]:
    model = LocalRealtimeServer(default_reply_ms=3000, speedup=10)
    async with trio.open_nursery() as nursery:
        model_port = await nursery.start(partial(serve_realtime_websocket, model))
        env = {"OPENAI_API_KEY": "sk-local", "CALLBRIDGE_GREETING": "Say hello.",
               "OPENAI_BASE_URL": f"http://127.0.0.1:{model_port}/v1"}
        async with hypercorn_process("callbridge.app:app", env) as server:
            callers: list[TwilioCaller] = []

            async def one(i: int) -> None:
                # dial 40 ms apart, as calls arrive, not all in one burst: on a loaded
                # machine a burst of 25 model handshakes can delay a model connection
                # past the hang-up, leaving a session too little audio to match a caller
                await trio.sleep(0.04 * i)
                caller = TwilioCaller(utterances=[Utterance(at=0.8 + 0.04 * i, duration=0.4)],
                                      hangup_at=3.5, stream_sid=f"MZ{i:032x}",
                                      custom_parameters={"index": str(i)})
                callers.append(caller)
                await dial_twilio_stream(caller, f"ws://{server.host}/media-stream")

            with trio.fail_after(60):
                async with trio.open_nursery() as calls_nursery:
                    for i in range(calls):
                        calls_nursery.start_soon(one, i)
                await model.wait_for_sessions(lambda sessions: all(s.closed for s in sessions))
        nursery.cancel_scope.cancel()

    rows, failures = [], []
    by_sid = {c.stream_sid: c for c in callers}
    for index, session in enumerate(model.sessions):
        # each session's input audio is its caller's, in order, up to the hang-up (frames
        # still buffered when `stop` arrives are not sent on): match them up
        heard_by_model = bytes(session.input_audio)
        matches = [c for c in by_sid.values() if bytes(c.sent_audio).startswith(heard_by_model)]
        if len(matches) != 1:
            failures.append({"session": index, "problems": [
                f"input audio matches {len(matches)} callers' audio, not exactly one"]})
            continue
        caller = matches[0]
        problems = []
        if caller.violations:
            problems.append(f"Twilio protocol: {caller.violations[:2]}")
        if len(caller.clears) != 1 or len(session.truncations) != 1:
            problems.append(f"{len(caller.clears)} clears, {len(session.truncations)} truncations")
        else:
            item_id, end_ms = session.truncations[0]
            heard = caller.heard_audio(caller.clears[0])
            produced = bytes(session.produced[item_id])
            if heard != produced[: len(heard)]:
                problems.append("heard audio differs from produced audio")
            rows.append({
                "clear_latency_ms": (caller.clears[0] - speech_started_at(session)) * 1000,
                "truncation_error_ms": len(heard) / 8 - end_ms,
                "beyond_produced": end_ms * 8 > len(produced),
            })
        if problems:
            failures.append({"stream": caller.stream_sid, "problems": problems})
    return {"calls": calls, "intact": calls - len(failures), "failures": failures, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=25, help="concurrent calls (default 25)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = trio.run(run, args.calls)
    latencies = sorted(r["clear_latency_ms"] for r in result["rows"])
    errors = [r["truncation_error_ms"] for r in result["rows"]]
    print(f"calls intact: {result['intact']}/{result['calls']}")
    if latencies:
        print(f"clear latency ms: p50 {statistics.median(latencies):.2f}  "
              f"max {latencies[-1]:.2f}")
        print(f"truncation error ms (heard - audio_end_ms): min {min(errors):.2f}  "
              f"max {max(errors):.2f}; beyond produced: "
              f"{sum(r['beyond_produced'] for r in result['rows'])}")
    for failure in result["failures"]:
        print("FAILED", failure)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
