"""The message-socket adapters: closing is spelled the same way everywhere."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from callbridge import SocketClosed, memory_socket_pair


async def test_close_is_seen_by_the_peer() -> None:
    a, b = memory_socket_pair()
    await a.send("hello")
    await a.aclose(1001)
    assert await b.receive() == "hello"
    assert await b.receive() is None
    assert b.close_code == 1001
    with pytest.raises(SocketClosed):
        await b.send("anyone?")


async def test_close_under_cancellation_still_releases_a_blocked_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Regression: aclose() awaited one channel's aclose() and then the other's; under
    # cancellation the first checkpoint raised, the second channel stayed open, and a
    # peer blocked sending to us waited forever.
    a, b = memory_socket_pair(buffer=0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def blocked_sender() -> None:
                with pytest.raises(SocketClosed):
                    await b.send("never read")

            nursery.start_soon(blocked_sender)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await a.aclose()
