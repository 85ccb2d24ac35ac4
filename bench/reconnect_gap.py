"""The gap a caller hears when the model's connection drops mid-call, on real sockets.

One call through `run_call` with callbridge's own OpenAI client (`OpenAIRealtime`)
against the local realtime model served on loopback. The first model connection is
closed by the server mid-call (as a reset or `session_expired` would); the bridge
reopens it, sends the agent's `session.update` and the conversation so far, then the
caller audio that waited. Reported, per run: from the drop to the new connection
being open, and to the new session having the restored conversation (the model
could answer from then on). Loopback has no TLS and no network: against the real
API add a TLS handshake and the round trips to it. The drop comes 6 s in: a
connection that lasted under 5 s is reopened after a backoff (0.25 s, doubling).

    .venv/bin/python bench/reconnect_gap.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from functools import partial
from typing import Any

import trio

from callbridge import Agent, memory_socket_pair, run_call
from callbridge import events as ev
from callbridge.backend import OpenAIRealtime
from callbridge.local import LocalRealtimeServer, Reply, scripted_brain
from callbridge.local._audio import tone
from callbridge.testing import TwilioCaller, serve_realtime_websocket

#: seconds into the call: past `HEALTHY_SESSION_S`, so the reconnect is at once (a
#: connection that drops sooner is reopened after a backoff, as a flapping one)
DROP_AT = 6.0


class DropsFirst:
    """`server`, whose first connection the server closes `DROP_AT` s in."""

    def __init__(self, server: LocalRealtimeServer) -> None:
        self.server, self.sessions, self.dropped_at = server, server.sessions, 0.0

    async def serve(self, socket: Any) -> None:
        if len(self.server.sessions) > 0:
            await self.server.serve(socket)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.server.serve, socket)
            await trio.sleep(DROP_AT)
            self.dropped_at = trio.current_time()
            await socket.aclose(1011)
            nursery.cancel_scope.cancel()


async def one_run() -> tuple[float, float]:
    model = LocalRealtimeServer(scripted_brain([Reply(audio=tone(800), transcript="Hello.")]))
    dropping = DropsFirst(model)
    events: list[ev.CallEvent] = []
    caller = TwilioCaller(hangup_at=DROP_AT + 2.0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_realtime_websocket, dropping))
        backend = OpenAIRealtime(api_key="sk-bench", base_url=f"http://127.0.0.1:{port}/v1")
        twilio_end, bridge_end = memory_socket_pair()
        nursery.start_soon(caller.run, twilio_end)
        await run_call(bridge_end, agent=Agent(greeting="Greet.", idle_timeout=None),
                       backend=backend, on_event=events.append)
        nursery.cancel_scope.cancel()
    reopened = [e.at for e in events if isinstance(e, ev.ModelConnected)][1]
    second = model.sessions[1]
    restored = next(t for t, way, text in second.timeline
                    if way == "in" and json.loads(text)["type"] == "conversation.item.create")
    return reopened - dropping.dropped_at, restored - dropping.dropped_at


def main() -> None:
    logging.getLogger("callbridge").setLevel(logging.ERROR)  # the reconnect warnings
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    gaps = [trio.run(one_run) for _ in range(runs)]
    for name, values in (("connection reopened", [g[0] for g in gaps]),
                         ("conversation restored", [g[1] for g in gaps])):
        ms = sorted(v * 1000 for v in values)
        print(f"{name:>22}: median {statistics.median(ms):6.1f} ms, "
              f"max {ms[-1]:6.1f} ms over {runs} runs (from the drop)")


if __name__ == "__main__":
    main()
