"""One response at a time, and keypress entries: the pure `Turns` sub-state, by table."""

from __future__ import annotations

from typing import Any

import pytest

from callbridge._turns import Turns

# A step: ("connect", first, greeting) | ("request",) | ("created", id) | ("done", id)
# | ("spoke",); each answers whether a `response.create` goes out now (None if n/a).


def run(steps: list[tuple[Any, ...]]) -> list[bool | None]:
    turns, said = Turns(), []
    for kind, *args in steps:
        if kind == "connect":
            said.append(turns.connected(first=args[0], greeting=args[1]))
        elif kind == "request":
            said.append(turns.request())
        elif kind == "created":
            said.append(turns.created(args[0]))
        elif kind == "done":
            said.append(turns.done(args[0]))
        elif kind == "spoke":
            said.append(turns.caller_spoke())
        else:  # pragma: no cover
            raise AssertionError(kind)
    return said


@pytest.mark.parametrize(("steps", "expected"), [
    pytest.param([("connect", True, False), ("request",)], [False, True],
                 id="idle: at once"),
    pytest.param([("request",), ("connect", True, False)], [False, True],
                 id="before the connection: when it opens"),
    pytest.param([("request",), ("connect", True, True), ("created", "g"), ("done", "g")],
                 [False, False, None, True], id="the greeting goes first"),
    pytest.param([("connect", True, False), ("created", "r"), ("request",), ("done", "r")],
                 [False, None, False, True], id="after the open response"),
    pytest.param([("connect", True, False), ("request",), ("request",), ("created", "a"),
                  ("done", "a")], [False, True, False, None, True],
                 id="ours on its way counts as open"),
    pytest.param([("connect", True, False), ("created", "r"), ("request",), ("spoke",),
                  ("done", "r")], [False, None, False, None, False],
                 id="a new turn of the caller answers instead"),
    pytest.param([("connect", True, False), ("created", "r"), ("request",),
                  ("connect", False, False), ("request",)], [False, None, False, False, True],
                 id="a new connection: nothing open, the old request dropped"),
])
def test_response_requests(steps: list[tuple[Any, ...]], expected: list[bool | None]) -> None:
    assert run(steps) == expected


def test_keypress_entries_end_at_the_terminator_or_the_pause() -> None:
    turns = Turns()
    assert turns.keypress("1", 0.0, timeout=2.0, terminator="#") is None
    assert turns.next_deadline == 2.0
    assert turns.keypress("#", 1.0, timeout=2.0, terminator="#") == "1#"
    assert turns.next_deadline is None
    assert turns.keypress("5", 3.0, timeout=2.0, terminator=None) is None
    assert turns.tick(4.9) is None
    assert turns.tick(5.0) == "5" and turns.next_deadline is None
    assert turns.tick(9.0) is None
