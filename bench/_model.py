"""Bench model: a lean OpenAI Realtime (GA) WebSocket peer that echoes audio in real time.

    python bench/_model.py --port PORT --window T0 T1 --seed S --out FILE

Started by `bench/load.py`, never by hand; it runs until its stdin closes, then
writes what it saw to `--out` and exits.

It speaks just the subset of the GA protocol the bridge uses: `session.created` on
connect, `session.updated` for `session.update`; it takes `input_audio_buffer.append`
and answers with responses (`response.created`, `response.output_audio.delta`...,
`response.output_audio.done`, `response.done`). A response opens with a 100 ms burst
(the real model runs ahead of real time, so the caller's phone always has audio
queued), then sends one 20 ms delta for every caller frame it receives: audio flows
both ways at real-time rate. At random times (seeded per call) the caller
"interrupts": the model sends `input_audio_buffer.speech_started` and stamps the
send, then one more delta of the interrupted response (the real service races like
that: the bridge must drop it), then `response.done` with status `cancelled`
(`turn_detected`), as `interrupt_response` does. The bridge then sends Twilio
`clear` and this model `conversation.item.truncate`, which is answered with
`conversation.item.truncated`, or with the real API's error when `audio_end_ms` is
beyond the audio produced (counted). A new response follows after a pause.

Why not `callbridge.testing.LocalRealtimeServer`: it runs voice activity detection
per sample in Python and is built for faithfulness in tests; for hundreds of calls
it would saturate long before the bridge. This peer decides barge-ins by dice, not
by listening, and only reads the stamps out of the audio (160 bytes at a time, so the
bridge may batch caller frames into larger appends: each frame is still echoed).

Measures: caller->model latency (receive time minus the caller's stamp), and per
call which frames arrived in which order; per response how many deltas it sent
before and after the barge-in; every `speech_started` send time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import sys
import time
from binascii import a2b_base64, b2a_base64

import _wire as W

perf = time.perf_counter
C2M_unpack = W.C2M.unpack_from
M2C_pack = W.M2C.pack
TAIL64 = W.tail_b64(0x2A)
PREROLL = 5  # frames sent at once when a response starts (100 ms ahead)


class Record:
    """What the model saw of one call (keyed by the call id in the caller's stamps)."""

    __slots__ = ("received", "expect", "gaps", "reorders", "resps", "barges", "truncates",
                 "truncate_bad", "truncate_beyond_sent", "cancels", "conns")

    def __init__(self) -> None:
        self.received = 0
        self.expect = 0
        self.gaps = 0        # frames missing in the sequence
        self.reorders = 0    # frames older than one already received
        #: [response no, deltas sent, sent before barge-in, interrupted]
        self.resps: list[list[int]] = []
        self.barges: list[float] = []
        self.truncates = 0
        self.truncate_bad = 0
        self.truncate_beyond_sent = 0
        self.cancels = 0
        self.conns = 0


class Conn:
    __slots__ = ("sock", "inbuf", "out", "http", "cid", "rec", "rng", "state", "left", "resp",
                 "idx", "length", "barge_at", "head", "frames", "items", "pending_stopped",
                 "closing", "partial")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.out: list[bytes] = []
        self.http = True
        self.cid = -1
        self.rec: Record | None = None
        self.rng: random.Random | None = None
        self.state = 0       # 0 idle (counting down `left` frames), 1 speaking
        self.left = 0
        self.resp = 0
        self.idx = 0
        self.length = 0
        self.barge_at = -1
        self.head = b""
        self.frames = 0      # appends received on this connection (the input clock)
        self.items: dict[bytes, list[int]] = {}  # item id -> [deltas sent, sent before barge]
        self.pending_stopped = b""
        self.closing = False
        self.partial = b""  # caller audio of an incomplete 160-byte frame


def frame(body: bytes) -> bytes:
    return W.server_header(len(body)) + body


SESSION = (b'{"type":"realtime","object":"realtime.session","model":"gpt-realtime",'
           b'"output_modalities":["audio"],"audio":{"input":{"format":{"type":"audio/pcmu"}},'
           b'"output":{"format":{"type":"audio/pcmu"},"voice":"marin"}}}')
SESSION_CREATED = frame(b'{"type":"session.created","event_id":"ev_c","session":' + SESSION + b'}')
SESSION_UPDATED = frame(b'{"type":"session.updated","event_id":"ev_u","session":' + SESSION + b'}')


class Model:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0, self.t1 = args.window
        self.sel = selectors.DefaultSelector()
        self.records: dict[int, Record] = {}
        self.lat = W.Hist()
        self.unknown: dict[str, int] = {}
        self.errors: list[str] = []
        self.connections = 0
        self.open = 0
        self.dirty: set[Conn] = set()

    def run(self) -> None:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.args.port))
        lsock.listen(1024)
        lsock.setblocking(False)
        self.sel.register(lsock, selectors.EVENT_READ, None)
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, "stdin")
        print(f"listening {lsock.getsockname()[1]}", flush=True)
        select = self.sel.select
        while True:
            events = select(1.0)
            now = perf()
            for key, _ in events:
                data = key.data
                if data is None:
                    self.accept(lsock)
                elif data == "stdin":
                    try:
                        line = os.read(0, 4096)
                    except BlockingIOError:
                        continue
                    if not line:
                        return
                    for cmd in line.decode().splitlines():
                        if cmd.startswith("window "):
                            self.t0, self.t1 = (float(x) for x in cmd.split()[1:3])
                else:
                    self.readable(data, now)
            if self.dirty:
                for c in self.dirty:
                    if c.out:
                        data = b"".join(c.out)
                        c.out.clear()
                        try:
                            self.send(c, data)
                        except OSError:
                            pass
                self.dirty.clear()

    def send(self, c: Conn, data: bytes) -> None:
        sent = c.sock.send(data)
        if sent < len(data):
            self.errors.append("partial send")
            c.sock.setblocking(True)
            try:
                c.sock.sendall(data[sent:])
            finally:
                c.sock.setblocking(False)

    def accept(self, lsock: socket.socket) -> None:
        while True:
            try:
                sock, _ = lsock.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(sock)
            self.connections += 1
            self.open += 1
            self.sel.register(sock, selectors.EVENT_READ, c)

    def close(self, c: Conn) -> None:
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        self.open -= 1
        self.dirty.discard(c)

    def readable(self, c: Conn, now: float) -> None:
        try:
            data = c.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close(c)
            return
        buf = c.inbuf + data if c.inbuf else data
        if c.http:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                c.inbuf = buf
                return
            head = buf[:end].decode("latin-1")
            key = b""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-key":
                    key = value.strip().encode()
            if not head.startswith("GET /v1/realtime") or not key:
                c.sock.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                self.close(c)
                return
            c.sock.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + W.accept_key(key)
                        + b"\r\n\r\n" + SESSION_CREATED)
            c.http = False
            buf = buf[end + 4:]
        pos = 0
        n = len(buf)
        while (header := W.frame_header(buf, pos, n)) is not None:
            h, ln = header
            key = buf[pos + h - 4:pos + h] if buf[pos + 1] & 128 else b"\0\0\0\0"
            end = pos + h + ln
            if end > n:
                break
            op = buf[pos] & 15
            payload = W.unmask(buf[pos + h:end], key)
            if op == 1:
                self.text(c, payload, now)
            elif op == 8:
                c.out.append(W.server_header(min(2, len(payload)), 8) + payload[:2])
                self.dirty.add(c)
                data = b"".join(c.out)
                c.out.clear()
                try:
                    c.sock.sendall(data)
                except OSError:
                    pass
                self.close(c)
                return
            elif op == 9:
                c.out.append(W.server_header(len(payload), 10) + payload)
                self.dirty.add(c)
            pos = end
        c.inbuf = buf[pos:] if pos < n else b""

    # --- the protocol --------------------------------------------------------------------

    def text(self, c: Conn, p: bytes, now: float) -> None:
        i = p.find(b'"type":"')
        j = p.find(b'"', i + 8)
        kind = p[i + 8:j]
        if kind == b"input_audio_buffer.append":
            a = p.find(b'"audio":"') + 9
            raw = a2b_base64(p[a:p.find(b'"', a)])
            # the bridge may batch caller frames: read the stream 160 bytes at a time
            if c.partial:
                raw = c.partial + raw
                c.partial = b""
            n = len(raw)
            off = 0
            measure = self.t0 <= now <= self.t1
            while off + 160 <= n:
                cid, seq, stamp = C2M_unpack(raw, off)
                off += 160
                if measure:
                    lat = now - stamp
                    b = int(lat * 100000.0)
                    self.lat.counts[(b if b > 0 else 0) if b < 10000 else W.bucket(lat)] += 1
                    if lat > self.lat.max:
                        self.lat.max = lat
                rec = c.rec
                if rec is None:
                    self.bind(c, cid)
                    rec = c.rec
                    assert rec is not None
                elif cid != c.cid:
                    self.errors.append(f"call {c.cid} got a frame of call {cid}")
                    continue
                rec.received += 1
                if seq == rec.expect:
                    rec.expect = seq + 1
                elif seq > rec.expect:
                    rec.gaps += seq - rec.expect
                    rec.expect = seq + 1
                else:
                    rec.reorders += 1
                self.tick(c, now)
            if off < n:
                c.partial = raw[off:]
        elif kind == b"session.update":
            c.out.append(SESSION_UPDATED)
            self.dirty.add(c)
        elif kind == b"conversation.item.truncate":
            self.truncate(c, json.loads(p))
        elif kind == b"response.cancel":
            if c.rec is not None:
                c.rec.cancels += 1
            if c.state == 1:
                self.end_response(c, b"cancelled", b"client_cancelled")
        else:
            name = kind.decode(errors="replace")
            self.unknown[name] = self.unknown.get(name, 0) + 1

    def bind(self, c: Conn, cid: int) -> None:
        c.cid = cid
        rec = self.records.get(cid)
        if rec is None:
            rec = self.records[cid] = Record()
        rec.conns += 1
        c.rec = rec
        c.rng = random.Random(self.args.seed * 1000003 + cid)
        c.state = 0
        c.left = c.rng.randint(5, 25)

    def tick(self, c: Conn, now: float) -> None:
        """One caller frame arrived: 20 ms of call time passed."""
        c.frames += 1
        if c.state == 0:
            c.left -= 1
            if c.left <= 0:
                self.start_response(c)
            return
        self.delta(c)
        if c.idx == c.barge_at:
            self.barge_in(c)
        elif c.idx >= c.length:
            c.out.append(frame(b'{"type":"response.output_audio.done","response_id":"resp_%d_%d",'
                               b'"item_id":"item_%d_%d","output_index":0,"content_index":0}'
                               % (c.cid, c.resp, c.cid, c.resp)))
            self.end_response(c, b"completed", b"")
            c.left = c.rng.randint(10, 40)  # type: ignore[union-attr]

    def start_response(self, c: Conn) -> None:
        rng = c.rng
        assert rng is not None
        assert c.rec is not None
        c.resp += 1
        r = c.resp
        c.state = 1
        c.idx = 0
        c.length = PREROLL + rng.randint(75, 250)
        c.barge_at = rng.randint(PREROLL + 10, c.length - 1) if rng.random() < 0.6 else -1
        c.head = (b'{"type":"response.output_audio.delta","response_id":"resp_%d_%d",'
                  b'"item_id":"item_%d_%d","output_index":0,"content_index":0,"delta":"'
                  % (c.cid, r, c.cid, r))
        c.items[b"item_%d_%d" % (c.cid, r)] = [0, -1]
        c.rec.resps.append([r, 0, -1, 0])
        out = c.out
        if c.pending_stopped:
            out.append(c.pending_stopped)
            c.pending_stopped = b""
        out.append(frame(b'{"type":"response.created","event_id":"ev","response":{"id":"resp_%d_%d",'
                         b'"object":"realtime.response","status":"in_progress","output":[]}}'
                         % (c.cid, r)))
        for _ in range(PREROLL):
            self.delta(c)
        self.dirty.add(c)

    def delta(self, c: Conn) -> None:
        body = b"".join((c.head, b2a_base64(M2C_pack(c.cid, c.resp, c.idx, perf()), newline=False),
                         TAIL64, b'"}'))
        c.out.append(W.server_header(len(body)))
        c.out.append(body)
        c.idx += 1
        c.rec.resps[-1][1] += 1  # type: ignore[union-attr]
        self.dirty.add(c)

    def barge_in(self, c: Conn) -> None:
        rec = c.rec
        assert rec is not None
        assert c.rng is not None
        ms = c.frames * 20
        r = c.resp
        rec.resps[-1][2] = c.idx
        rec.resps[-1][3] = 1
        started = frame(b'{"type":"input_audio_buffer.speech_started","event_id":"ev",'
                        b'"audio_start_ms":%d,"item_id":"item_u_%d_%d"}' % (ms, c.cid, r))
        # stamp, then send at once (not at the end of this loop pass) so the stamp is true
        data = b"".join(c.out) + started
        c.out.clear()
        rec.barges.append(perf())
        try:
            self.send(c, data)
        except OSError:
            pass
        self.delta(c)  # the race: one more delta of the interrupted response
        self.end_response(c, b"cancelled", b"turn_detected")
        c.left = c.rng.randint(10, 30)
        c.pending_stopped = frame(b'{"type":"input_audio_buffer.speech_stopped","event_id":"ev",'
                                  b'"audio_end_ms":%d,"item_id":"item_u_%d_%d"}'
                                  % (ms + 20 * c.left, c.cid, r))

    def end_response(self, c: Conn, status: bytes, reason: bytes) -> None:
        details = (b',"status_details":{"type":"%s","reason":"%s"}' % (status, reason)
                   if reason else b"")
        c.out.append(frame(b'{"type":"response.done","event_id":"ev","response":{"id":"resp_%d_%d",'
                           b'"object":"realtime.response","status":"%s"%s,"output":[]}}'
                           % (c.cid, c.resp, status, details)))
        item = c.items.get(b"item_%d_%d" % (c.cid, c.resp))
        if item is not None and c.rec is not None:
            item[0] = c.rec.resps[-1][1]
            item[1] = c.rec.resps[-1][2]
        c.state = 0
        self.dirty.add(c)

    def truncate(self, c: Conn, event: dict[str, object]) -> None:
        rec = c.rec
        item_id = str(event.get("item_id", "")).encode()
        end_ms = event.get("audio_end_ms")
        if rec is not None:
            rec.truncates += 1
        item = c.items.get(item_id)
        if item is None and item_id == b"item_%d_%d" % (c.cid, c.resp):
            item = [c.rec.resps[-1][1], c.rec.resps[-1][2]] if c.rec else None  # still going
        if item is None or not isinstance(end_ms, int):
            if rec is not None:
                rec.truncate_bad += 1
            self.errors.append(f"bad truncate {event!r}")
            body = (b'{"type":"error","event_id":"ev","error":{"type":"invalid_request_error",'
                    b'"code":"item_not_found","message":"no such item"}}')
        elif end_ms > item[0] * 20:
            assert rec is not None
            rec.truncate_bad += 1
            body = (b'{"type":"error","event_id":"ev","error":{"type":"invalid_request_error",'
                    b'"code":"invalid_value","message":"Audio content of %dms is already shorter '
                    b'than %dms"}}' % (item[0] * 20, end_ms))
        else:
            if item[1] >= 0 and end_ms > item[1] * 20 and rec is not None:
                rec.truncate_beyond_sent += 1  # more than was sent before the barge-in
            body = (b'{"type":"conversation.item.truncated","event_id":"ev","item_id":"%s",'
                    b'"content_index":0,"audio_end_ms":%d}' % (item_id, end_ms))
        c.out.append(frame(body))
        self.dirty.add(c)

    def summary(self) -> dict[str, object]:
        return {
            "calls": {str(cid): {
                "received": r.received, "gaps": r.gaps, "reorders": r.reorders,
                "resps": r.resps, "barges": r.barges, "truncates": r.truncates,
                "truncate_bad": r.truncate_bad, "truncate_beyond_sent": r.truncate_beyond_sent,
                "cancels": r.cancels, "conns": r.conns,
            } for cid, r in self.records.items()},
            "lat_c2m": self.lat.dump(), "connections": self.connections, "open": self.open,
            "unknown": self.unknown, "errors": self.errors[:50], "n_errors": len(self.errors),
            "cpu_s": sum(os.times()[:2]),
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--window", type=float, nargs=2, default=(0.0, float("inf")),
                   help="measure latency between these perf_counter() times")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    return W.run_and_record(Model(args), args.out)


if __name__ == "__main__":
    sys.exit(main())
