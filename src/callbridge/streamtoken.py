"""A short-lived, single-use ticket from the voice webhook to the media-stream WebSocket.

Why: each media stream opens a paid model session on the operator's key, and the stream URL is
public (it is in the TwiML). Whether Twilio signs the upgrade is not settled, so the signed voice
webhook also hands out a ticket: :func:`issue` goes in a TwiML ``<Parameter>`` named
:data:`PARAMETER`, comes back in the ``start`` message's ``customParameters``, and :func:`verify`
runs before the model session opens. A ticket is useless for another call, after its TTL, or
(per worker, through :class:`ReplayGuard`) a second time.

Format ``v1.<payload>.<mac>``, URL-safe base64 without padding. Payload: expiry (whole seconds
since the epoch, 8 bytes big-endian) and a 12-byte random nonce. MAC: HMAC-SHA256 over
``v1.<payload>.<call SID>``, binding the SID without carrying it, checked in constant time before
any payload field is read. Stateless, so issuer and verifier may be different machines, whose
clocks may differ by :data:`CLOCK_SKEW`: an expiry more than ``ttl + CLOCK_SKEW`` ahead is refused
as "from the future". Expiry gets no grace: dead once ``now >= expires``. Sans-I/O: ``now``
(seconds since the epoch) is always an argument.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import math
import secrets

import attrs

from ._errors import RemoteProtocolError

__all__ = ["CLOCK_SKEW", "DEFAULT_TTL", "PARAMETER", "Claims", "InvalidStreamToken",
           "ReplayGuard", "derive_key", "issue", "verify"]

PARAMETER = "callbridge_token"
DEFAULT_TTL = 120.0  # seconds: ample for Twilio to connect the stream, too short to be stolen
CLOCK_SKEW = 30.0  # seconds the verifier's clock may lag the issuer's

_VERSION = "v1"
_NONCE_SIZE = 12
_EXPIRY_SIZE = 8
_MIN_KEY_SIZE = 16
_MAC_SIZE = 32
_MAX_TOKEN_LENGTH = 128  # a real one is 74 characters; don't decode megabytes from a stranger
_KEY_LABEL = b"callbridge stream token key v1"


class InvalidStreamToken(RemoteProtocolError):
    """The stream's ticket is missing or unacceptable; :attr:`reason` says why, for the log.

    A wrong key, a wrong call SID and a forgery all read "bad signature": not the sender's business.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid stream token: {reason}")
        self.reason = reason


@attrs.frozen(kw_only=True)
class Claims:
    """What a verified ticket says: its nonce (for the replay guard) and when it expires."""

    nonce: bytes
    expires: float


