"""Log lines: a call's lines name it (contextvars, down to its tools, in threads too),
text or JSON as `CALLBRIDGE_LOG_FORMAT` says, and one summary line per call."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from test_agent_call import calls, greeter, run_agent, says

from callbridge import CallResult, CallStats, tool
from callbridge._logs import CALL, CallFilter, CallTag, log_config
from callbridge._watch import log_summary
from callbridge.config import ConfigError, Settings
from callbridge.events import EndReason
from callbridge.local import ToolCall


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What callbridge's loggers write, configured by `log_config`; the loggers as
    they were afterwards."""
    logger = logging.getLogger("callbridge")
    before = logger.handlers[:], logger.level, logger.propagate
    out = io.StringIO()
    yield out
    logger.handlers[:], logger.level, logger.propagate = before


def configure(fmt: str, out: io.StringIO) -> None:
    logging.config.dictConfig(log_config("INFO", fmt))
    [handler] = logging.getLogger("callbridge").handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)


async def test_a_calls_lines_name_it_down_to_its_tools_in_threads_too(
        autojump_clock: trio.testing.MockClock, lines: io.StringIO) -> None:
    configure("json", lines)

    @tool
    async def in_task(sku: str) -> str:
        """Looked up in a trio task."""
        logging.getLogger("callbridge.test").info("looking up %s", sku)
        return "1"

    @tool
    def in_thread(sku: str) -> str:
        """Looked up in a worker thread."""
        logging.getLogger("callbridge.test").info("blocking lookup of %s", sku)
        return "2"

    logging.getLogger("callbridge.test").info("before the call")
    script = [calls(ToolCall("in_task", {"sku": "A"}, call_id="t"),
                    ToolCall("in_thread", {"sku": "B"}, call_id="h")),
              lambda turn: says("Both answered.")]
    run = await run_agent(greeter(in_task, in_thread), script)
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    mine = {r["message"]: r for r in records if r["logger"] == "callbridge.test"}
    assert mine["before the call"]["call_sid"] == ""
    for message in ("looking up A", "blocking lookup of B"):
        assert mine[message]["call_sid"] == run.result.call_sid != ""
        assert mine[message]["stream_sid"] == run.result.stream_sid
        assert mine[message]["level"] == "INFO" and mine[message]["pid"] > 0


def test_text_lines_end_with_the_call_and_json_lines_carry_the_summary(
        lines: io.StringIO) -> None:
    configure("text", lines)
    token = CALL.set(CallTag(call_sid="CA1", stream_sid="MZ1"))
    logging.getLogger("callbridge.call").warning("the model connection was lost")
    CALL.reset(token)
    logging.getLogger("callbridge.app").info("draining")
    first, second = lines.getvalue().splitlines()
    assert first.endswith("callbridge.call: the model connection was lost (call CA1)")
    assert second.endswith("callbridge.app: draining")

    out = io.StringIO()
    configure("json", out)
    stats = CallStats(frames_in=500, barge_ins=2, tool_calls=1, tool_failures=1,
                      input_tokens=900, output_tokens=400)
    log_summary(CallResult(reason=EndReason.CALLER_HANGUP, call_sid="CA2",
                            stream_sid="MZ2", stats=stats), 10.04)
    [summary] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert summary["message"].startswith("call CA2 ended: caller_hangup  (10.0 s; frames in 500")
    assert "tokens in 900 (audio 0, cached 0), out 400 (audio 0)" in summary["message"]
    assert {k: summary[k] for k in ("call_sid", "stream_sid", "end_reason", "duration_s",
                                    "frames_in", "barge_ins", "tool_calls", "tool_failures",
                                    "input_tokens", "output_tokens")
            } == {"call_sid": "CA2", "stream_sid": "MZ2", "end_reason": "caller_hangup",
                  "duration_s": 10.04, "frames_in": 500, "barge_ins": 2, "tool_calls": 1,
                  "tool_failures": 1, "input_tokens": 900, "output_tokens": 400}


def test_the_log_format_is_text_or_json() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"CALLBRIDGE_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="CALLBRIDGE_LOG_FORMAT"):
        Settings.from_env({"CALLBRIDGE_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError, match="log format"):
        log_config("INFO", "xml")


def test_a_record_that_names_its_call_keeps_it(lines: io.StringIO) -> None:
    record = logging.LogRecord("callbridge.app", logging.INFO, __file__, 1, "x", None, None)
    record.call_sid = "CA3"
    extra: Any = record
    token = CALL.set(CallTag(call_sid="CA9"))
    try:
        assert CallFilter().filter(record)
    finally:
        CALL.reset(token)
    assert extra.call_sid == "CA3" and extra.call == " (call CA9)"


@pytest.mark.slow
async def test_callbridge_serve_writes_json_lines_with_the_setting() -> None:
    import signal
    import sys

    from test_service_drain import until

    from callbridge.testing import server_process

    command = [sys.executable, "-m", "callbridge", "serve", "--host", "127.0.0.1",
               "--port", "{port}"]
    env = {"OPENAI_API_KEY": "sk-test-not-a-key", "CALLBRIDGE_LOG_FORMAT": "json"}
    with trio.fail_after(60):
        async with server_process(command, env) as server:
            await until(lambda: '"callbridge ready' in server.log())  # another process
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
            log = server.log()
    ours = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [r["message"] for r in ours if r["logger"] == "callbridge.app"]
    assert any(m.startswith("callbridge ready") for m in messages), log
    assert any(m.startswith("drained in ") for m in messages), log
    assert all({"time", "level", "pid", "call_sid", "stream_sid"} <= r.keys() for r in ours)
