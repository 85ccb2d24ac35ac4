"""A phone agent that acts: the example of the README's "Your agent", runnable.

    cd examples && CALLBRIDGE_AGENT=pizza:agent callbridge serve

It looks orders up with a slow tool (the caller hears a filler line while it runs),
prices pizzas through an asyncio-only client (run through trio-asyncio), fails
cleanly on an unknown order (the model reads the error and says so), takes the
order number on the keypad too, and never talks about the competition. The test
suite serves it with a real hypercorn process against the local model
(`tests/test_service_agent.py`).
"""

from __future__ import annotations

import asyncio

import trio

import callbridge

#: what a real deployment would ask a database or an API
ORDERS = {"123456": {"status": "out for delivery", "eta_minutes": 12}}
PRICES = {"margherita": 11.0, "diavola": 13.5}


@callbridge.tool(filler_after=2.0, filler="One moment while I look that up.")
async def lookup_order(order_id: str, call: callbridge.CallContext) -> dict[str, object]:
    """Look up an order. order_id: the 6-digit number the caller reads out or types."""
    await trio.sleep(3.0)  # a slow backend: the filler line plays meanwhile
    order = ORDERS.get(order_id)
    if order is None:  # the model gets {"error": "LookupError: ..."} and can say so
        raise LookupError(f"there is no order {order_id}")
    return {"order_id": order_id, **order, "caller": call.from_number}


@callbridge.tool(asyncio=True)
async def pizza_price(pizza: str) -> float:
    """The price of a pizza in dollars. pizza: its name, e.g. margherita."""
    await asyncio.sleep(0)  # where an asyncio-only SDK would be awaited
    return PRICES[pizza.lower()]


def no_competitors(text: str, call: callbridge.CallContext) -> str | None:
    """An output guardrail: cut the agent off, and say this instead."""
    if "domino" in text.lower():
        return "I can only help with Pizza Co. orders."
    return None


def instructions(call: callbridge.CallContext) -> str:
    return (f"You work for Pizza Co. The caller's number is {call.from_number}. Help them "
            "with their order: look it up by its 6-digit number, and answer price questions.")


agent = callbridge.Agent(
    instructions=instructions,
    tools=[lookup_order, pizza_price],
    greeting=("Greet the caller and ask for their order number; they may also type it on "
              "the keypad, followed by the pound key."),
    guardrails=[no_competitors],
)
