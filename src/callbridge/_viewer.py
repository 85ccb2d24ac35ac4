"""A call's record as one self-contained HTML page (sans-I/O).

First version: the header and the transcripts; the timeline picture follows.
"""

from __future__ import annotations

import base64
import html

from .records import CallRecord

__all__ = ["render_html"]


def render_html(record: CallRecord, recording: bytes | None = None) -> str:
    """The page for `record`, with `recording` (a WAV file's bytes) as its player."""
    e = html.escape
    rows = "".join(f"<li class=\"{e(t.speaker)}\">{e(t.speaker)}: {e(t.text)}</li>"
                   for t in record.turns)
    player = ""
    if recording is not None:
        data = base64.b64encode(recording).decode("ascii")
        player = f'<audio controls src="data:audio/wav;base64,{data}"></audio>'
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Call "
            f"{e(record.call_sid)}</title></head><body><h1>Call {e(record.call_sid)}</h1>"
            f"{player}<ul>{rows}</ul></body></html>")