def derive_key(auth_token: str) -> bytes:
    """Derive the ticket key from the Twilio Auth Token, so one secret never serves two purposes."""
    return hmac.new(auth_token.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def issue(
    key: bytes, call_sid: str, *, now: float, ttl: float = DEFAULT_TTL, nonce: bytes | None = None
) -> str:
    """Return a ticket for *call_sid* that expires *ttl* seconds (rounded down) after *now*."""
    _check_key(key)
    if not (math.isfinite(now) and math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"need a finite now and a positive ttl, not now={now!r}, ttl={ttl!r}")
    if nonce is None:
        nonce = secrets.token_bytes(_NONCE_SIZE)
    elif len(nonce) != _NONCE_SIZE:
        raise ValueError(f"nonce must be {_NONCE_SIZE} bytes, not {len(nonce)}")
    expires = int(now + ttl)
    if not 0 <= expires < 1 << (8 * _EXPIRY_SIZE):
        raise ValueError(f"expiry {expires} out of range")
    payload = _encode(expires.to_bytes(_EXPIRY_SIZE, "big") + nonce)
    return f"{_VERSION}.{payload}.{_encode(_mac(key, payload, call_sid))}"


def verify(
    key: bytes, token: str | None, call_sid: str, *, now: float, ttl: float = DEFAULT_TTL
) -> Claims:
    """Return the claims of *token* if it is a live ticket for *call_sid*, else raise.

    *ttl* is the lifetime the issuer uses; with :data:`CLOCK_SKEW` it bounds how far ahead an
    expiry may be. Raises :class:`InvalidStreamToken` with reason "missing", "malformed",
    "bad signature", "expired" or "from the future".
    """
    _check_key(key)
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, not {now!r}")  # NaN would pass every comparison
    if not token:
        raise InvalidStreamToken("missing")
    parts = token.split(".") if len(token) <= _MAX_TOKEN_LENGTH else []
    if len(parts) != 3 or parts[0] != _VERSION:
        raise InvalidStreamToken("malformed")
    _, payload_text, mac_text = parts
    payload, mac = _decode(payload_text), _decode(mac_text)
    if len(mac) != _MAC_SIZE:
        raise InvalidStreamToken("malformed")
    if not hmac.compare_digest(mac, _mac(key, payload_text, call_sid)):
        raise InvalidStreamToken("bad signature")
    # Only now is the payload ours. A wrong length would mean a bug of ours, signed with our key.
    if len(payload) != _EXPIRY_SIZE + _NONCE_SIZE:
        raise InvalidStreamToken("malformed")
    expires = float(int.from_bytes(payload[:_EXPIRY_SIZE], "big"))
    if now >= expires:
        raise InvalidStreamToken("expired")
    if expires > now + ttl + CLOCK_SKEW:
        raise InvalidStreamToken("from the future")
    return Claims(nonce=payload[_EXPIRY_SIZE:], expires=expires)


class ReplayGuard:
    """Refuse a ticket's second use within its lifetime, in this process.

    Each nonce is kept until its ticket expires (then :func:`verify` refuses the ticket anyway),
    pruned from a heap ordered by expiry: O(log n) amortised per check. At *capacity* live nonces
    new tickets are refused ("replay guard full") rather than forgetting one that could still be
    replayed: fail closed. At the default cap and TTL that is over 800 new streams a second on one
    worker, an attack rather than traffic.
    """

    def __init__(self, *, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, not {capacity}")
        self.capacity = capacity
        self._seen: set[bytes] = set()
        self._by_expiry: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, claims: Claims, *, now: float) -> None:
        """Remember *claims* as used, or raise :class:`InvalidStreamToken` if it cannot be used."""
        while self._by_expiry and self._by_expiry[0][0] <= now:
            _, nonce = heapq.heappop(self._by_expiry)
            self._seen.discard(nonce)
        if claims.nonce in self._seen:
            raise InvalidStreamToken("replayed")
        if now >= claims.expires:
            raise InvalidStreamToken("expired")
        if len(self._seen) >= self.capacity:
            raise InvalidStreamToken("replay guard full")
        self._seen.add(claims.nonce)
        heapq.heappush(self._by_expiry, (claims.expires, claims.nonce))


def _check_key(key: bytes) -> None:
    if len(key) < _MIN_KEY_SIZE:
        raise ValueError(f"stream token key must be at least {_MIN_KEY_SIZE} bytes")


def _mac(key: bytes, payload_text: str, call_sid: str) -> bytes:
    # The payload text has no ".", so the SID is exactly what follows the second one. surrogatepass:
    # a SID from the wire never makes this raise, and distinct strings stay distinct bytes.
    message = f"{_VERSION}.{payload_text}.{call_sid}".encode("utf-8", "surrogatepass")
    return hmac.new(key, message, hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    """Strict unpadded URL-safe base64: one text per byte string, anything else "malformed".

    The decoder skips foreign characters and ignores unused low bits, so the result is accepted
    only if encoding it gives back *text* exactly.
    """
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:  # binascii.Error (bad length or padding) or non-ASCII text
        raise InvalidStreamToken("malformed") from None
    if _encode(data) != text:
        raise InvalidStreamToken("malformed")
    return data
