"""Running a tool call: the I/O side of `callbridge.tools`.

`run_tool` parses the model's arguments, runs the function the way its kind says,
under the tool's timeout, and always answers with a `ToolResult` that can go back to
the model: bad arguments, an exception and a timeout are results too, not errors of
the call. Only cancellation (and other BaseExceptions) propagate.

- "trio": awaited in the calling task.
- "thread": a worker thread, at most `THREADS` at once per trio run (a
  `CapacityLimiter` in a `RunVar`, so a slow tool cannot take every thread trio has).
  Python cannot stop a thread: one that overruns its timeout is abandoned, runs to
  completion in the background (holding its place in the limiter until then), and
  its result is discarded.
- "asyncio": on the trio-asyncio loop already open in this context
  (`async with trio_asyncio.open_loop():` around the service), or on one opened
  for this call alone.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import trio

from .agent import CallContext
from .tools import Tool, ToolArgumentsError, ToolResult

__all__ = ["THREADS", "run_tool", "thread_limiter"]

log = logging.getLogger("callbridge.tools")

#: worker threads that tools of kind "thread" may use at once, per trio run
THREADS = 16

_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "callbridge_tool_threads")


def thread_limiter() -> trio.CapacityLimiter:
    """This trio run's limiter of tool threads (made on first use)."""
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(THREADS)
        _LIMITER.set(limiter)
        return limiter


async def run_tool(tool: Tool, arguments: str, context: CallContext, *,
                   log_context: str = "") -> ToolResult:
    """Call `tool` with the model's `arguments` (a JSON string) and the call's
    `context` (passed to its `CallContext` parameters). Never raises an Exception:
    every failure is a `ToolResult` the model can read. `log_context` (e.g. the
    function call's id) is added to the log lines."""
    where = f"{tool.name} on call {context.call_sid}" + (f" ({log_context})" if log_context
                                                         else "")
    try:
        kwargs = tool.parse(arguments)
    except ToolArgumentsError as exc:
        log.info("tool %s: %s", where, exc)
        return ToolResult.invalid_arguments(exc)
    kwargs.update(dict.fromkeys(tool.context_params, context))
    with trio.move_on_after(math.inf if tool.timeout is None else tool.timeout):
        try:
            # encoding the value is inside: what pydantic cannot encode (a cycle)
            # is an error the model reads too
            return ToolResult.of(await _call(tool, kwargs))
        except Exception as exc:
            log.warning("tool %s raised %s", where, type(exc).__name__, exc_info=True)
            return ToolResult.error(exc)
    log.warning("tool %s timed out after %g s", where, tool.timeout)
    return ToolResult.timed_out(tool)


async def _call(tool: Tool, kwargs: dict[str, Any]) -> Any:
    if tool.kind == "trio":
        return await tool.fn(**kwargs)
    if tool.kind == "thread":
        return await trio.to_thread.run_sync(functools.partial(tool.fn, **kwargs),
                                             limiter=thread_limiter(), abandon_on_cancel=True)
    return await _call_asyncio(tool, kwargs)


async def _call_asyncio(tool: Tool, kwargs: dict[str, Any]) -> Any:
    # Imported here, not on top: importing trio_asyncio installs its asyncio event
    # loop policy for the whole process, which only asyncio tools should cause.
    import trio_asyncio  # type: ignore[import-untyped]

    loop = trio_asyncio.current_loop.get()
    if loop is not None and not loop.is_closed():
        return await trio_asyncio.aio_as_trio(tool.fn, loop=loop)(**kwargs)
    async with trio_asyncio.open_loop() as loop:
        try:
            return await trio_asyncio.aio_as_trio(tool.fn, loop=loop)(**kwargs)
        except Exception as exc:
            # raised through open_loop's nurseries, it would come out of them wrapped
            # in an ExceptionGroup: the tool's own exception is what the model reads
            failure = exc
    raise failure
