"""A call's record as one self-contained HTML page (sans-I/O).

`render_html` turns a `CallRecord` (and, optionally, its recording's bytes) into a
single HTML document that needs nothing else: the CSS is inline, the timeline is an
SVG drawn here, the recording is a `data:` URI and the only script (a playhead for the
recording) is inline. The page is meant to be saved, mailed or attached to a ticket
and opened offline, so it loads nothing from anywhere; its Content-Security-Policy
says so too (`default-src 'none'`, the one script allowed by its hash).

Everything in a record came from the caller, the model or a tool (transcripts, tool
arguments and output, error messages, even the SIDs), so every such string goes
through `html.escape` on its way into the page, attributes and SVG included; the
policy is a second line: an injected `<script>` would not run even if escaping were
missed.

Theory of the picture: one horizontal scale, ms -> px, for the whole call. Lanes from
the top: the time axis, the caller's turns, the response latencies (a bracket from
the end of a caller turn to the start of the agent's answer), the agent's turns (a
turn cut by a barge-in ends in a hatched, red-edged stub), then the moments (tool
calls as bars for their duration, keypresses as dots, everything else as ticks).
A barge-in is a vertical line across the speech lanes where the caller started
speaking, with a short bar for the time until the playback was cleared.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from .records import CallRecord, Moment, Turn

__all__ = ["render_html"]

#: the picture's geometry, px
_LEFT, _RIGHT = 70, 20
_MIN_WIDTH, _MAX_WIDTH = 1000, 8000
#: px per second a call is drawn at, at least, until the picture is _MAX_WIDTH wide
_PX_PER_S = 40
_AXIS_Y, _CALLER_Y, _AGENT_Y, _MOMENTS_Y = 24, 40, 104, 160
_LANE_H = 28
#: the events' rows: their height, and how many at most before labels overlap
_ROW_H, _MAX_ROWS = 30, 6
#: tick steps of the time axis, seconds
_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
_OUTCOME_CLASS = {"ok": "ok", "unfinished": "unfinished"}  # anything else: failed


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _kind_class(kind: str) -> str:
    """A moment's kind as a CSS class: only [a-z0-9_-] (a kind is a plain word, but a
    record read back from JSON could say anything)."""
    return "kind-" + (re.sub(r"[^a-z0-9_-]", "", kind.lower()) or "other")


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return round(value)


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.2f} s"


class _Scale:
    """ms since the call began -> x in px."""

    def __init__(self, record: CallRecord) -> None:
        ends = [record.duration_s * 1000]
        ends += [t.end_ms for t in record.turns]
        for m in record.timeline:
            ends.append(m.t_ms + (_int(m.data.get("duration_ms")) or 0))
        self.span_ms = max(1.0, *ends)
        width = min(_MAX_WIDTH, max(_MIN_WIDTH, round(self.span_ms / 1000 * _PX_PER_S)))
        self.width = width + _LEFT + _RIGHT
        self.px_per_ms = width / self.span_ms

    def x(self, ms: float) -> float:
        return round(_LEFT + max(0.0, ms) * self.px_per_ms, 1)

    def step_s(self) -> float:
        """A tick step that puts the ticks at least 70 px apart."""
        for step in _STEPS:
            if step * 1000 * self.px_per_ms >= 70:
                return step
        return _STEPS[-1]


# --- the timeline picture ----------------------------------------------------------------


def _axis(scale: _Scale, height: int) -> Iterable[str]:
    yield (f'<line class="axis" x1="{_LEFT}" y1="{_AXIS_Y}" x2="{scale.x(scale.span_ms)}" '
           f'y2="{_AXIS_Y}"/>')
    step, i = scale.step_s(), 0
    while i * step * 1000 <= scale.span_ms:
        x = scale.x(i * step * 1000)
        label = f"{i * step:g}"
        yield (f'<line class="tick" x1="{x}" y1="{_AXIS_Y - 4}" x2="{x}" y2="{height - 4}"/>'
               f'<text class="tick-label" x="{x}" y="{_AXIS_Y - 8}">{label} s</text>')
        i += 1
    for y, name in ((_CALLER_Y, "caller"), (_AGENT_Y, "agent"), (_MOMENTS_Y, "events")):
        yield f'<text class="lane-label" x="4" y="{y + _LANE_H / 2 + 4}">{name}</text>'


def _turn_bars(scale: _Scale, turns: Sequence[Turn]) -> Iterable[str]:
    for turn in turns:
        y = _CALLER_Y if turn.speaker == "caller" else _AGENT_Y
        x0, x1 = scale.x(turn.start_ms), scale.x(turn.end_ms)
        width = max(2.0, round(x1 - x0, 1))
        tip = f"{turn.speaker} {_seconds(turn.start_ms)} – {_seconds(turn.end_ms)}"
        if turn.cut:
            heard = f"{turn.heard_ms} ms" if turn.heard_ms is not None else "unknown"
            tip += f", cut off: the caller heard {heard} of it"
        if turn.text:
            tip += f"\n{turn.text}"
        classes = f"turn {'caller' if turn.speaker == 'caller' else 'agent'}"
        classes += " cut" if turn.cut else ""
        yield (f'<g class="{classes}" data-item="{_e(turn.item_id)}">'
               f'<rect class="{classes}" x="{x0}" y="{y}" width="{width}" '
               f'height="{_LANE_H}" rx="3"><title>{_e(tip)}</title></rect>')
        if turn.cut:  # a hatched stub and a red edge where the barge-in cut it
            stub = min(width, 10.0)
            yield (f'<rect class="cut-hatch" x="{round(x0 + width - stub, 1)}" y="{y}" '
                   f'width="{stub}" height="{_LANE_H}"/>'
                   f'<line class="cut-mark" x1="{round(x0 + width, 1)}" y1="{y - 3}" '
                   f'x2="{round(x0 + width, 1)}" y2="{y + _LANE_H + 3}">'
                   f'<title>{_e(tip)}</title></line>')
        yield "</g>"


def _latency_pairs(turns: Sequence[Turn]) -> list[tuple[Turn, Turn]]:
    """Each caller turn and the agent turn that answered it: the next turn to start
    after the caller's ended, when that is the agent's."""
    ordered = sorted(turns, key=lambda t: (t.start_ms, t.speaker))
    pairs = []
    for i, turn in enumerate(ordered):
        if turn.speaker != "caller":
            continue
        # caller turns do not overlap, so a caller speaking again comes first here
        after = next((t for t in ordered[i + 1:] if t.start_ms >= turn.end_ms), None)
        if after is not None and after.speaker == "agent":
            pairs.append((turn, after))
    return pairs


def _latencies(scale: _Scale, turns: Sequence[Turn]) -> Iterable[str]:
    top, bottom = _CALLER_Y + _LANE_H + 2, _AGENT_Y - 2
    mid = (top + bottom) / 2
    for said, answer in _latency_pairs(turns):
        x0, x1 = scale.x(said.end_ms), scale.x(answer.start_ms)
        ms = answer.start_ms - said.end_ms
        yield (f'<g class="latency"><title>response latency {ms} ms</title>'
               f'<path d="M{x0},{top} V{mid} H{x1} V{bottom}"/>'
               f'<text x="{round((x0 + x1) / 2, 1)}" y="{mid - 3}">{ms} ms</text></g>')


class _Rows:
    """Rows for the events' markers and labels, so that labels do not overlap: each
    goes in the first row free from its x on (or, when none is, the one free soonest)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def place(self, x0: float, x1: float) -> int:
        for row, end in enumerate(self.ends):
            if x0 >= end + 6:
                self.ends[row] = x1
                return row
        if len(self.ends) < _MAX_ROWS:
            self.ends.append(x1)
            return len(self.ends) - 1
        row = min(range(len(self.ends)), key=self.ends.__getitem__)
        self.ends[row] = max(self.ends[row], x1)
        return row


