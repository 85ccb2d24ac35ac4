"""Function tools: described from the signature and docstring, run under a timeout.

The description side (`callbridge.tools`) is checked synchronously, the schema also
against the openai SDK's models; running (`callbridge._toolrun`) on trio, in a worker
thread and on an asyncio loop through trio-asyncio, with time on pytest-trio's
`autojump_clock` wherever a timeout is involved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import json
import logging
import threading
from typing import Any

import pydantic
import pytest
import trio
import trio_asyncio
from _schema import validate_client_event

import callbridge
from callbridge import Agent, CallContext
from callbridge._toolrun import THREADS, run_tool, thread_limiter
from callbridge.tools import Handoff, Tool, ToolArgumentsError, ToolResult, as_tools, tool

CONTEXT = CallContext(call_sid="CA1", stream_sid="MZ1", account_sid="AC1")


@tool
async def lookup_order(order_id: str, call: callbridge.CallContext) -> dict[str, str]:
    """Look up an order. order_id: the 6-digit number the caller reads out."""
    return {"order": order_id, "caller": call.call_sid}


@tool(timeout=5, filler_after=2.0)
def sync_lookup(sku: str, quantity: int = 1) -> str:
    """How many of a SKU are in stock.

    Args:
        sku: the stock-keeping unit, as printed on the box
        quantity: how many the caller wants
    """
    return f"{quantity} x {sku}: {threading.current_thread().name}"


@tool(asyncio=True)
async def via_asyncio_sdk(query: str) -> list[str]:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)
    return [query, type(loop).__module__.partition(".")[0]]


# --- what the model is told -----------------------------------------------------------


def test_the_issue_example() -> None:
    assert lookup_order.kind == "trio"
    assert lookup_order.context_params == ("call",)
    assert lookup_order.definition() == {
        "type": "function",
        "name": "lookup_order",
        "description": "Look up an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {
                "type": "string", "description": "the 6-digit number the caller reads out."}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    }


def test_google_docstring_and_defaults() -> None:
    assert (sync_lookup.kind, sync_lookup.timeout, sync_lookup.filler_after) == (
        "thread", 5, 2.0)
    assert sync_lookup.filler == "One moment while I check."
    assert sync_lookup.description == "How many of a SKU are in stock."
    assert sync_lookup.parameters == {
        "type": "object",
        "properties": {
            "sku": {"type": "string",
                    "description": "the stock-keeping unit, as printed on the box"},
            "quantity": {"type": "integer", "default": 1,
                         "description": "how many the caller wants"},
        },
        "required": ["sku"],
        "additionalProperties": False,
    }
    assert sync_lookup.parse('{"sku": "A1"}') == {"sku": "A1", "quantity": 1}
    assert sync_lookup.parse('{"sku": "A1", "quantity": 3}') == {"sku": "A1", "quantity": 3}


def test_rest_and_numpy_docstrings() -> None:
    def rest(sku: str) -> None:
        """Check a SKU.

        :param sku: the code on the box
        :returns: nothing
        """

    def numpy(sku: str) -> None:
        """Check a SKU.

        Parameters
        ----------
        sku : str
            the code on the box
        """

    for made in (tool(rest), tool(numpy)):
        assert made.parameters["properties"]["sku"]["description"] == "the code on the box"
    assert tool(rest).description == "Check a SKU.\n\nReturns: nothing"
    assert tool(numpy).description == "Check a SKU."


def test_inline_parameter_descriptions() -> None:
    def stock(sku: str, quantity: int = 1, warehouse: str = "main") -> None:
        """Check stock. Use it before promising a delivery.

        sku: the code on the box. quantity: how
        many the caller wants.
        warehouse: where to look.

        Tell the caller the number.
        """

    made = tool(stock)
    assert made.description == ("Check stock. Use it before promising a delivery.\n\n"
                                "Tell the caller the number.")
    described = {name: p["description"] for name, p in made.parameters["properties"].items()}
    assert described == {"sku": "the code on the box.", "quantity": "how many the caller wants.",
                         "warehouse": "where to look."}


def test_a_word_that_is_not_a_parameter_stays_in_the_text() -> None:
    def note(sku: str) -> None:
        """Check stock. Note: the sku is on the box."""

    made = tool(note)
    assert made.description == "Check stock. Note: the sku is on the box."
    assert "description" not in made.parameters["properties"]["sku"]


def test_no_docstring_and_overrides() -> None:
    async def bare(x: int, flag: bool = False) -> None: ...

    made = tool(bare)
    assert made.description == ""
    assert made.parameters["properties"] == {"x": {"type": "integer"},
                                             "flag": {"type": "boolean", "default": False}}
    named = tool(name="other", description="Says more.", timeout=None)(bare)
    assert (named.name, named.description, named.timeout) == ("other", "Says more.", None)


class Item(pydantic.BaseModel):
    sku: str
    count: int = 1


def test_richer_types_and_any_parameter_name() -> None:
    def order(items: list[Item], when: dt.date | None = None, copy: bool = False,
              _note: str = "", untyped: Any = None) -> None: ...

    made = tool(order)
    json.dumps(made.definition())  # plain JSON, as it goes on the wire
    assert set(made.parameters["properties"]) == {"items", "when", "copy", "_note", "untyped"}
    assert made.parameters["required"] == ["items"]
    args = made.parse('{"items": [{"sku": "A1"}], "when": "2025-01-31"}')
    assert args["items"] == [Item(sku="A1")]
    assert args["when"] == dt.date(2025, 1, 31)


def test_definitions_are_valid_session_tools() -> None:
    definitions = [t.definition() for t in (lookup_order, sync_lookup, via_asyncio_sdk,
                                            tool(test_richer_types_and_any_parameter_name))]
    validate_client_event({"type": "session.update",
                           "session": {"type": "realtime", "tools": definitions}})


def test_a_tool_calls_like_its_function() -> None:
    assert sync_lookup("A1", quantity=2).startswith("2 x A1: ")
    assert isinstance(lookup_order, Tool)


@pytest.mark.parametrize(("arguments", "message"), [
    ("{", "arguments are not JSON: "),
    ("", "arguments are not JSON: "),
    ('["A1"]', "arguments must be a JSON object, not list"),
    ("{}", "invalid arguments: sku: Field required"),
    ('{"sku": 7}', "invalid arguments: sku: Input should be a valid string"),
    ('{"sku": "A1", "quantity": "many"}', "invalid arguments: quantity: Input should be a "
     "valid integer"),
    ('{"sku": "A1", "colour": "red"}', "invalid arguments: colour: Extra inputs are not "
     "permitted"),
])
def test_bad_arguments(arguments: str, message: str) -> None:
    with pytest.raises(ToolArgumentsError) as raised:
        sync_lookup.parse(arguments)
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, ValueError)


# --- how a tool is made, and what is refused --------------------------------------------


def test_decorator_errors() -> None:
    def plain(x: int) -> None: ...

    def star(*args: int) -> None: ...

    def keywords(**kwargs: int) -> None: ...

    def positional(x: int, /) -> None: ...

    with pytest.raises(TypeError, match="asyncio=True needs an async function"):
        tool(asyncio=True)(plain)
    for fn in (star, keywords, positional):
        with pytest.raises(TypeError, match="passed by name"):
            tool(fn)
    with pytest.raises(ValueError, match="name"):
        tool(lambda: None)
    with pytest.raises(ValueError, match="timeout must be positive"):
        tool(timeout=0)(plain)
    with pytest.raises(TypeError, match="not int"):
        tool(7)  # type: ignore[arg-type]


def test_as_tools() -> None:
    mcp = {"type": "mcp", "server_label": "shop", "server_url": "https://mcp.example/sse"}

    def check_stock(sku: str) -> int:
        return 3

    made = as_tools([lookup_order, mcp, check_stock])
    assert made[0] is lookup_order
    assert made[1] == mcp and made[1] is not mcp
    assert isinstance(made[2], Tool) and made[2].name == "check_stock"
    assert made[2].kind == "thread"
    with pytest.raises(TypeError, match="a tool is a function, a Tool or a mapping"):
        as_tools([42])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="two tools are named 'lookup_order'"):
        as_tools([lookup_order, tool(name="lookup_order")(check_stock)])
    with pytest.raises(ValueError, match="two tools are named 'check_stock'"):
        as_tools([check_stock, {"type": "function", "name": "check_stock"}])


# --- what goes back to the model ---------------------------------------------------------


@dataclasses.dataclass
class Stock:
    sku: str
    count: int


class Colour(str, enum.Enum):  # noqa: UP042 - the mixin, whose str() is not its value
    RED = "red"


@pytest.mark.parametrize(("value", "output"), [
    ("in stock", "in stock"),
    (Colour.RED, "red"),
    ({"count": 3, "sku": "A1"}, '{"count":3,"sku":"A1"}'),
    ([1, "two"], '[1,"two"]'),
    (None, "null"),
    (True, "true"),
    (2.5, "2.5"),
    (Item(sku="A1"), '{"sku":"A1","count":1}'),
    (Stock(sku="A1", count=2), '{"sku":"A1","count":2}'),
    (dt.date(2025, 1, 31), '"2025-01-31"'),
    ({"odd": threading.Lock}, json.dumps({"odd": str(threading.Lock)}, separators=(",", ":"))),
])
def test_outputs(value: object, output: str) -> None:
    result = ToolResult.of(value)
    assert (result.output, result.outcome, result.handoff) == (output, "ok", None)
    assert type(result.output) is str


def test_handoff_output() -> None:
    other = Agent(instructions="You are billing.")
    result = ToolResult.of(Handoff(agent=other))
    assert result.handoff is other
    assert json.loads(result.output) == {"handoff": getattr(other, "name", "agent")}
    said = ToolResult.of(Handoff(agent=other, message="Passing you to billing."))
    assert (said.output, said.handoff) == ("Passing you to billing.", other)


# --- running ---------------------------------------------------------------------------


def error_of(result: ToolResult) -> str:
    error = json.loads(result.output)["error"]
    assert isinstance(error, str)
    return error


async def test_a_trio_tool_gets_its_arguments_and_the_context() -> None:
    result = await run_tool(lookup_order, '{"order_id": "123456"}', CONTEXT)
    assert result == ToolResult(output='{"order":"123456","caller":"CA1"}', outcome="ok")


async def test_bad_arguments_are_a_result(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "callbridge.tools")
    result = await run_tool(lookup_order, '{"order": "123456"}', CONTEXT, log_context="call_1")
    assert result.outcome == "invalid_arguments"
    assert error_of(result) == ("invalid arguments: order_id: Field required; "
                                "order: Extra inputs are not permitted")
    assert "lookup_order on call CA1 (call_1)" in caplog.text


async def test_an_exception_is_an_error_output_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    @tool
    async def broken(call: CallContext) -> None:
        raise LookupError(f"no order for {call.from_number}")

    result = await run_tool(broken, "{}", CONTEXT)
    assert result.outcome == "error"
    assert error_of(result) == "LookupError: no order for None"
    assert "Traceback" not in result.output
    [record] = [r for r in caplog.records if r.name == "callbridge.tools"]
    assert record.levelno == logging.WARNING and record.exc_info is not None
    assert "broken on call CA1" in record.getMessage()


async def test_an_output_that_cannot_be_encoded_is_an_error() -> None:
    @tool
    def cyclic() -> list[Any]:
        items: list[Any] = []
        items.append(items)
        return items

    result = await run_tool(cyclic, "{}", CONTEXT)
    assert result.outcome == "error"
    assert "Circular reference" in error_of(result)


async def test_a_slow_trio_tool_times_out(autojump_clock: trio.testing.MockClock) -> None:
    @tool(timeout=5)
    async def slow() -> str:
        await trio.sleep(60)
        return "late"

    start = trio.current_time()
    result = await run_tool(slow, "{}", CONTEXT)
    assert result.outcome == "timeout"
    assert error_of(result) == "slow timed out after 5 s"
    assert trio.current_time() - start == 5


async def test_no_timeout(autojump_clock: trio.testing.MockClock) -> None:
    @tool(timeout=None)
    async def patient() -> str:
        await trio.sleep(3600)
        return "done"

    assert (await run_tool(patient, "{}", CONTEXT)).output == "done"


async def test_a_plain_function_runs_in_a_worker_thread() -> None:
    result = await run_tool(sync_lookup, '{"sku": "A1"}', CONTEXT)
    assert result.outcome == "ok"
    assert result.output.startswith("1 x A1: ")
    assert result.output != f"1 x A1: {threading.current_thread().name}"


async def test_a_thread_that_overruns_is_abandoned(autojump_clock: trio.testing.MockClock
                                                   ) -> None:
    release, finished = threading.Event(), threading.Event()

    @tool(timeout=1)
    def stuck() -> str:
        release.wait()
        finished.set()
        return "too late"

    try:
        result = await run_tool(stuck, "{}", CONTEXT)
    finally:
        release.set()
    await trio.to_thread.run_sync(finished.wait)  # nothing outlives the test
    assert result.outcome == "timeout"
    assert error_of(result) == "stuck timed out after 1 s"


async def test_thread_limiter_is_one_per_run() -> None:
    assert thread_limiter() is thread_limiter()
    assert thread_limiter().total_tokens == THREADS


async def test_an_asyncio_tool_runs_on_an_asyncio_loop() -> None:
    result = await run_tool(via_asyncio_sdk, '{"query": "shoes"}', CONTEXT)
    assert result == ToolResult(output='["shoes","trio_asyncio"]', outcome="ok")


async def test_an_asyncio_tool_uses_the_loop_already_open() -> None:
    @tool(asyncio=True)
    async def which_loop() -> int:
        await asyncio.sleep(0)
        return id(asyncio.get_running_loop())

    async with trio_asyncio.open_loop() as loop:
        result = await run_tool(which_loop, "{}", CONTEXT)
    assert result.output == str(id(loop))


async def test_an_asyncio_tool_that_raises_or_overruns(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    @tool(asyncio=True, timeout=5)
    async def flaky(fail: bool) -> str:
        if fail:
            raise ConnectionError("shop API down")
        await asyncio.sleep(60)
        return "late"

    failed = await run_tool(flaky, '{"fail": true}', CONTEXT)
    assert (failed.outcome, error_of(failed)) == ("error", "ConnectionError: shop API down")
    assert "flaky on call CA1" in caplog.text
    start = trio.current_time()
    slow = await run_tool(flaky, '{"fail": false}', CONTEXT)
    assert (slow.outcome, error_of(slow)) == ("timeout", "flaky timed out after 5 s")
    assert trio.current_time() - start == 5


async def test_a_handoff_is_carried() -> None:
    billing = Agent(instructions="You are billing.")

    @tool
    async def to_billing() -> Handoff:
        """Hand the caller to billing."""
        return Handoff(agent=billing, message="Transferring you to billing.")

    result = await run_tool(to_billing, "{}", CONTEXT)
    assert result == ToolResult(output="Transferring you to billing.", outcome="ok",
                                handoff=billing)


async def test_cancellation_is_not_a_result() -> None:
    started = trio.Event()

    @tool
    async def forever() -> None:
        started.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_tool, forever, "{}", CONTEXT)
        await started.wait()
        nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught
