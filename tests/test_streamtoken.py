"""Stream tickets: round trip, every way to get one wrong, expiry, replay, the guard's memory."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from collections.abc import Callable

import pytest

from callbridge._errors import RemoteProtocolError
from callbridge.streamtoken import (
    CLOCK_SKEW,
    DEFAULT_TTL,
    PARAMETER,
    Claims,
    InvalidStreamToken,
    ReplayGuard,
    derive_key,
    issue,
    verify,
)
from callbridge.twiml import connect_stream

KEY = derive_key("twilio-auth-token")
SID = "CA0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0
NONCE = bytes(range(12))
TOKEN = issue(KEY, SID, now=NOW, nonce=NONCE)
EXPIRES = NOW + DEFAULT_TTL
B64URL = string.ascii_letters + string.digits + "-_"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: bytes, *, sid: str = SID, key: bytes = KEY) -> str:
    """A ticket built by hand from the documented format: what a second implementation would do."""
    text = b64(payload)
    mac = hmac.new(key, f"v1.{text}.{sid}".encode(), hashlib.sha256).digest()
    return f"v1.{text}.{b64(mac)}"


def reason(token: str | None, sid: str = SID, *, now: float = NOW, key: bytes = KEY) -> str:
    with pytest.raises(InvalidStreamToken) as caught:
        verify(key, token, sid, now=now)
    return caught.value.reason


# ---------------------------------------------------------------- the happy path and the format


def test_round_trip() -> None:
    assert verify(KEY, TOKEN, SID, now=NOW) == Claims(nonce=NONCE, expires=EXPIRES)
    assert verify(KEY, TOKEN, SID, now=EXPIRES - 0.001).nonce == NONCE


def test_format_is_as_documented() -> None:
    version, payload, mac = TOKEN.split(".")
    assert version == "v1" and len(TOKEN) == 74
    assert set(payload + mac) <= set(B64URL)  # URL-safe, unpadded: fits a <Parameter> as is
    assert signed(int(EXPIRES).to_bytes(8, "big") + NONCE) == TOKEN
    assert SID not in TOKEN  # bound by the MAC, not carried


def test_token_survives_twiml() -> None:
    twiml = connect_stream("wss://bridge.example.com/media-stream", parameters={PARAMETER: TOKEN})
    assert f'<Parameter name="{PARAMETER}" value="{TOKEN}" />' in twiml


def test_fresh_nonce_by_default() -> None:
    first, second = issue(KEY, SID, now=NOW), issue(KEY, SID, now=NOW)
    assert first != second
    assert verify(KEY, first, SID, now=NOW).nonce != verify(KEY, second, SID, now=NOW).nonce


def test_expiry_is_whole_seconds_rounded_down() -> None:
    claims = verify(KEY, issue(KEY, SID, now=NOW + 0.75, ttl=10.5), SID, now=NOW)
    assert claims.expires == NOW + 11


def test_derive_key() -> None:
    assert len(KEY) == 32
    assert derive_key("twilio-auth-token") == KEY
    assert derive_key("another-auth-token") != KEY
    assert b"twilio-auth-token" not in KEY
    # Not the raw token, and not the signature scheme's HMAC-SHA1 of anything obvious either.
    assert hmac.new(b"twilio-auth-token", b"", hashlib.sha256).digest() != KEY


def test_error_is_a_remote_protocol_error_with_a_reason() -> None:
    with pytest.raises(RemoteProtocolError, match="invalid stream token: bad signature"):
        verify(KEY, TOKEN, "CA-other", now=NOW)


# ---------------------------------------------------------------- rejections, by reason

WRONG_KEY = derive_key("someone-else")
PAYLOAD, MAC = TOKEN.split(".")[1:]

REJECTED: dict[str, tuple[str | None, str, bytes, str]] = {  # name: (token, call SID, key, reason)
    "none": (None, SID, KEY, "missing"),
    "empty": ("", SID, KEY, "missing"),
    "wrong call SID": (TOKEN, "CA" + "f" * 32, KEY, "bad signature"),
    "SID prefix": (TOKEN, SID[:-1], KEY, "bad signature"),
    "SID extended": (TOKEN, SID + "0", KEY, "bad signature"),
    "SID with dot": (TOKEN, SID + ".x", KEY, "bad signature"),
    "empty SID": (TOKEN, "", KEY, "bad signature"),
    "lone surrogate SID": (TOKEN, "\ud800", KEY, "bad signature"),
    "wrong key": (TOKEN, SID, WRONG_KEY, "bad signature"),
    "issued for another SID": (issue(KEY, "CAother", now=NOW, nonce=NONCE), SID, KEY,
                               "bad signature"),
    "version only": ("v1", SID, KEY, "malformed"),
    "two dots": ("v1..", SID, KEY, "malformed"),
    "extra dot at end": (TOKEN + ".", SID, KEY, "malformed"),
    "extra dot at start": ("." + TOKEN, SID, KEY, "malformed"),
    "extra segment": (TOKEN + ".AAAA", SID, KEY, "malformed"),
    "version 2": ("v2" + TOKEN[2:], SID, KEY, "malformed"),
    "version V1": ("V1" + TOKEN[2:], SID, KEY, "malformed"),
    "no version": (f"{PAYLOAD}.{MAC}", SID, KEY, "malformed"),
    "padded": (f"v1.{PAYLOAD}=.{MAC}", SID, KEY, "malformed"),
    "standard alphabet": (TOKEN.replace("-", "+").replace("_", "/"), SID, KEY, "malformed"),
    "not base64": ("v1.!!!!.????", SID, KEY, "malformed"),
    "non-ASCII": (f"v1.{PAYLOAD}é.{MAC}", SID, KEY, "malformed"),
    "whitespace": (TOKEN + " ", SID, KEY, "malformed"),
    "newline inside": (f"v1.{PAYLOAD[:4]}\n{PAYLOAD[4:]}.{MAC}", SID, KEY, "malformed"),
    "short MAC": (f"v1.{PAYLOAD}.{MAC[:-1]}", SID, KEY, "malformed"),
    "long MAC": (f"v1.{PAYLOAD}.{MAC}AAAA", SID, KEY, "malformed"),
    "huge": ("v1." + "A" * 10_000 + "." + MAC, SID, KEY, "malformed"),
    "MAC swapped in": (f"v1.{MAC}.{MAC}", SID, KEY, "bad signature"),
    "forged payload": (f"v1.{b64(bytes(20))}.{MAC}", SID, KEY, "bad signature"),
    "signed payload too short": (signed(bytes(8)), SID, KEY, "malformed"),
    "signed payload too long": (signed(int(EXPIRES).to_bytes(8, "big") + NONCE + b"!"), SID,
                                KEY, "malformed"),
}


@pytest.mark.parametrize(("token", "sid", "key", "expected"), REJECTED.values(), ids=REJECTED)
def test_rejected(token: str | None, sid: str, key: bytes, expected: str) -> None:
    assert reason(token, sid, key=key) == expected


@pytest.mark.parametrize("position", range(len(TOKEN)))
def test_every_single_character_tamper_is_rejected(position: int) -> None:
    for char in B64URL + ".=+/ \x00é":
        if char != TOKEN[position]:
            tampered = TOKEN[:position] + char + TOKEN[position + 1 :]
            with pytest.raises(InvalidStreamToken):
                verify(KEY, tampered, SID, now=NOW)


@pytest.mark.parametrize("segment", [1, 2])
def test_every_bit_flip_is_a_bad_signature(segment: int) -> None:
    parts = TOKEN.split(".")
    raw = base64.urlsafe_b64decode(parts[segment] + "=" * (-len(parts[segment]) % 4))
    for bit in range(8 * len(raw)):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        parts_copy = list(parts)
        parts_copy[segment] = b64(bytes(flipped))
        assert reason(".".join(parts_copy)) == "bad signature"


def test_every_truncation_is_rejected() -> None:
    for length in range(len(TOKEN)):
        assert reason(TOKEN[:length]) in {"missing", "malformed", "bad signature"}


def test_non_canonical_base64_is_refused_though_it_decodes_the_same() -> None:
    # 20 payload bytes leave 2 unused low bits in the last character; setting one keeps the bytes.
    last = PAYLOAD[-1]
    other = B64URL[B64URL.index(last) ^ 1]
    twin = PAYLOAD[:-1] + other
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(PAYLOAD + "=")
    assert reason(f"v1.{twin}.{MAC}") == "malformed"


def test_mac_is_checked_before_the_payload_is_trusted() -> None:
    expired = issue(KEY, SID, now=NOW - 3600, nonce=NONCE)
    assert reason(expired) == "expired"
    assert reason(expired, "CAother") == "bad signature"  # not "expired": nothing read yet
    assert reason(expired, key=WRONG_KEY) == "bad signature"


# ---------------------------------------------------------------- time

TIMES: dict[str, tuple[float, float, float, str | None]] = {  # issued at, ttl, verified at: reason
    "just issued": (NOW, DEFAULT_TTL, NOW, None),
    "last moment": (NOW, DEFAULT_TTL, EXPIRES - 1e-6, None),
    "expires exactly at the boundary": (NOW, DEFAULT_TTL, EXPIRES, "expired"),
    "long gone": (NOW, DEFAULT_TTL, NOW + 86_400, "expired"),
    "verifier lags by the allowed skew": (NOW, DEFAULT_TTL, NOW - CLOCK_SKEW, None),
    "verifier lags by more": (NOW, DEFAULT_TTL, NOW - CLOCK_SKEW - 1, "from the future"),
    "far future": (NOW + 86_400, DEFAULT_TTL, NOW, "from the future"),
    "issued with a longer ttl": (NOW, 10 * DEFAULT_TTL, NOW, "from the future"),
    "issued with a shorter ttl": (NOW, 5.0, NOW + 4.9, None),
}


@pytest.mark.parametrize(("issued", "ttl", "verified", "expected"), TIMES.values(), ids=TIMES)
def test_lifetime(issued: float, ttl: float, verified: float, expected: str | None) -> None:
    token = issue(KEY, SID, now=issued, ttl=ttl, nonce=NONCE)
    if expected is None:
        assert verify(KEY, token, SID, now=verified).nonce == NONCE
    else:
        assert reason(token, now=verified) == expected


def test_verifier_configured_for_a_longer_ttl_accepts_it() -> None:
    token = issue(KEY, SID, now=NOW, ttl=600.0)
    assert verify(KEY, token, SID, now=NOW, ttl=600.0).expires == NOW + 600


#: a call with a bad argument, and what its ValueError says
BAD_ARGUMENTS: dict[str, tuple[Callable[[], object], str]] = {
    "short key (issue)": (lambda: issue(b"k" * 15, SID, now=NOW), "at least 16 bytes"),
    "short key (verify)": (lambda: verify(b"k" * 15, TOKEN, SID, now=NOW), "at least 16 bytes"),
    "nonce too short": (lambda: issue(KEY, SID, now=NOW, nonce=b"x" * 11), "nonce must be 12"),
    "nonce too long": (lambda: issue(KEY, SID, now=NOW, nonce=b"x" * 13), "nonce must be 12"),
    "zero ttl": (lambda: issue(KEY, SID, now=NOW, ttl=0), "positive ttl"),
    "negative ttl": (lambda: issue(KEY, SID, now=NOW, ttl=-1), "positive ttl"),
    "infinite ttl": (lambda: issue(KEY, SID, now=NOW, ttl=float("inf")), "positive ttl"),
    "NaN now (issue)": (lambda: issue(KEY, SID, now=float("nan")), "finite now"),
    "NaN now (verify)": (lambda: verify(KEY, TOKEN, SID, now=float("nan")), "now must be finite"),
    "before the epoch": (lambda: issue(KEY, SID, now=-1000.0), "out of range"),
    "guard capacity": (lambda: ReplayGuard(capacity=0), "capacity must be positive"),
}


@pytest.mark.parametrize(("call", "message"), BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS)
def test_our_own_mistakes_are_value_errors(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- replay guard


def claims(n: int, *, expires: float = EXPIRES) -> Claims:
    return Claims(nonce=n.to_bytes(12, "big"), expires=expires)


def test_replay_is_refused() -> None:
    guard = ReplayGuard()
    guard.check(verify(KEY, TOKEN, SID, now=NOW), now=NOW)
    with pytest.raises(InvalidStreamToken, match="replayed"):
        guard.check(verify(KEY, TOKEN, SID, now=NOW + 1), now=NOW + 1)
    guard.check(verify(KEY, issue(KEY, SID, now=NOW), SID, now=NOW + 1), now=NOW + 1)
    assert len(guard) == 2


def test_after_expiry_verify_refuses_before_the_guard_is_asked() -> None:
    guard = ReplayGuard()
    guard.check(verify(KEY, TOKEN, SID, now=NOW), now=NOW)
    assert reason(TOKEN, now=EXPIRES) == "expired"
    # The guard forgot the nonce at expiry, and that is safe because of the line above.
    guard.check(claims(1, expires=EXPIRES + 60), now=EXPIRES)
    assert len(guard) == 1
    with pytest.raises(InvalidStreamToken, match="expired"):
        guard.check(Claims(nonce=NONCE, expires=EXPIRES), now=EXPIRES)


def test_memory_stays_bounded_with_steady_traffic() -> None:
    guard = ReplayGuard()
    for n in range(20_000):
        now = NOW + n / 10  # ten streams a second, each ticket live for DEFAULT_TTL
        guard.check(claims(n, expires=now + DEFAULT_TTL), now=now)
        assert len(guard) <= 10 * DEFAULT_TTL + 1
    assert len(guard._by_expiry) == len(guard)  # the heap is pruned with the set


def test_pruning_follows_expiry_not_arrival() -> None:
    guard = ReplayGuard()
    guard.check(claims(0, expires=NOW + 600), now=NOW)  # a long-lived ticket first
    for n in range(1, 100):
        guard.check(claims(n, expires=NOW + 10), now=NOW)
    guard.check(claims(100), now=NOW + 20)
    assert len(guard) == 2
    with pytest.raises(InvalidStreamToken, match="replayed"):
        guard.check(claims(0, expires=NOW + 600), now=NOW + 30)


def test_full_guard_refuses_new_tickets_but_remembers_old_ones() -> None:
    guard = ReplayGuard(capacity=3)
    for n in range(3):
        guard.check(claims(n, expires=NOW + 10 + n), now=NOW)
    with pytest.raises(InvalidStreamToken, match="replay guard full"):
        guard.check(claims(3), now=NOW)
    with pytest.raises(InvalidStreamToken, match="replayed"):  # fail closed, never forget early
        guard.check(claims(0), now=NOW + 1)
    guard.check(claims(3), now=NOW + 10)  # the first one expired: room again
    assert len(guard) == 3