def _label_px(text: str) -> float:
    return 6.2 * len(text)


def _barge_in(scale: _Scale, m: Moment) -> str:
    top, bottom = _CALLER_Y - 4, _AGENT_Y + _LANE_H + 4
    x, tip = scale.x(m.t_ms), f"{_seconds(m.t_ms)} barge-in: {m.summary}"
    reaction = _int(m.data.get("reaction_ms"))
    heard = _int(m.data.get("heard_ms"))
    end = scale.x(m.t_ms + (reaction or 0))
    label = f"barge-in {reaction} ms" if reaction is not None else "barge-in"
    if heard is not None:
        tip += f" (the caller heard {heard} ms)"
    return (f'<g class="barge-in"><title>{_e(tip)}</title>'
            f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}"/>'
            f'<rect x="{x}" y="{bottom - 6}" width="{max(1.0, end - x):.1f}" height="6"/>'
            f'<text x="{x + 3}" y="{bottom + 12}">{_e(label)}</text></g>')


def _event(scale: _Scale, rows: _Rows, m: Moment) -> str:
    """A moment other than a barge-in, in the events' rows."""
    x, tip = scale.x(m.t_ms), f"{_seconds(m.t_ms)} {m.kind}: {m.summary}"
    if m.kind == "tool_call":
        name, outcome = str(m.data.get("name", "")), str(m.data.get("outcome", ""))
        duration = _int(m.data.get("duration_ms")) or 0
        width = max(3.0, round(scale.x(m.t_ms + duration) - x, 1))
        label = f"{name}: {outcome} ({duration} ms)"
        y = _MOMENTS_Y + _ROW_H * rows.place(x, x + max(width, _label_px(label)))
        status = _OUTCOME_CLASS.get(outcome, "failed")
        tip += (f"\narguments: {m.data.get('arguments', '')}"
                f"\noutput: {m.data.get('output', '')}")
        return (f'<g class="tool-call {status}"><title>{_e(tip)}</title>'
                f'<rect x="{x}" y="{y}" width="{width}" height="12" rx="2"/>'
                f'<text x="{x}" y="{y + 24}">{_e(label)}</text></g>')
    if m.kind == "dtmf":
        digit = str(m.data.get("digit", "?"))
        y = _MOMENTS_Y + _ROW_H * rows.place(x - 8, x + 8)
        return (f'<g class="dtmf"><title>{_e(tip)}</title>'
                f'<circle cx="{x}" cy="{y + 10}" r="8"/>'
                f'<text x="{x}" y="{y + 14}">{_e(digit)}</text></g>')
    label = m.kind.replace("_", " ")
    y = _MOMENTS_Y + _ROW_H * rows.place(x - 2, x + _label_px(label))
    return (f'<g class="moment {_kind_class(m.kind)}"><title>{_e(tip)}</title>'
            f'<line x1="{x}" y1="{y}" x2="{x}" y2="{y + 12}"/>'
            f'<rect class="hit" x="{x - 4}" y="{y}" width="8" height="26"/>'
            f'<text x="{x}" y="{y + 24}">{_e(label)}</text></g>')


