"""The call viewer: a record's page, checked as text and in a real headless Chromium.

The text tests look for the picture's elements, the escaping of what callers and
models say, and the absence of any resource from the network. The browser test opens
the page from a file in Debian's Chromium and drives it over the DevTools protocol:
the timeline's elements are there and have a size, the bars are painted in their
colours (a screenshot, its PNG decoded here), the recording decodes, an injected
script did not run, and the page asked for nothing but itself and its data: URIs.
No timing is asserted; every wait is bounded, generously, for slow CI machines.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import wave
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from callbridge._viewer import render_html
from callbridge.records import CallRecord, Moment, Turn

#: Debian's package `chromium`; CI installs it before the tests
CHROMIUM = "/usr/bin/chromium"
#: for each step in the browser: generous, since CI machines can be slow
STEP_TIMEOUT = 60

HOSTILE = ('</title><script>window.pwned = 1</script>'
           '<img src=x onerror="window.pwned = 2"> see https://evil.example/x.js')


def sample_record(*, caller_text: str = "I'd like to book a table for two.",
                  recording: str | None = None) -> CallRecord:
    """A ten-second call: two exchanges, a barge-in, two tool calls, a keypress."""
    turns = (
        Turn(speaker="caller", start_ms=500, end_ms=2000, text=caller_text, item_id="c1"),
        Turn(speaker="agent", start_ms=2600, end_ms=5000, text="Sure, for which",
             item_id="a1", heard_ms=2100, cut=True),
        Turn(speaker="caller", start_ms=4800, end_ms=6400, text="Tonight at eight.",
             item_id="c2"),
        Turn(speaker="agent", start_ms=7300, end_ms=9200, text="Booked: tonight at eight.",
             item_id="a2"),
    )
    timeline = (
        Moment(t_ms=0, kind="start", summary="stream MZ1 of call CA1"),
        Moment(t_ms=120, kind="model_connected", summary="model connection 1 opened (first)",
               data={"connection": 1, "why": "first"}),
        Moment(t_ms=4800, kind="barge_in", summary="the caller spoke over the agent",
               data={"reaction_ms": 180, "item_id": "a1", "heard_ms": 2100,
                     "produced_ms": 3400}),
        Moment(t_ms=6500, kind="tool_call", summary="book_table: ok in 600 ms",
               data={"name": "book_table", "call_id": "t1", "arguments": '{"n": 2}',
                     "output": '{"ok": true}', "outcome": "ok", "duration_ms": 600}),
        Moment(t_ms=6600, kind="tool_call", summary="<b>lookup</b>: error in 90 ms",
               data={"name": "<b>lookup</b>", "call_id": "t2", "arguments": "{}",
                     "output": HOSTILE, "outcome": "error", "duration_ms": 90}),
        Moment(t_ms=9400, kind="dtmf", summary="the caller pressed 5", data={"digit": "5"}),
        Moment(t_ms=10000, kind="end", summary="ended: twilio_stop",
               data={"reason": "twilio_stop", "detail": ""}),
    )
    return CallRecord(
        stream_sid="MZ1", call_sid="CA1", started_at=1_700_000_000.25, duration_s=10.0,
        end_reason="twilio_stop", end_detail="the caller hung up",
        from_number="+15550001111", to_number="+15550002222", agent="host",
        parameters={"from": "+15550001111", "to": "+15550002222", "lang": "en"},
        turns=turns, timeline=timeline, response_latency_ms=(600, 900),
        barge_in_reaction_ms=(180,),
        stats={"frames_in": 500, "barge_ins": 1, "tool_calls": 2, "input_tokens": 1234,
               "output_tokens": 567},
        recording=recording)


def sample_wav(seconds: float = 1.0) -> bytes:
    """A stereo 16-bit 8 kHz WAV, as callbridge records: a tone on each side."""
    frames = bytearray()
    for i in range(round(8000 * seconds)):
        left = 8000 if (i // 20) % 2 else -8000
        right = 4000 if (i // 9) % 2 else -4000
        frames += struct.pack("<hh", left, right)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(frames))
    return out.getvalue()


def count(page: str, cls: str) -> int:
    """Elements whose class attribute has all of `cls`'s classes."""
    wanted = set(cls.split())
    return sum(wanted <= set(m.split()) for m in re.findall(r'<(?:g|rect) class="([^"]*)"', page))


