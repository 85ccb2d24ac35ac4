"""The `callbridge calls` command: the call records kept in CALLBRIDGE_DB.

`calls` lists recent calls as a table, `calls show SID` prints one as a timeline
(turns and moments merged in time order, then latencies and usage), `calls delete
SID` removes a call's records and recording. The records are the service's
(`callbridge._store`); this is how a person reads them without SQL.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import ConfigError, Settings
from .records import CallRecord, Moment, Turn

__all__ = ["add_parser", "main"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: the timeline's label for each kind of moment
_LABELS = {"barge_in": "barge-in", "tool_call": "tool", "model_connected": "model",
           "twilio_action": "twilio", "model_error": "error", "protocol_error": "error",
           "idle_prompt": "idle"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `calls` (with `show` and `delete`) to the `callbridge` command's parsers."""
    calls = sub.add_parser(
        "calls",
        help="list the calls recorded in CALLBRIDGE_DB; show one as a timeline, or delete one",
        description=(
            "List the most recent calls the service recorded (CALLBRIDGE_DB: a SQLite file, "
            "by default callbridge.db in the service's working directory, or a postgresql:// "
            "URL), newest first: when each began (local time), its call SID, the numbers, how "
            "long it lasted, why it ended, and how many turns, barge-ins and tool calls it had. "
            "`calls show SID` prints one call's timeline, `calls delete SID` removes a call's "
            "records and its recording. Records are kept CALLBRIDGE_RETENTION_DAYS (default "
            "30). Exits 1 when a SID matches no call, 2 when there is no database to read."
        ),
    )
    _db_option(calls, None)
    calls.add_argument("--since", metavar="WHEN", type=_since,
                       help="calls begun since WHEN: an ISO date or time in local time "
                            "(2025-06-01, 2025-06-01T14:00) or one ago (30m, 2h, 7d)")
    calls.add_argument("--number", metavar="N",
                       help="calls from or to this number, E.164 (+14155550100)")
    calls.add_argument("--reason", metavar="R",
                       help="calls that ended for this reason (caller_hangup, hung_up, "
                            "transferred, model_error, ...)")
    calls.add_argument("--limit", metavar="K", type=int, default=50,
                       help="at most K calls (default: 50)")
    calls.add_argument("--json", action="store_true",
                       help="the records as JSON, one per line, instead of the table")
    actions = calls.add_subparsers(dest="action", metavar="{show,delete}")
    show = actions.add_parser(
        "show",
        help="print one call: who spoke when, barge-ins, tool calls, latencies, usage",
        description=(
            "Print one call's record: its SIDs, numbers, start, duration and end reason; then "
            "every turn (what the caller said, what the caller heard the agent say) and "
            "moment (barge-ins with how fast playback was cleared, tool calls, keypresses, "
            "errors) in time order, each at m:ss.mmm since the call began; then response "
            "latency, barge-in reaction and token usage. SID is the call SID (its latest "
            "stream) or a stream SID."
        ),
    )
    show.add_argument("sid", metavar="SID", help="a call SID (CA...) or a stream SID (MZ...)")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="the record as JSON instead")
    show.add_argument("--html", metavar="FILE",
                      help="also write the call as a web page to FILE, with its recording "
                           "when it has one")
    _db_option(show, argparse.SUPPRESS)
    delete = actions.add_parser(
        "delete",
        help="remove a call's records and its recording",
        description=(
            "Remove every record of a call (all its streams, when SID is its call SID or one "
            "of its stream SIDs) and their recording files, e.g. when a caller asks for their "
            "data to be erased; print what was removed."
        ),
    )
    delete.add_argument("sid", metavar="SID", help="a call SID (CA...) or a stream SID (MZ...)")
    _db_option(delete, argparse.SUPPRESS)


def _db_option(parser: argparse.ArgumentParser, default: Any) -> None:
    # (SUPPRESS on `show` and `delete`: their default must not hide `calls --db`)
    parser.add_argument("--db", metavar="DB", default=default,
                        help="a SQLite file or a postgresql:// URL (default: CALLBRIDGE_DB)")


def _since(text: str) -> float:
    """`--since`: an ISO date or time (local when it has no offset) or `<n>s|m|h|d` ago."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?)\s*([smhd])", text.strip())
    if match is not None:
        return time.time() - float(match[1]) * _UNITS[match[2]]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an ISO date or time (2025-06-01T14:00) or a time ago "
            "(30m, 2h, 7d)") from None


def main(args: argparse.Namespace) -> int:
    """Run `callbridge calls ...`; returns the exit code."""
    db = args.db
    if db is None:
        try:
            db = Settings.from_env().db
        except ConfigError as exc:
            print(f"callbridge: configuration error: {exc}", file=sys.stderr)
            return 2
        if db is None:
            print("callbridge: call records are off (CALLBRIDGE_DB=off): pass --db with a "
                  "SQLite file or a postgresql:// URL", file=sys.stderr)
            return 2
    if "://" not in db and not Path(db).is_file():
        print(f"callbridge: no call records at {db} (CALLBRIDGE_DB, or --db)", file=sys.stderr)
        return 2
    from ._store import StoreError, open_sink

    errors: tuple[type[Exception], ...] = (StoreError, sqlite3.Error, *_driver_errors())
    try:
        sink = open_sink(db)
    except errors as exc:
        print(f"callbridge: cannot read the call records at {redacted(db)}: {exc}",
              file=sys.stderr)
        return 2
    try:
        if args.action == "show":
            record = sink.get(args.sid)
            if record is None:
                return _unknown(args.sid, db)
            return _show(record, as_json=args.json, html=args.html)
        if args.action == "delete":
            removed = sink.delete(args.sid)
            if not removed:
                return _unknown(args.sid, db)
            for record in removed:
                print(f"deleted the record of stream {record.stream_sid} (call "
                      f"{record.call_sid}, {_local(record.started_at)})"
                      + (f" and its recording {record.recording}" if record.recording else ""))
            return 0
        found = sink.find(since=args.since, number=args.number, reason=args.reason,
                          limit=args.limit)
    finally:
        sink.close()
    if args.json:
        for record in found:
            print(record.to_json())
    elif found:
        print(_table(found))
    else:
        print("no calls", file=sys.stderr)
    return 0


def _driver_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.Error,)


def redacted(db: str) -> str:
    """`db` without the password of its URL."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", db)


