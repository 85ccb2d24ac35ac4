"""Bench load generator: many synthetic Twilio Media Streams calls in one process.

    python bench/_gen.py --server HOST:PORT --slots 0:100 --total-slots 100 ... --out FILE

Started by `bench/load.py` (one process per `--calls-per-gen` calls), never by hand.
Each call is what Twilio does on a `<Connect><Stream>`: WebSocket upgrade, `connected`,
`start` (with customParameters), a `media` frame every 20 ms in real time, and at the
end `stop` and a close. What it receives it plays like Twilio: audio queues on a
per-call playout clock at 8 bytes/ms, a `mark` is echoed once the audio queued ahead
of it has played (at once if none), and `clear` empties the queue and echoes every
pending mark at once.

Lean on purpose (a Python generator costs about as much CPU per call as the server):
one `selectors` loop, raw non-blocking sockets, no WebSocket or JSON library on the
hot path. Outgoing frames are pre-built templates where only the counters and the
24-character audio stamp change, masked with the all-zero key (see
`_wire.client_header`); incoming frames are recognised by byte search
(`"event":"media"`, `"mark"`, `"clear"`); a payload is base64-decoded (in C) and
read 160 bytes at a time for the stamps, so the bridge may re-chunk audio freely.
Calls are spread over 20 one-millisecond phases of the 20 ms frame period, like
independent phones; messages that fall due at the same instant for one call go out
in one write.

Deviations from Twilio, all benign for the bridge: after its last frame a call stays
silent before `stop` until no audio has arrived for `--tail` seconds (at most
`--max-tail`), so every frame in flight is counted, as late if need be, not guessed
at), and the audio bytes are a stamp plus a constant, not speech.

Measures: model->caller latency (receive time minus the model's stamp), its own send
lateness (when a frame went out minus when it was due: the saturation signal), and
per call and response what arrived in what order, for `load.py` to check against
what the model says it sent.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import selectors
import socket
import sys
import time
from binascii import a2b_base64, b2a_base64
from collections import deque

import _wire as W

perf = time.perf_counter

PHASES = 20  # 1 ms phases of the 20 ms frame period
TICK = 0.001

CONNECTING, OPEN, TAIL, CLOSING, DONE = range(5)


class Call:
    __slots__ = (
        "cid", "phase", "sock", "state", "inbuf", "out", "msgseq", "frames", "sid", "media_tail",
        "stop_msg", "media_until", "play_end", "marks", "resp", "next_idx", "rx", "stale_below",
        "stale", "gaps", "foreign", "clears", "media_rx", "marks_rx", "echoes", "error",
        "t_dial", "t_open", "t_done", "clean", "maxlat", "last_rx", "t_media_end", "partial",
    )

    def __init__(self, cid: int, media_until: float) -> None:
        self.cid = cid
        self.phase = cid % PHASES
        self.sock: socket.socket | None = None
        self.state = CONNECTING
        self.inbuf = b""
        self.out: list[bytes] = []
        self.msgseq = 0          # Twilio's sequenceNumber, every message
        self.frames = 0          # media frames sent
        self.sid = b"MZ%032x" % cid
        self.media_until = media_until
        self.play_end = 0.0      # when the audio queued at this "phone" finishes playing
        self.marks: deque[tuple[float, bytes]] = deque()
        self.resp = 0            # model->caller: current response number
        self.next_idx = 0        # next frame index expected in it
        self.rx: dict[int, int] = {}  # response -> frames received in order
        self.stale_below = 0     # after a clear: responses <= this must not play any more
        self.stale = 0
        self.gaps = 0
        self.foreign = 0
        self.clears: list[float] = []
        self.media_rx = 0
        self.marks_rx = 0
        self.echoes = 0
        self.error = ""
        self.t_dial = 0.0
        self.t_open = 0.0
        self.t_done = 0.0
        self.clean = False
        self.maxlat = 0.0        # worst model->caller latency in the window
        self.last_rx = 0.0       # when the last media frame arrived
        self.t_media_end = 0.0
        self.partial = b""       # model audio of an incomplete 160-byte frame
        call_sid = b"CA%032x" % cid
        self.media_tail = TAIL64 + b'"},"streamSid":"' + self.sid + b'"}'
        self.stop_msg = (b'","stop":{"accountSid":"' + ACCOUNT + b'","callSid":' + b'"' + call_sid
                         + b'"},"streamSid":"' + self.sid + b'"}')

    def start_messages(self) -> list[bytes]:
        call_sid = b"CA%032x" % self.cid
        connected = b'{"event":"connected","protocol":"Call","version":"1.0.0"}'
        self.msgseq = 1
        start = (b'{"event":"start","sequenceNumber":"1","start":{"accountSid":"' + ACCOUNT
                 + b'","streamSid":"' + self.sid + b'","callSid":"' + call_sid
                 + b'","tracks":["inbound"],"customParameters":{"bench_call":"%d"},' % self.cid
                 + b'"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},'
                 + b'"streamSid":"' + self.sid + b'"}')
        return [W.client_header(len(connected)), connected, W.client_header(len(start)), start]


ACCOUNT = b"AC" + b"0" * 32
TAIL64 = W.tail_b64(0x55)
C2M_pack = W.C2M.pack
bucket = W.bucket
M2C_unpack = W.M2C.unpack_from
MEDIA_HEAD = b'{"event":"media","sequenceNumber":"'


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host, port = args.server.rsplit(":", 1)
        self.port = int(port)
        self.sel = selectors.DefaultSelector()
        self.phases: list[list[Call]] = [[] for _ in range(PHASES)]
        self.timers: list[tuple[float, int, int, Call | None, int]] = []
        self.tseq = 0
        self.dirty: set[Call] = set()
        self.calls: list[Call] = []
        self.live = 0
        self.t0, self.t1 = args.window
        self.lat = W.Hist()
        self.late = W.Hist()
        self.errors: list[str] = []
        self.rng = random.Random(args.seed)
        self.slot_calls: dict[int, int] = {}

    # --- timers ------------------------------------------------------------------------
    # kinds: 0 dial a slot, 1 echo due marks, 2 end of tail (send stop + close), 3 give up

    def at(self, when: float, kind: int, call: Call | None, arg: int = 0) -> None:
        self.tseq += 1
        heapq.heappush(self.timers, (when, self.tseq, kind, call, arg))

    def run(self) -> None:
        a = self.args
        first, last = a.slots
        start = a.start
        for slot in range(first, last):
            self.at(start + a.rampup * (slot / max(1, a.total_slots)), 0, None, slot)
        tick = int((perf() - start) / TICK) if perf() > start else 0
        base = start
        deadline = a.end + a.max_tail + a.close_timeout
        sel_select = self.sel.select
        while True:
            now = perf()
            t_tick = base + tick * TICK
            nxt = t_tick
            if self.timers and self.timers[0][0] < nxt:
                nxt = self.timers[0][0]
            timeout = nxt - now
            events = sel_select(timeout if timeout > 0 else 0)
            now = perf()
            for key, _ in events:
                self.readable(key.data, now)
            # frames due: one per call per 20 ms, in its phase
            while base + tick * TICK <= now:
                due = base + tick * TICK
                calls = self.phases[tick % PHASES]
                if calls:
                    late = now - due
                    measure = self.t0 <= now <= self.t1
                    for c in calls:
                        if c.state == OPEN:
                            if due >= c.media_until:
                                c.state = TAIL
                                c.t_media_end = now
                                self.at(now + a.tail, 2, c)
                                continue
                            self.send_frame(c, now)
                            if measure:
                                self.late.add(late)
                    if any(c.state != OPEN for c in calls):
                        calls[:] = [c for c in calls if c.state == OPEN]
                tick += 1
            timers = self.timers
            while timers and timers[0][0] <= now:
                _, _, kind, c, arg = heapq.heappop(timers)
                if kind == 1:
                    self.echo_due(c, now)
                elif kind == 0:
                    self.dial(arg, now)
                elif kind == 2:
                    self.hang_up(c)
                elif kind == 3 and c.state != DONE:
                    c.error = c.error or "server did not close"
                    self.finish(c, now)
            if self.dirty:
                self.flush()
            if now > a.end and self.live == 0 and not any(t[2] == 0 for t in self.timers):
                break
            if now > deadline + 5:
                self.errors.append(f"gave up with {self.live} calls open")
                break

    # --- call lifecycle -------------------------------------------------------------------

    def dial(self, slot: int, now: float) -> None:
        a = self.args
        if now >= a.end:
            return
        k = self.slot_calls.get(slot, 0)
        self.slot_calls[slot] = k + 1
        cid = slot + k * a.total_slots
        if a.churn > 0:
            media_until = min(a.end, now + a.churn * self.rng.uniform(0.5, 1.5))
        else:
            media_until = a.end
        c = Call(cid, media_until)
        c.t_dial = now
        self.calls.append(c)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5)
        except OSError as exc:
            c.error = f"connect: {exc}"
            c.state = DONE
            self.errors.append(c.error)
            self.redial(c, now)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock = sock
        self.live += 1
        key = b2a_base64(os.urandom(16), newline=False)
        sock.send(W.handshake_request(f"{self.host}:{self.port}", "/media-stream", key))
        self.sel.register(sock, selectors.EVENT_READ, c)

    def redial(self, c: Call, now: float) -> None:
        if self.args.churn > 0 and now < self.args.end:
            self.at(now + self.rng.uniform(0.1, 1.0), 0, None, c.cid % self.args.total_slots)

    def hang_up(self, c: Call) -> None:
        """After the tail: `stop`, then close (as Twilio does), then wait for the server."""
        if c.state != TAIL:
            return
        now = perf()
        quiet_since = max(c.last_rx, c.t_media_end)
        if now - quiet_since < self.args.tail and now - c.t_media_end < self.args.max_tail:
            self.at(quiet_since + self.args.tail, 2, c)  # audio still coming: wait
            return
        c.msgseq += 1
        stop = b'{"event":"stop","sequenceNumber":"%d' % c.msgseq + c.stop_msg
        c.out.append(W.client_header(len(stop)))
        c.out.append(stop)
        close = (1000).to_bytes(2, "big")
        c.out.append(W.client_header(len(close), 8))
        c.out.append(close)
        self.dirty.add(c)
        c.state = CLOSING
        self.at(perf() + self.args.close_timeout, 3, c)

    def finish(self, c: Call, now: float) -> None:
        if c.state == DONE:
            return
        if c.state != CLOSING and not c.error:
            c.error = "server closed the call"
        c.state = DONE
        c.t_done = now
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
        c.rx[c.resp] = max(c.rx.get(c.resp, 0), c.next_idx)
        self.live -= 1
        self.dirty.discard(c)
        self.redial(c, now)

    # --- sending --------------------------------------------------------------------------

    def send_frame(self, c: Call, now: float) -> None:
        n = c.frames
        c.frames = n + 1
        c.msgseq += 1
        body = b"".join((
            MEDIA_HEAD, b"%d" % c.msgseq, b'","media":{"track":"inbound","chunk":"',
            b"%d" % (n + 1), b'","timestamp":"', b"%d" % (n * 20), b'","payload":"',
            b2a_base64(C2M_pack(c.cid, n, perf()), newline=False), c.media_tail,
        ))
        c.out.append(W.client_header(len(body)))
        c.out.append(body)
        self.dirty.add(c)

    def echo(self, c: Call, name: bytes) -> None:
        c.msgseq += 1
        body = (b'{"event":"mark","sequenceNumber":"%d","streamSid":"' % c.msgseq + c.sid
                + b'","mark":{"name":"' + name + b'"}}')
        c.out.append(W.client_header(len(body)))
        c.out.append(body)
        c.echoes += 1
        self.dirty.add(c)

    def echo_due(self, c: Call, now: float) -> None:
        marks = c.marks
        while marks and marks[0][0] <= now:
            self.echo(c, marks.popleft()[1])
        if marks:
            self.at(marks[0][0], 1, c)

    def flush(self) -> None:
        for c in self.dirty:
            if c.sock is None or c.state == DONE:
                c.out.clear()
                continue
            data = b"".join(c.out)
            c.out.clear()
            try:
                sent = c.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                c.error = c.error or f"send: {exc}"
                continue
            if sent < len(data):
                # rare on loopback: finish it blocking, briefly, and count it
                self.errors.append(f"call {c.cid}: partial send")
                c.sock.setblocking(True)
                try:
                    c.sock.sendall(data[sent:])
                finally:
                    c.sock.setblocking(False)
        self.dirty.clear()

    # --- receiving ------------------------------------------------------------------------

    def readable(self, c: Call, now: float) -> None:
        try:
            data = c.sock.recv(262144)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.finish(c, now)
            return
        buf = c.inbuf + data if c.inbuf else data
        if c.state == CONNECTING:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                c.inbuf = buf
                return
            if b" 101 " not in buf[:end].split(b"\r\n", 1)[0]:
                c.error = "handshake: " + buf[:end].split(b"\r\n", 1)[0].decode(errors="replace")
                self.errors.append(c.error)
                self.finish(c, now)
                return
            c.state = OPEN
            c.t_open = now
            c.out.extend(c.start_messages())
            self.dirty.add(c)
            self.phases[c.phase].append(c)
            buf = buf[end + 4:]
        self.frames(c, buf, now)

    def frames(self, c: Call, buf: bytes, now: float) -> None:
        pos = 0
        n = len(buf)
        while (header := W.frame_header(buf, pos, n)) is not None:
            h, ln = header
            end = pos + h + ln
            if end > n:
                break
            op = buf[pos] & 15
            if op == 1:
                self.text(c, buf, pos + h, end, now)
            elif op == 8:
                if c.state == CLOSING:
                    c.clean = True
                else:
                    c.error = c.error or "server closed the call"
                self.finish(c, now)
                return
            elif op == 9:
                payload = buf[pos + h:end]
                c.out.append(W.client_header(len(payload), 10))
                c.out.append(payload)
                self.dirty.add(c)
            pos = end
        c.inbuf = buf[pos:] if pos < n else b""

    def text(self, c: Call, buf: bytes, s: int, e: int, now: float) -> None:
        i = buf.find(b'"event":"', s, e)
        kind = buf[i + 9:i + 14] if i >= 0 else b""
        if kind == b"media":
            c.media_rx += 1
            c.last_rx = now
            j = buf.find(b'"payload":"', s, e) + 11
            raw = a2b_base64(buf[j:buf.find(b'"', j, e)])
            pe = c.play_end
            c.play_end = (pe if pe > now else now) + len(raw) / 8000.0
            # The bridge may re-chunk audio (several deltas in one media): read the
            # stream 160 bytes at a time, whatever the message boundaries.
            if c.partial:
                raw = c.partial + raw
                c.partial = b""
            n = len(raw)
            off = 0
            measure = self.t0 <= now <= self.t1
            while off + 160 <= n:
                cid, resp, idx, stamp = M2C_unpack(raw, off)
                off += 160
                if cid != c.cid:
                    c.foreign += 1
                    continue
                if measure:
                    lat = now - stamp
                    b = int(lat * 100000.0)
                    self.lat.counts[(b if b > 0 else 0) if b < 10000 else bucket(lat)] += 1
                    if lat > c.maxlat:
                        c.maxlat = lat
                        if lat > self.lat.max:
                            self.lat.max = lat
                if resp <= c.stale_below:
                    c.stale += 1
                elif resp == c.resp:
                    if idx == c.next_idx:
                        c.next_idx = idx + 1
                    else:
                        c.gaps += 1
                        if idx > c.next_idx:
                            c.next_idx = idx + 1
                elif resp > c.resp:
                    c.rx[c.resp] = c.next_idx
                    c.resp = resp
                    if idx != 0:
                        c.gaps += 1
                    c.next_idx = idx + 1
                else:
                    c.gaps += 1
            if off < n:
                c.partial = raw[off:]
        elif kind == b'mark"':
            c.marks_rx += 1
            j = buf.find(b'"name":"', s, e) + 8
            name = buf[j:buf.find(b'"', j, e)]
            due = c.play_end
            if due <= now and not c.marks:
                self.echo(c, name)
            else:
                if not c.marks:
                    self.at(due, 1, c)
                c.marks.append((due, name))
        elif kind == b"clear":
            c.clears.append(now)
            c.partial = b""
            c.stale_below = c.resp
            c.play_end = now
            marks = c.marks
            while marks:
                self.echo(c, marks.popleft()[1])
        else:
            self.errors.append(f"call {c.cid}: unexpected {bytes(buf[s:min(e, s + 80)])!r}")

    # --- results --------------------------------------------------------------------------

    def summary(self) -> dict[str, object]:
        calls = {}
        for c in self.calls:
            calls[str(c.cid)] = {
                "sent": c.frames, "rx": {str(r): k for r, k in c.rx.items() if r},
                "gaps": c.gaps, "stale": c.stale, "foreign": c.foreign, "clears": c.clears,
                "media_rx": c.media_rx, "marks_rx": c.marks_rx, "echoes": c.echoes,
                "error": c.error, "max_m2c_ms": round(c.maxlat * 1000, 2),
                "t_dial": c.t_dial, "t_open": c.t_open, "t_done": c.t_done,
            }
        return {"calls": calls, "lat_m2c": self.lat.dump(), "lateness": self.late.dump(),
                "errors": self.errors[:50], "n_errors": len(self.errors),
                "cpu_s": sum(os.times()[:2])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True, help="HOST:PORT of the bridge")
    p.add_argument("--slots", required=True, type=lambda s: tuple(int(x) for x in s.split(":")),
                   help="FIRST:LAST call slots this process runs")
    p.add_argument("--total-slots", type=int, required=True)
    p.add_argument("--start", type=float, required=True, help="perf_counter() of the first dial")
    p.add_argument("--rampup", type=float, default=2.0, help="dials spread over this (s)")
    p.add_argument("--end", type=float, required=True, help="perf_counter() when media stops")
    p.add_argument("--window", type=float, nargs=2, required=True, help="measure between T0 T1")
    p.add_argument("--churn", type=float, default=0.0,
                   help="mean call length in s; calls hang up and redial (0: calls last to --end)")
    p.add_argument("--tail", type=float, default=0.5,
                   help="hang up once no audio arrived for this long after the last frame (s)")
    p.add_argument("--max-tail", type=float, default=10.0, help="but wait no longer than this (s)")
    p.add_argument("--close-timeout", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    return W.run_and_record(Generator(args), args.out)


if __name__ == "__main__":
    sys.exit(main())