def _timeline_svg(record: CallRecord) -> str:
    scale, rows = _Scale(record), _Rows()
    speech = [*_turn_bars(scale, record.turns), *_latencies(scale, record.turns)]
    marks = [_barge_in(scale, m) if m.kind == "barge_in" else _event(scale, rows, m)
             for m in record.timeline]
    height = _MOMENTS_Y + _ROW_H * max(1, len(rows.ends)) + 4
    parts = [
        f'<svg id="timeline" width="{scale.width}" height="{height}" '
        f'viewBox="0 0 {scale.width} {height}" role="img" '
        f'data-left="{_LEFT}" data-px-per-ms="{scale.px_per_ms:.6f}" '
        'aria-label="the call\'s timeline">',
        '<defs><pattern id="hatch" width="4" height="4" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="2" height="4" fill="#b00020"/>'
        "</pattern></defs>",
        *_axis(scale, height),
        *speech,
        *marks,
        f'<line id="playhead" x1="{_LEFT}" y1="{_AXIS_Y}" x2="{_LEFT}" y2="{height}" '
        'visibility="hidden"/>',
        "</svg>",
    ]
    return "".join(parts)


# --- the tables ----------------------------------------------------------------------


def _header(record: CallRecord) -> str:
    try:
        started = datetime.fromtimestamp(record.started_at, UTC).isoformat(
            timespec="milliseconds")
    except (OverflowError, OSError, ValueError):  # a record read back could say anything
        started = str(record.started_at)
    end = record.end_reason + (f" ({record.end_detail})" if record.end_detail else "")
    fields = [("call SID", record.call_sid), ("stream SID", record.stream_sid),
              ("from", record.from_number), ("to", record.to_number),
              ("started (UTC)", started), ("duration", f"{record.duration_s:.3f} s"),
              ("ended", end), ("agent", record.agent)]
    fields += [(f"parameter {k}", v) for k, v in sorted(record.parameters.items())
               if k not in ("from", "to")]
    if record.recording:
        fields.append(("recording file", record.recording))
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v) or '–'}</dd>" for k, v in fields)
    return f'<dl id="header">{rows}</dl>'