# --- the page as text ----------------------------------------------------------------


def test_page_has_the_pictures_elements() -> None:
    page = render_html(sample_record())
    assert page.count('id="timeline"') == 1
    assert count(page, "turn caller") == 2 * 2  # each turn: its group and its bar
    assert count(page, "turn agent") == 2 * 2
    assert count(page, "turn agent cut") == 2
    assert page.count('class="cut-hatch"') == 1
    assert count(page, "barge-in") == 1
    assert count(page, "tool-call") == 2
    assert count(page, "tool-call ok") == 1
    assert count(page, "tool-call failed") == 1
    assert count(page, "dtmf") == 1
    assert count(page, "latency") == 2  # both caller turns were answered
    assert count(page, "moment") == 3  # start, model_connected, end
    assert "180 ms" in page  # the barge-in's reaction
    assert "book_table: ok (600 ms)" in page
    assert "cut off: the caller heard 2100 ms" in page


def test_header_tables_and_summary() -> None:
    page = render_html(sample_record())
    for text in ("CA1", "MZ1", "+15550001111", "+15550002222", "host",
                 "2023-11-14T22:13:20.250+00:00", "10.000 s",
                 "twilio_stop (the caller hung up)", "parameter lang"):
        assert text in page
    assert page.count('class="utterance caller"') == 2
    assert page.count('class="utterance agent"') == 2
    # in time order: the caller's interruption comes after the agent's cut turn
    assert page.index("Sure, for which") < page.index("Tonight at eight.")
    assert page.count('<tr class="moment-row') == 7
    assert "<td>response latency</td><td>2</td><td>750 ms</td><td>900 ms</td>" in page
    assert "<td>barge-in reaction</td><td>1</td><td>180 ms</td><td>180 ms</td>" in page
    tokens = page[page.index('id="tokens"'):]
    assert "input_tokens" in tokens and "1234" in tokens and "frames_in" not in tokens
    assert "No recording." in page and "<audio" not in page and "<script" not in page


def test_hostile_text_is_escaped() -> None:
    record = sample_record(caller_text=HOSTILE)
    page = render_html(record)
    assert "<script>window.pwned" not in page
    assert "<img src=x" not in page
    assert "<b>lookup</b>" not in page
    assert html_escaped(HOSTILE) in page
    assert "&lt;b&gt;lookup&lt;/b&gt;" in page
    # and in every field of the header
    hostile_header = CallRecord(stream_sid=HOSTILE, call_sid=HOSTILE, started_at=0,
                                duration_s=0, end_reason=HOSTILE, end_detail=HOSTILE,
                                from_number=HOSTILE, to_number=HOSTILE, agent=HOSTILE,
                                parameters={HOSTILE: HOSTILE}, recording=HOSTILE,
                                timeline=(Moment(t_ms=0, kind=HOSTILE, summary=HOSTILE,
                                                 data={HOSTILE: HOSTILE}),))
    page = render_html(hostile_header, sample_wav(0.1))
    assert "<script>window" not in page and "<img" not in page
    assert page.count("<script>") == 1  # the page's own