def _unknown(sid: str, db: str) -> int:
    print(f"callbridge: no call with SID {sid} in {redacted(db)}", file=sys.stderr)
    return 1


def _local(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}" if whole >= 3600 \
        else f"{whole // 60}:{whole % 60:02d}"


def _count(record: CallRecord, kind: str) -> int:
    return sum(1 for moment in record.timeline if moment.kind == kind)


def _table(records: Iterable[CallRecord]) -> str:
    """One line per call, in columns as wide as their widest cell."""
    header = ("started", "call SID", "from", "to", "duration", "ended", "turns", "barge-ins",
              "tools")
    rows = [header] + [
        (_local(r.started_at), r.call_sid or r.stream_sid, r.from_number or "-",
         r.to_number or "-", _duration(r.duration_s), r.end_reason, str(len(r.turns)),
         str(_count(r, "barge_in")), str(_count(r, "tool_call")))
        for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = range(6, len(header))  # right-aligned
    return "\n".join(
        "  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows)


def clock(ms: int) -> str:
    """ms since the call began as `m:ss.mmm`."""
    ms = max(0, ms)
    return f"{ms // 60000}:{ms % 60000 // 1000:02d}.{ms % 1000:03d}"


def timeline(record: CallRecord) -> list[str]:
    """A call's turns and moments in time order, one line each (a moment first when a
    turn begins at the same ms: the barge-in before the caller's words)."""
    entries: list[tuple[int, int, Turn | Moment]] = [
        *((m.t_ms, 0, m) for m in record.timeline), *((t.start_ms, 1, t) for t in record.turns)]
    entries.sort(key=lambda entry: entry[:2])
    label = max(len(name) for name in ("caller", "agent", "guardrail", *_LABELS.values())) + 1
    lines = []
    for at, _, entry in entries:
        kind: str
        if isinstance(entry, Turn):
            kind = entry.speaker
            text = f'"{entry.text}"' if entry.text else "(speech)"
            text += f" ({(entry.end_ms - entry.start_ms) / 1000:.1f} s"
            if entry.cut:
                text += ", cut off" + (f": heard {entry.heard_ms} ms of it"
                                       if entry.heard_ms is not None else "")
            text += ")"
        else:
            kind = _LABELS.get(entry.kind, entry.kind)
            text = _tool(entry.data) if entry.kind == "tool_call" else entry.summary
        lines.append(f"{clock(at)}  {kind.ljust(label)}{text}")
    return lines


def _tool(data: Mapping[str, Any]) -> str:
    line = f"{data.get('name', '?')} {data.get('arguments') or '{}'}"
    line += f" -> {data.get('outcome', '?')}"
    if "duration_ms" in data:
        line += f" in {data['duration_ms']} ms"
    output = str(data.get("output") or "")
    if output:
        line += ": " + (output if len(output) <= 80 else output[:79] + "…")
    return line


def _spread(values: Iterable[int], what: str) -> str:
    values = list(values)
    if not values:
        return f"{what}: none"
    return (f"{what}: median {statistics.median(values):g} ms, max {max(values)} ms "
            f"({len(values)})")


def describe(record: CallRecord) -> str:
    """`calls show`'s text for a record."""
    stats = record.stats
    lines = [
        f"call {record.call_sid or '-'}  stream {record.stream_sid or '-'}",
        f"from {record.from_number or '-'} to {record.to_number or '-'}"
        + (f"  agent {record.agent}" if record.agent else ""),
        f"started {_local(record.started_at)}, lasted {_duration(record.duration_s)}, ended: "
        f"{record.end_reason}" + (f" ({record.end_detail})" if record.end_detail else ""),
    ]
    if record.parameters:
        lines.append("parameters " + json.dumps(dict(record.parameters), ensure_ascii=False))
    if record.recording:
        lines.append(f"recording {record.recording}")
    lines += ["", *timeline(record), ""]
    lines.append("latency   " + _spread(record.response_latency_ms, "response")
                 + "; " + _spread(record.barge_in_reaction_ms, "barge-in reaction"))
    lines.append(
        f"usage     input tokens {stats.get('input_tokens', 0)} (audio "
        f"{stats.get('input_audio_tokens', 0)}, cached {stats.get('cached_input_tokens', 0)}),"
        f" output tokens {stats.get('output_tokens', 0)} (audio "
        f"{stats.get('output_audio_tokens', 0)})")
    counters = ", ".join(f"{name} {value}" for name, value in stats.items()
                         if value and not name.endswith("_tokens"))
    if counters:
        lines.append(f"counters  {counters}")
    return "\n".join(lines)


def _show(record: CallRecord, *, as_json: bool, html: str | None) -> int:
    print(record.to_json() if as_json else describe(record))
    if html is not None:
        from ._viewer import render_html

        audio = None
        if record.recording:
            try:
                audio = Path(record.recording).read_bytes()
            except OSError as exc:
                print(f"callbridge: the page has no recording: {exc}", file=sys.stderr)
        Path(html).write_text(render_html(record, audio), encoding="utf-8")
        print(f"wrote {html}", file=sys.stderr)
    return 0