def _conversation(record: CallRecord) -> str:
    rows = []
    for turn in sorted(record.turns, key=lambda t: (t.start_ms, t.speaker)):
        who = "caller" if turn.speaker == "caller" else "agent"
        text = _e(turn.text) if turn.text else '<span class="none">(no transcript)</span>'
        if turn.cut:
            heard = f"{turn.heard_ms} ms" if turn.heard_ms is not None else "an unknown part"
            text += f' <span class="cut-note">(cut off: the caller heard {heard})</span>'
        rows.append(f'<tr class="utterance {who}"><td class="t">{_seconds(turn.start_ms)}</td>'
                    f'<td class="who">{who}</td><td class="text">{text}</td></tr>')
    if not rows:
        return '<p class="none">Nobody spoke.</p>'
    return ('<table id="conversation"><thead><tr><th>at</th><th>who</th><th>said</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def _moments(timeline: Sequence[Moment]) -> str:
    rows = []
    for m in timeline:
        data = json.dumps(dict(m.data), ensure_ascii=False, default=str) if m.data else ""
        rows.append(f'<tr class="moment-row {_kind_class(m.kind)}">'
                    f'<td class="t">{_seconds(m.t_ms)}</td><td>{_e(m.kind)}</td>'
                    f"<td>{_e(m.summary)}</td><td class=\"data\">{_e(data)}</td></tr>")
    if not rows:
        return '<p class="none">No moments.</p>'
    return ('<table id="moments"><thead><tr><th>at</th><th>kind</th><th>what</th>'
            f'<th>data</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _summary(name: str, values: Sequence[int]) -> tuple[str, str, str, str]:
    if not values:
        return name, "0", "–", "–"
    return name, str(len(values)), f"{statistics.median(values):g} ms", f"{max(values)} ms"


def _latency_table(record: CallRecord) -> str:
    rows = [_summary("response latency", record.response_latency_ms),
            _summary("barge-in reaction", record.barge_in_reaction_ms)]
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return ('<table id="latencies"><thead><tr><th></th><th>count</th><th>median</th>'
            f"<th>max</th></tr></thead><tbody>{body}</tbody></table>")


def _counters(stats: Mapping[str, int]) -> str:
    def table(ident: str, items: list[tuple[str, int]]) -> str:
        body = "".join(f"<tr><td>{_e(k)}</td><td class=\"n\">{_e(v)}</td></tr>"
                       for k, v in items)
        return f'<table id="{ident}"><tbody>{body}</tbody></table>'

    tokens = [(k, v) for k, v in stats.items() if "token" in k]
    others = [(k, v) for k, v in stats.items() if "token" not in k]
    return (f'<div class="pair"><div><h3>Counters</h3>{table("counters", others)}</div>'
            f'<div><h3>Token usage</h3>{table("tokens", tokens)}</div></div>')


# --- the page ------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:20px 0 6px}h3{font-size:14px}
#header{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
#header dt{color:#666}#header dd{margin:0;font-family:monospace}
.scroll{overflow-x:auto;border:1px solid #ddd;background:#fafafa}
table{border-collapse:collapse}td,th{border-bottom:1px solid #eee;padding:3px 8px;
text-align:left;vertical-align:top}td.t,td.n{font-variant-numeric:tabular-nums;
white-space:nowrap}td.data{font-family:monospace;font-size:12px;word-break:break-all}
.utterance.caller td.who{color:#1565c0}.utterance.agent td.who{color:#2e7d32}
.cut-note{color:#b00020}.none{color:#999;font-style:italic}
.pair{display:flex;gap:40px}audio{width:100%;max-width:900px}
#timeline text{font-size:11px;fill:#333}#timeline .tick-label{text-anchor:middle}
#timeline .lane-label{font-weight:600}#timeline .axis{stroke:#333}
#timeline .tick{stroke:#e3e3e3}#timeline .moment text{fill:#666;font-size:10px}
rect.turn.caller{fill:#64b5f6}
rect.turn.agent{fill:#81c784}.cut-hatch{fill:url(#hatch)}
.cut-mark{stroke:#b00020;stroke-width:3}.latency path{fill:none;stroke:#888;
stroke-dasharray:3 2}#timeline .latency text{fill:#555;font-size:10px}
.barge-in line{stroke:#d32f2f;stroke-width:2}.barge-in rect{fill:#d32f2f}
#timeline .barge-in text{fill:#b00020}.tool-call rect{fill:#ffb74d}
.tool-call.failed rect{fill:#e57373}.tool-call.unfinished rect{fill:#bdbdbd}
.dtmf circle{fill:#7e57c2}#timeline .dtmf text{fill:#fff;text-anchor:middle}
.moment line{stroke:#555;stroke-width:2}.moment .hit{fill:transparent}
#playhead{stroke:#000;stroke-width:1.5}
"""

# Moves the playhead with the recording, and a click on the picture seeks it there.
_SCRIPT = """
(function(){var a=document.getElementById('player'),s=document.getElementById('timeline'),
p=document.getElementById('playhead');if(!a||!s||!p)return;
var l=+s.dataset.left,k=+s.dataset.pxPerMs;
a.addEventListener('timeupdate',function(){var x=l+a.currentTime*1000*k;
p.setAttribute('x1',x);p.setAttribute('x2',x);p.setAttribute('visibility','visible');});
s.addEventListener('click',function(ev){var r=s.getBoundingClientRect();
var t=(ev.clientX-r.left-l)/k/1000;if(t>=0){a.currentTime=t;}});})();
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()

# Nothing from anywhere: no fetch, font, image or frame; only this page's own style,
# the one script above, and the recording as a data: URI.
_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; media-src data:; "
           f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'")


def render_html(record: CallRecord, recording: bytes | None = None) -> str:
    """The page for `record`, with `recording` (the call's WAV file, its bytes) as its
    player; see the module docstring."""
    player = '<p class="none">No recording.</p>'
    script = ""
    if recording is not None:
        data = base64.b64encode(recording).decode("ascii")
        player = (f'<audio id="player" controls preload="metadata" '
                  f'src="data:audio/wav;base64,{data}"></audio>'
                  '<p class="none">Left: the caller; right: the agent. Click the timeline '
                  "to play from there.</p>")
        script = f"<script>{_SCRIPT}</script>"
    title = f"Call {record.call_sid or record.stream_sid}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(_POLICY)}">
<meta name="referrer" content="no-referrer">
<title>{_e(title)}</title><style>{_STYLE}</style></head>
<body><h1>{_e(title)}</h1>
{_header(record)}
<h2>Timeline</h2><div class="scroll">{_timeline_svg(record)}</div>
<h2>Recording</h2>{player}
<h2>Latencies</h2>{_latency_table(record)}
<h2>Conversation</h2>{_conversation(record)}
<h2>Moments</h2>{_moments(record.timeline)}
<h2>Counters</h2>{_counters(record.stats)}
{script}</body></html>
"""
