"""A Twilio side that stops reading, through a real hypercorn trio server on loopback.

The caller completes the handshake and `start`, then never reads its socket again
while the model keeps talking. The bridge's writes block once the socket's buffers
are full, and the call must then end as `twilio_stalled` within
`CallLimits.send_timeout`, closing its (paid) model session, whatever serves the
socket. Under hypercorn that used to be impossible: its trio worker writes under a
shielded cancel scope that the call's send deadline could not reach, so the call
lived as long as the stall (docs/hypercorn-write-deadline.md). Meanwhile the worker
must keep serving the other calls on it.

Real clock, real sockets: every wait is bounded by `fail_after` with margins no
machine load reaches, and nothing asserts how fast anything went.
"""

from __future__ import annotations

import logging
from functools import partial

import pytest
import trio
from _stalled import read_to_the_end, stalled_websocket
from test_service import _hypercorn

from callbridge import CallLimits, codec
from callbridge import twilio as tw
from callbridge.app import create_app
from callbridge.config import Settings
from callbridge.testing import (
    LocalRealtimeServer,
    TwilioCaller,
    dial_twilio_stream,
    serve_realtime_websocket,
)

#: short, so the test is quick; the stall it must catch is unbounded without the fix
SEND_TIMEOUT = 2.0
#: for the stalled socket's buffers to fill (a second or two of the model's audio here)
#: and for a loaded machine; the unfixed bridge never ends the call at all
MARGIN = 45.0
STALLED_CALL = "CA57A11ED000000000000000000000001"
HEALTHY_CALL = "CA4EA17B1000000000000000000000002"


def ended(caplog: pytest.LogCaptureFixture, call_sid: str) -> list[str]:
    """The service's "call ... ended: <reason> ..." lines for one call."""
    return [r.getMessage() for r in caplog.records
            if r.name == "callbridge.app" and r.getMessage().startswith(f"call {call_sid} ended:")]


async def test_a_caller_that_stops_reading_ends_as_twilio_stalled(
    caplog: pytest.LogCaptureFixture, front_door: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="callbridge.app")
    model = LocalRealtimeServer(default_reply_ms=60_000)  # the greeting goes on for a minute
    with trio.fail_after(SEND_TIMEOUT + MARGIN + 120):
        async with trio.open_nursery() as model_nursery:
            port = await model_nursery.start(partial(serve_realtime_websocket, model))
            try:
                await stall_one_call_of_two(caplog, model, port, front_door)
            finally:
                # The bridge is gone now, so are its model sockets: let the model's
                # sessions see that (one cancelled mid-session waits for good for a
                # close handshake nobody will answer), then stop it.
                with trio.move_on_after(10):
                    await model.wait_for_sessions(
                        lambda sessions: all(session.closed for session in sessions))
                model_nursery.cancel_scope.cancel()


async def stall_one_call_of_two(
    caplog: pytest.LogCaptureFixture, model: LocalRealtimeServer, port: int, front_door: bool,
) -> None:
    app = create_app(
        Settings(openai_api_key="sk-test-not-a-key", openai_base_url=f"http://127.0.0.1:{port}/v1",
                 greeting="Say hello."),
        limits=CallLimits(send_timeout=SEND_TIMEOUT), front_door=front_door)
    healthy = TwilioCaller(hangup_at=600.0, call_sid=HEALTHY_CALL,
                           stream_sid="MZ4EA17B1000000000000000000000002")
    healthy_done = trio.Event()
    async with trio.open_nursery() as nursery:
        host = await _hypercorn(app, nursery)

        # a healthy call, up before the stall and hanging up only after it ended
        async def healthy_call() -> None:
            await dial_twilio_stream(healthy, f"ws://{host}/media-stream")
            healthy_done.set()

        nursery.start_soon(healthy_call)
        with trio.fail_after(30):
            while not healthy.received:  # noqa: ASYNC110 - no event to wait on for it
                await trio.sleep(0.01)

        start = tw.Start(stream_sid="MZ57A11ED000000000000000000000001",
                         account_sid="AC00000000000000000000000000000001",
                         call_sid=STALLED_CALL, sequence_number=1)
        async with stalled_websocket(
                host, "/media-stream", [codec.encode(tw.Connected()), codec.encode(start)]
        ) as stalled:
            with trio.fail_after(30):
                await model.wait_for_sessions(lambda sessions: len(sessions) >= 2)
            stalled_session = model.sessions[1]
            # the model talks at once and goes on: the bridge's writes fill the
            # stalled socket, and `send_timeout` later the call must be over
            with trio.fail_after(SEND_TIMEOUT + MARGIN):
                # polled: a log line comes with nothing to wait on
                while not (stalled_session.closed and ended(caplog, STALLED_CALL)):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            [line] = ended(caplog, STALLED_CALL)
            assert line.startswith(f"call {STALLED_CALL} ended: twilio_stalled "), line
            # a fault: the summary is a warning (as is the line saying what happened)
            assert [r.levelno for r in caplog.records if r.getMessage() == line] == [
                logging.WARNING]
            assert any(r.levelno == logging.WARNING and r.getMessage().startswith(
                "Twilio stopped taking audio") for r in caplog.records)
            assert not model.sessions[0].closed and not healthy_done.is_set()
            # the worker's registry of live calls holds the healthy call only
            live = app.calls.by_call_sid(HEALTHY_CALL)
            assert list(app.calls) == [live] and live is not None and live.stats.frames_in > 0

            # the stalled connection is torn down, not left open with part of a
            # frame written: what the socket still holds is followed by its end
            with trio.fail_after(30):
                await read_to_the_end(stalled)

        # the healthy call went on across the stall, and ends normally
        healthy.hangup_at = 0.0
        with trio.fail_after(30):
            await healthy_done.wait()
        assert healthy.violations == [] and not healthy.closed_by_server
        with trio.fail_after(30):
            # polled: a log line comes with nothing to wait on
            while not (model.sessions[0].closed and ended(caplog, HEALTHY_CALL)):  # noqa: ASYNC110
                await trio.sleep(0.05)
        [line] = ended(caplog, HEALTHY_CALL)
        assert line.startswith(f"call {HEALTHY_CALL} ended: caller_hangup "), line
        assert app.active_calls == 0
        nursery.cancel_scope.cancel()