def html_escaped(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#x27;"))


class Resources(HTMLParser):
    """The page's tags, the URLs in their attributes, and its CSS."""

    URL_ATTRIBUTES = frozenset({"src", "href", "xlink:href", "action", "formaction", "poster",
                                "data", "srcset", "background", "ping", "manifest"})

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.urls: list[str] = []
        self.css: list[str] = []
        self._in_style = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in self.URL_ATTRIBUTES:
                self.urls.append(value or "")
            elif name == "style":
                self.css.append(value or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css.append(data)


@pytest.mark.parametrize("with_recording", [False, True])
def test_page_loads_nothing_from_anywhere(with_recording: bool) -> None:
    page = render_html(sample_record(caller_text="see https://example.com/a.png"),
                       sample_wav(0.2) if with_recording else None)
    found = Resources(page)
    # the recording, when there is one, and nothing else
    assert len(found.urls) == with_recording
    assert all(url.startswith("data:audio/wav;base64,") for url in found.urls)
    css = "".join(found.css)
    assert "@import" not in css
    assert re.findall(r"url\(([^)]*)\)", css) == ["#hatch"]
    assert not found.tags & {"link", "img", "iframe", "object", "embed", "base", "source",
                             "video", "frame", "frameset", "picture"}
    assert "refresh" not in page.lower()
    # the only URLs are in what the caller and a tool said, as text
    assert "http://" not in page
    assert set(re.findall(r"https://([\w.]+)", page)) == {"example.com", "evil.example"}


def test_policy_allows_exactly_the_pages_script() -> None:
    page = render_html(sample_record(), sample_wav(0.2))
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert policy is not None
    assert "default-src &#x27;none&#x27;" in policy[1]
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src &#x27;sha256-{digest}&#x27;" in policy[1]


def test_recording_is_embedded() -> None:
    wav = sample_wav(0.2)
    page = render_html(sample_record(), wav)
    found = re.search(r'<audio id="player" controls[^>]* src="data:audio/wav;base64,([^"]+)"',
                      page)
    assert found is not None
    assert base64.b64decode(found[1]) == wav


def test_empty_record() -> None:
    """A call that ended at once: no turns, no moments, no counters, still a page."""
    page = render_html(CallRecord(stream_sid="", call_sid="", started_at=0, duration_s=0,
                                  end_reason="model_failed"))
    assert 'id="timeline"' in page and "Nobody spoke." in page and "No moments." in page
    assert count(page, "turn") == 0
    odd = CallRecord(stream_sid="", call_sid="", started_at=1e300, duration_s=-1,
                     end_reason="", turns=(Turn(speaker="agent", start_ms=-5, end_ms=-9),),
                     timeline=(Moment(t_ms=-1, kind="", summary="",
                                      data={"reaction_ms": "x", "duration_ms": None}),))
    assert "1e+300" in render_html(odd)


def test_long_call_stays_bounded() -> None:
    """An hour-long call with many turns: the picture keeps a bounded width."""
    turns = tuple(Turn(speaker="caller" if i % 2 else "agent", start_ms=i * 3000,
                       end_ms=i * 3000 + 2000, text=f"turn {i}") for i in range(1200))
    page = render_html(CallRecord(stream_sid="MZ", call_sid="CA", started_at=0,
                                  duration_s=3600, end_reason="twilio_stop", turns=turns))
    width = re.search(r'<svg id="timeline" width="(\d+)"', page)
    assert width is not None and int(width[1]) <= 8100
    assert count(page, "turn caller") == 1200


# --- the page in a real browser ------------------------------------------------------


class DevTools:
    """A minimal Chrome DevTools Protocol client: one command at a time, and the
    events that arrive meanwhile kept in order."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        self._last_id += 1
        ident = self._last_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        with trio.fail_after(STEP_TIMEOUT):
            await self._ws.send_message(json.dumps(message))
            while True:
                reply = json.loads(await self._ws.get_message())
                if reply.get("id") != ident:
                    self.events.append(reply)
                elif "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                else:
                    return reply["result"]

    async def event(self, method: str) -> dict[str, Any]:
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                for seen in self.events:
                    if seen.get("method") == method:
                        return seen
                self.events.append(json.loads(await self._ws.get_message()))

    async def js(self, session: str, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", session, expression=expression,
                                 awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")


def png_rows(png: bytes) -> list[list[tuple[int, int, int]]]:
    """A PNG's pixels (8-bit RGB or RGBA, not interlaced), as RGB rows."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind_, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            if kind_ == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind_ == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind_ == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind_ == 4:
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append([(line[x], line[x + 1], line[x + 2]) for x in range(0, stride, bpp)])
        prev = line
    return rows


def close_to(pixel: tuple[int, int, int], css: str) -> bool:
    want = bytes.fromhex(css.lstrip("#"))
    return all(abs(p - w) <= 4 for p, w in zip(pixel, want, strict=True))


async def open_chromium(profile: Path, log: Path) -> tuple[trio.Process, str]:
    """Headless Chromium on a loopback DevTools port: the process and the URL of its
    browser endpoint."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the viewer's test needs Debian's Chromium "
                    "(apt-get install -y chromium)")
    with open(log, "wb") as out:  # noqa: ASYNC230 (before Chromium runs: nothing waits)
        process = await trio.lowlevel.open_process(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
             "--window-size=1200,1600",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    # Chromium writes its port and browser endpoint's path here once it listens
    active = trio.Path(profile / "DevToolsActivePort")
    lines: list[str] = []
    with trio.fail_after(STEP_TIMEOUT):
        while len(lines) < 2:
            if process.poll() is not None:
                output = await trio.Path(log).read_text(errors="replace")
                pytest.fail(f"Chromium exited ({process.returncode}):\n{output}")
            await trio.sleep(0.05)
            if await active.is_file():
                lines = (await active.read_text()).splitlines()
    port, path = lines[:2]
    return process, f"ws://127.0.0.1:{port}{path}"


async def close_chromium(process: trio.Process, *, asked: bool) -> None:
    """Wait for Chromium to exit when it was asked to (`Browser.close`); kill it, with
    the renderers and helpers of its session, when it was not or did not."""
    if asked:
        with trio.CancelScope(shield=True), trio.move_on_after(STEP_TIMEOUT):
            await process.wait()
    if process.poll() is None:  # not yet reaped, so its process group is still ours
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        with trio.CancelScope(shield=True), trio.move_on_after(STEP_TIMEOUT):
            await process.wait()


@asynccontextmanager
async def chromium_page(tmp_path: Path, page: str, *, bypass_csp: bool
                        ) -> AsyncIterator[tuple[DevTools, str]]:
    """`page` loaded from a file in a fresh headless Chromium, 1200x1600: the DevTools
    client (its events kept from the navigation on) and the page's session."""
    page_file = tmp_path / "call.html"
    await trio.Path(page_file).write_text(page, encoding="utf-8")
    process, browser_url = await open_chromium(tmp_path / "profile", tmp_path / "chromium.log")
    asked = False
    try:
        async with open_websocket_url(browser_url, max_message_size=64 * 1024 * 1024) as ws:
            devtools = DevTools(ws)
            target = await devtools.call("Target.createTarget", url="about:blank")
            attached = await devtools.call("Target.attachToTarget",
                                           targetId=target["targetId"], flatten=True)
            session = attached["sessionId"]
            for domain in ("Page", "Network", "Runtime", "Log"):
                await devtools.call(f"{domain}.enable", session)
            if bypass_csp:  # every request the page makes is seen, even those it forbids
                await devtools.call("Page.setBypassCSP", session, enabled=True)
            await devtools.call("Emulation.setDeviceMetricsOverride", session, width=1200,
                                height=1600, deviceScaleFactor=1, mobile=False)
            devtools.events.clear()
            await devtools.call("Page.navigate", session, url=page_file.as_uri())
            await devtools.event("Page.loadEventFired")
            try:
                yield devtools, session
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(STEP_TIMEOUT):
                    try:
                        await ws.send_message(json.dumps({"id": 0, "method": "Browser.close"}))
                        asked = True
                    except ConnectionClosed:
                        pass
    finally:
        await close_chromium(process, asked=asked)


#: the recording's length, once its metadata is loaded
AUDIO_DURATION = """new Promise(done => {
    const a = document.getElementById('player');
    if (a.readyState >= 1) { done(a.duration); return; }
    a.addEventListener('loadedmetadata', () => done(a.duration));
    a.addEventListener('error', () => done('error ' + a.error.code));
    a.load();
})"""


@pytest.mark.slow
async def test_page_renders_in_chromium_without_network(tmp_path: Path) -> None:
    page = render_html(sample_record(caller_text=HOSTILE), sample_wav(1.0))
    async with chromium_page(tmp_path, page, bypass_csp=True) as (devtools, session):
        assert await devtools.js(session, AUDIO_DURATION) == pytest.approx(1.0, abs=0.01)
        found = await devtools.js(session, """(() => {
            const n = s => document.querySelectorAll(s).length;
            const box = document.getElementById('timeline').getBoundingClientRect();
            const bars = [...document.querySelectorAll('#timeline rect.turn')].map(r => {
                const b = r.getBoundingClientRect();
                return {cls: r.getAttribute('class'), x: b.x + b.width / 2,
                        y: b.y + b.height / 2, width: b.width, height: b.height};
            });
            return {turns: n('#timeline .turn'), caller: n('#timeline rect.turn.caller'),
                    agent: n('#timeline rect.turn.agent'),
                    bargeIns: n('#timeline .barge-in'), tools: n('#timeline .tool-call'),
                    dtmf: n('#timeline .dtmf'), scripts: n('script'),
                    pwned: window.pwned === undefined ? null : window.pwned,
                    box: {x: box.x, y: box.y, width: box.width, height: box.height},
                    bars: bars};
        })()""")
        assert found["caller"] == 2 and found["agent"] == 2
        assert found["turns"] == 8  # the groups and their bars
        assert (found["bargeIns"], found["tools"], found["dtmf"]) == (1, 2, 1)
        assert found["scripts"] == 1 and found["pwned"] is None
        box = found["box"]
        assert box["width"] > 500 and box["height"] > 100
        assert all(b["width"] > 0 and b["height"] > 0 for b in found["bars"])

        shot = await devtools.call("Page.captureScreenshot", session, format="png")
        full = base64.b64decode(shot["data"])
        await trio.Path(tmp_path / "call.png").write_bytes(full)
        assert full[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", full[16:24]) == (1200, 1600)
        # the timeline, decoded: not blank, and each bar painted in its speaker's colour
        clip = {"x": box["x"], "y": box["y"], "width": box["width"], "height": box["height"],
                "scale": 1}
        shot = await devtools.call("Page.captureScreenshot", session, format="png", clip=clip)
        rows = png_rows(base64.b64decode(shot["data"]))
        assert len({pixel for row in rows for pixel in row}) >= 8, "a blank timeline"
        for bar in found["bars"]:
            pixel = rows[round(bar["y"] - box["y"])][round(bar["x"] - box["x"])]
            colour = "#64b5f6" if "caller" in bar["cls"] else "#81c784"
            assert close_to(pixel, colour), (bar, pixel)

        requests = [e["params"]["request"]["url"] for e in devtools.events
                    if e.get("method") == "Network.requestWillBeSent"]
        page_url = (tmp_path / "call.html").as_uri()
        assert page_url in requests
        assert all(url == page_url or url.startswith("data:") for url in requests), requests


@pytest.mark.slow
async def test_page_script_runs_under_its_policy(tmp_path: Path) -> None:
    """With its Content-Security-Policy in force, the page's own script runs (a click
    on the timeline seeks the recording and moves the playhead), and nothing is
    refused."""
    page = render_html(sample_record(), sample_wav(1.0))
    async with chromium_page(tmp_path, page, bypass_csp=False) as (devtools, session):
        assert await devtools.js(session, AUDIO_DURATION) == pytest.approx(1.0, abs=0.01)
        seek = await devtools.js(session, """new Promise(done => {
            const a = document.getElementById('player');
            const svg = document.getElementById('timeline');
            const p = document.getElementById('playhead');
            a.addEventListener('timeupdate', () => done({
                time: a.currentTime, x: +p.getAttribute('x1'),
                visible: p.getAttribute('visibility')}), {once: true});
            const box = svg.getBoundingClientRect();
            const x = box.left + +svg.dataset.left + 500 * +svg.dataset.pxPerMs;
            svg.dispatchEvent(new MouseEvent('click', {clientX: x, clientY: box.top + 50,
                                                       bubbles: true}));
        })""")
        assert seek["time"] == pytest.approx(0.5, abs=0.01)
        assert seek["visible"] == "visible"
        svg = await devtools.js(session, "({left: +document.getElementById('timeline')"
                                         ".dataset.left, k: +document.getElementById("
                                         "'timeline').dataset.pxPerMs})")
        assert seek["x"] == pytest.approx(svg["left"] + 500 * svg["k"], abs=2)
        refused = [e["params"]["entry"] for e in devtools.events
                   if e.get("method") == "Log.entryAdded"
                   and e["params"]["entry"].get("level") == "error"]
        assert refused == []


async def test_missing_chromium_fails_clearly(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        await open_chromium(tmp_path / "profile", tmp_path / "log")
