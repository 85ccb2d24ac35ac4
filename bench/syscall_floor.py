"""What the kernel alone charges per WebSocket-sized message on this machine.

    python bench/syscall_floor.py [--n 20000]

No Python framework, no trio: plain blocking sockets over loopback TCP, the peer
process on the other core (as in `load.py`). It prints the CPU (user + system) that
one 300-byte message costs the process that sends it and the process that receives
it, when messages are paced (the peer is asleep and must be woken, as at a 20 ms
cadence) and when they go back to back. The load bench's figure per call is at
least (messages per second) x (these costs), whatever runs above the kernel; see
bench/README.md ("What stands in the way").
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import time

MESSAGE = b"x" * 300
PAUSE = 0.0002  # between paced messages: long enough for the peer to go to sleep


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {core})


def peer(port: int, send: int) -> None:
    """The other end, on core 1: receives everything, or sends `send` paced messages."""
    pin(1)
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if send:
        for _ in range(send):
            conn.send(MESSAGE)
            time.sleep(PAUSE)
    else:
        while conn.recv(65536):
            pass
    conn.close()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="messages per measurement")
    n = parser.parse_args().n
    pin(0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def accept(send: int) -> tuple[socket.socket, int]:
        pid = os.fork()
        if pid == 0:
            peer(port, send)
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, pid

    conn, pid = accept(send=0)
    t = cpu()
    for _ in range(n):
        time.sleep(PAUSE)
    sleeping = (cpu() - t) / n
    t = cpu()
    for _ in range(n):
        conn.send(MESSAGE)
        time.sleep(PAUSE)
    paced_send = (cpu() - t) / n - sleeping
    t = cpu()
    for _ in range(n):
        conn.send(MESSAGE)
    burst_send = (cpu() - t) / n
    conn.close()
    os.waitpid(pid, 0)

    conn, pid = accept(send=n)
    t = cpu()
    reads = 0
    while conn.recv(65536):
        reads += 1
    paced_receive = (cpu() - t) / max(reads, 1)
    conn.close()
    os.waitpid(pid, 0)

    print(f"per {len(MESSAGE)}-byte message over loopback TCP, CPU of this process:")
    print(f"  send, peer asleep (paced):      {paced_send * 1e6:6.1f} us")
    print(f"  send, back to back:             {burst_send * 1e6:6.1f} us")
    print(f"  blocking receive (paced), each: {paced_receive * 1e6:6.1f} us ({reads} reads)")


if __name__ == "__main__":
    main()
