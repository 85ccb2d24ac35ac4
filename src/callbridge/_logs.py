"""callbridge's log lines: every line logged inside a call names the call, without
anyone passing it around.

* `run_call` puts a `CallTag` in the context variable `CALL` before it starts its
  tasks; the tasks (and tools run in worker threads, which trio gives a copy of the
  context) inherit it, and the tag's SIDs are filled in once Twilio's `start` came.
* `CallFilter`, on a handler, puts `call_sid` and `stream_sid` on every record it
  handles ("" outside a call), and `call`: " (call CA…)" or "" for the text format.
* `log_config(level, fmt)`: `logging.config.dictConfig` for callbridge's loggers, to
  stderr: `"text"` in hypercorn's shape (with the process id) and the call at the
  end of the line, or `"json"`, one object per line (python-json-logger), with
  `call_sid` and `stream_sid` as fields. `callbridge serve` applies it in each worker
  (`CALLBRIDGE_LOG_FORMAT`); an application with its own logging adds `CallFilter` to
  its handlers to get the same fields.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

import attrs

__all__ = ["CALL", "LOG_FORMATS", "CallFilter", "CallTag", "log_config"]

#: what `CALLBRIDGE_LOG_FORMAT` may say
LOG_FORMATS = ("text", "json")


@attrs.define
class CallTag:
    """The call a task belongs to, as far as it is known yet."""

    call_sid: str = ""
    stream_sid: str = ""


#: the call of the running task (None outside any call)
CALL: ContextVar[CallTag | None] = ContextVar("callbridge_call", default=None)


class CallFilter(logging.Filter):
    """Adds the running call's `call_sid`, `stream_sid` and `call` to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        tag = CALL.get()
        if not hasattr(record, "call_sid"):  # (a line about a call may name it itself)
            record.call_sid = tag.call_sid if tag is not None else ""
            record.stream_sid = tag.stream_sid if tag is not None else ""
        record.call = "" if tag is None else (
            f" (call {tag.call_sid or tag.stream_sid or 'before its start'})")
        return True


def log_config(level: str, fmt: str = "text") -> dict[str, object]:
    """`logging.config.dictConfig` for callbridge's loggers (see the module docstring)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    formatter: dict[str, object]
    if fmt == "json":
        formatter = {"()": "pythonjsonlogger.json.JsonFormatter",
                     "format": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s "
                               "%(call_sid)s %(stream_sid)s",
                     "rename_fields": {"asctime": "time", "levelname": "level",
                                       "name": "logger", "process": "pid"}}
    else:
        formatter = {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: "
                               "%(message)s%(call)s",
                     "datefmt": "[%Y-%m-%d %H:%M:%S %z]"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"call": {"()": CallFilter}},
        "formatters": {"callbridge": formatter},
        "handlers": {"callbridge": {"class": "logging.StreamHandler", "filters": ["call"],
                                    "formatter": "callbridge", "stream": "ext://sys.stderr"}},
        "loggers": {"callbridge": {"level": level, "handlers": ["callbridge"],
                                   "propagate": False}},
    }
