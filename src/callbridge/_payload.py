"""Base64 audio payloads as both peers send them: their size, silence, joining.

Pure functions over the wire's base64 strings (sans-I/O); the bridge checks every
payload on its way in, so what it joins is valid.
"""

from __future__ import annotations

import binascii

__all__ = ["base64_size", "join_base64", "silence", "whole_ms"]


def base64_size(payload: str) -> int | None:
    """The number of bytes `payload` decodes to; None if it is not valid base64."""
    try:
        return len(binascii.a2b_base64(payload, strict_mode=True))
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None


def whole_ms(payload: str, bytes_per_ms: int) -> int:
    """How much audio a payload that is not base64 stood for, as well as can be told:
    what its length would decode to, in whole milliseconds (audio comes in whole ms,
    and the padding of a garbled payload is unknown)."""
    nbytes = len(payload) * 3 // 4
    return nbytes - nbytes % bytes_per_ms


#: μ-law silence (0xFF: the zero level), by length, for the few bad payloads
_SILENCE = b"\xff"


def silence(nbytes: int) -> str:
    return binascii.b2a_base64(_SILENCE * nbytes, newline=False).decode("ascii")


def join_base64(payloads: list[str]) -> str:
    """One base64 string for the concatenated audio (base64 does not concatenate).
    Every payload here was checked on its way in."""
    return binascii.b2a_base64(b"".join(map(binascii.a2b_base64, payloads)),
                               newline=False).decode("ascii")
