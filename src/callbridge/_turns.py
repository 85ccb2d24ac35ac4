"""Whose turn it is: one response at a time, and the caller's keypresses.

Theory of operation
-------------------
The Realtime API lets one response write to the conversation at a time: a
`response.create` while one is active is refused with
`conversation_already_has_active_response`. So a response the bridge wants (after
keypresses, later after tool outputs) goes out only when no response is open and
none of ours is on its way; otherwise it waits for the open one's `response.done`.
The greeting counts as ours. When the caller starts a new turn meanwhile
(`speech_started`), server VAD answers that turn, with everything added to the
conversation so far, so the waiting request is dropped: never a double response.
Before the first model connection nothing can be sent: a request waits for it, and
a new connection starts with nothing open.

Keypresses are collected until the caller pauses (`timeout`) or presses the
terminator; then the whole entry is handed back to be delivered.

Like `Playback`, this is a sub-state of the `Bridge`: synchronous, no clock (`now`
is an argument), and it only answers; the bridge queues what it says to send.
"""

from __future__ import annotations

__all__ = ["Turns"]


class Turns:
    """Response and keypress state of one call. See the module docstring."""

    def __init__(self) -> None:
        self._open: set[str] = set()  # responses created and not done
        self._requested = False  # our `response.create` is on its way
        self._wanted = False  # a request waits for the open response to finish
        self._connected = False
        self._digits = ""
        #: when `tick` must be called next (None: no keypress entry is under way)
        self.next_deadline: float | None = None

    # --- responses -----------------------------------------------------------------------

    def request(self) -> bool:
        """A response is wanted. True: send `response.create` now; False: it waits
        (and `connected` or `done` will say when)."""
        if self._open or self._requested or not self._connected:
            self._wanted = True
            return False
        self._requested = True
        return True

    def connected(self, *, first: bool, greeting: bool) -> bool:
        """A model connection opened; `greeting`: its first `response.create` is ours.
        True: send the `response.create` that waited for the connection, now."""
        self._open.clear()
        self._requested = greeting
        self._connected = True
        if not first:
            self._wanted = False  # it was for the old session's conversation
            return False
        if self._wanted:
            self._wanted = False
            return self.request()
        return False

    def created(self, response_id: str) -> None:
        self._open.add(response_id)
        self._requested = False

    def done(self, response_id: str) -> bool:
        """A response ended. True: send the `response.create` that waited for it, now."""
        self._open.discard(response_id)
        if self._wanted and not self._open:
            self._wanted = False
            return self.request()
        return False

    def caller_spoke(self) -> None:
        """The caller started a turn: server VAD answers it, not a waiting request."""
        self._wanted = False

    # --- keypresses ----------------------------------------------------------------------

    def keypress(self, digit: str, now: float, *, timeout: float,
                 terminator: str | None) -> str | None:
        """A key; the whole entry when it ends with this one (the terminator)."""
        self._digits += digit
        if digit == terminator:
            return self._entry()
        self.next_deadline = now + timeout
        return None

    def tick(self, now: float) -> str | None:
        """Time passed: the entry, if the caller paused long enough."""
        if self.next_deadline is not None and now >= self.next_deadline:
            return self._entry()
        return None

    def _entry(self) -> str:
        digits, self._digits, self.next_deadline = self._digits, "", None
        return digits
