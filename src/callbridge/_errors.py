"""The two ways a protocol exchange goes wrong, split like h11's errors."""

from __future__ import annotations

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class: a message that does not fit the protocol."""


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol does not allow: our bug."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something we cannot read: their bad input, reported, not fatal."""
