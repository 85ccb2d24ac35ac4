"""Check Twilio's ``X-Twilio-Signature`` header, so only Twilio can start a call on our key.

Why it matters: the voice webhook and the media-stream WebSocket are public URLs, and every stream
opens a paid model session. Without a check, anyone who finds the URL can run sessions on the
operator's OpenAI key (toll fraud by another name). Twilio signs each request with the account
Auth Token: ``base64(HMAC-SHA1(token, url + name1 + value1 + name2 + value2 ...))``, names sorted,
the values of a repeated name sorted and de-duplicated.

Sans-I/O: strings in, a verdict out. The verdict matches ``twilio.request_validator
.RequestValidator.validate`` on every input the SDK accepts, port quirks included (the tests are
differential against it), except that garbage never raises here: it is simply not valid.

The URL must be the public one Twilio requested (scheme, host, port, path and query as written in
the console or TwiML), not what the app server sees behind a proxy. For the WebSocket upgrade that
is the ``wss://`` URL; :func:`websocket_url` converts a configured ``https://`` base.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import TypeAlias
from urllib.parse import ParseResult, parse_qs, urlparse

__all__ = [
    "HEADER",
    "compute_signature",
    "is_valid_body_signature",
    "is_valid_signature",
    "websocket_url",
]

HEADER = "X-Twilio-Signature"
# Form fields: a name maps to its value, or to all its values when it is repeated.
Params: TypeAlias = Mapping[str, str | Sequence[str]]

_WEBSOCKET_SCHEMES = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}


def compute_signature(auth_token: str, url: str, params: Params | None = None) -> str:
    """Return the signature Twilio sends for a request to *url* with form *params*.

    A value may be a single string or a sequence of strings for a repeated name.
    """
    params = params or {}
    message = [url]
    for name in sorted(params):
        value = params[name]
        values = [value] if isinstance(value, str) else value
        message.extend(name + v for v in sorted(set(values)))
    digest = hmac.new(
        auth_token.encode("utf-8"), "".join(message).encode("utf-8"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid_signature(
    auth_token: str, url: str, signature: str, params: Params | None = None
) -> bool:
    """Whether *signature* is Twilio's for *url* and form *params* (``None`` for a GET/upgrade).

    Accepts the signature for *url* without its port or with the scheme's default port added,
    because Twilio is not consistent about which one it signs.
    """
    if not _plausible(signature):
        return False
    try:
        variants = _port_variants(urlparse(url))
        return _matches_any(auth_token, variants, params, signature)
    except ValueError:  # a bad port, or text that cannot be UTF-8 encoded
        return False


def is_valid_body_signature(auth_token: str, url: str, body: bytes, signature: str) -> bool:
    """Whether a request with a JSON *body* is Twilio's: the ``bodySHA256`` variant.

    Twilio puts the body's SHA-256 (lower-case hex) in the URL's ``bodySHA256`` query parameter and
    signs the full URL with no parameters. A URL without ``bodySHA256`` is rejected: unlike the SDK
    (which raises, or skips the hash for an empty body), nothing unhashed gets through.
    """
    if not _plausible(signature):
        return False
    try:
        parsed = urlparse(url)
        claimed = parse_qs(parsed.query).get("bodySHA256")
        if not claimed:
            return False
        actual = hashlib.sha256(body).hexdigest()
        body_ok = hmac.compare_digest(actual.encode("ascii"), claimed[0].encode("utf-8"))
        return _matches_any(auth_token, _port_variants(parsed), None, signature) and body_ok
    except ValueError:
        return False


def websocket_url(url: str) -> str:
    """Return *url* with ``https``/``http`` made ``wss``/``ws``: what an upgrade is signed for.

    Raises :class:`ValueError` for any other scheme (a configuration mistake, not peer input).
    """
    scheme, sep, rest = url.partition("://")
    ws_scheme = _WEBSOCKET_SCHEMES.get(scheme.lower())
    if not sep or ws_scheme is None:
        raise ValueError(f"expected an http(s) or ws(s) URL, not {url!r}")
    return f"{ws_scheme}://{rest}"


def _plausible(signature: str) -> bool:
    # Base64 is ASCII; anything else cannot match, and refusing it early keeps encode() safe.
    return isinstance(signature, str) and bool(signature) and signature.isascii()


def _port_variants(parsed: ParseResult) -> tuple[str, str]:
    """The two URLs the SDK accepts: port removed, and default port added (raises ValueError).

    Mirrors the SDK exactly, so the acceptance set is the same: both go through
    ``ParseResult.geturl()`` (which drops an empty ``?`` or ``#``); "removed" cuts the netloc at its
    first colon (which also drops any ``user:password@`` and mangles IPv6 literals); "added" uses
    443 for ``https`` and 80 for every other scheme, ``wss`` included, so for ``wss`` only the
    port-less variant can match a real signature. Port 0 counts as no port, as in the SDK.
    """
    if parsed.port:
        with_port = parsed.geturl()
        without_port = parsed._replace(netloc=parsed.netloc.partition(":")[0]).geturl()
    else:
        default = 443 if parsed.scheme == "https" else 80
        with_port = parsed._replace(netloc=f"{parsed.netloc}:{default}").geturl()
        without_port = parsed.geturl()
    return without_port, with_port


def _matches_any(
    auth_token: str, urls: tuple[str, ...], params: Params | None, signature: str
) -> bool:
    given = signature.encode("ascii")
    # Compare against every variant, not just until the first match, to keep the timing flat.
    results = [
        hmac.compare_digest(compute_signature(auth_token, url, params).encode("ascii"), given)
        for url in urls
    ]
    return any(results)
