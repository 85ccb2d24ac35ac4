"""X-Twilio-Signature: the SDK's published vectors, then verdict-for-verdict parity with the SDK."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import pytest
from twilio.request_validator import (  # type: ignore[import-untyped]
    RequestValidator,
    add_port,
    remove_port,
)

from callbridge.signature import (
    compute_signature,
    is_valid_body_signature,
    is_valid_signature,
    websocket_url,
)

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
URL_443 = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
SIGNATURE_443 = "kvajT1Ptam85bY51eRf/AJRuM3w="
BODY = b'{"property": "value", "boolean": true}'
BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
BODY_URL = f"{URL}&bodySHA256={BODY_HASH}"
BODY_SIGNATURE = "a9nBmqA0ju/hNViExpshrM61xv4="
WSS_URL = "wss://example.com/media-stream"
WSS_SIGNATURE = "XFfwGS2Ev7f9qAP9MmRoMS7C724="


class _Fields:
    def __init__(self, items: Mapping[str, Sequence[str]]) -> None:
        self._items = {name: list(values) for name, values in items.items()}

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class MultiDict(_Fields):
    """Flask's repeated-field interface, as the SDK reads it (``getall``)."""

    def getall(self, name: str) -> list[str]:
        return self._items[name]


class QueryDict(_Fields):
    """Django's repeated-field interface (``getlist``)."""

    def getlist(self, name: str) -> list[str]:
        return self._items[name]


# ---------------------------------------------------------------- published vectors


def test_published_form_vectors() -> None:
    assert compute_signature(TOKEN, URL, PARAMS) == SIGNATURE
    assert compute_signature(TOKEN, URL_443, PARAMS) == SIGNATURE_443


@pytest.mark.parametrize("url", [URL, URL_443])
@pytest.mark.parametrize("signature", [SIGNATURE, SIGNATURE_443])
def test_published_vectors_validate_with_and_without_port(url: str, signature: str) -> None:
    assert is_valid_signature(TOKEN, url, signature, PARAMS)


def test_published_body_vector() -> None:
    assert hashlib.sha256(BODY).hexdigest() == BODY_HASH
    assert compute_signature(TOKEN, BODY_URL) == BODY_SIGNATURE
    assert is_valid_body_signature(TOKEN, BODY_URL, BODY, BODY_SIGNATURE)
    assert not is_valid_body_signature(TOKEN, BODY_URL, BODY + b" ", BODY_SIGNATURE)


def test_websocket_upgrade_vector() -> None:
    assert compute_signature(TOKEN, WSS_URL) == WSS_SIGNATURE
    assert is_valid_signature(TOKEN, WSS_URL, WSS_SIGNATURE)
    upgrade_url = websocket_url("https://example.com/media-stream")
    assert is_valid_signature(TOKEN, upgrade_url, WSS_SIGNATURE)
    # The https URL is not what Twilio signed for the upgrade.
    assert not is_valid_signature(TOKEN, "https://example.com/media-stream", WSS_SIGNATURE)


def test_wss_quirk_default_port_variant_is_80() -> None:
    # The SDK adds :80 to every scheme but https, wss included; so do we, exactly.
    signed_443 = compute_signature(TOKEN, "wss://example.com:443/media-stream")
    signed_80 = compute_signature(TOKEN, "wss://example.com:80/media-stream")
    assert not is_valid_signature(TOKEN, WSS_URL, signed_443)
    assert is_valid_signature(TOKEN, WSS_URL, signed_80)
    assert is_valid_signature(TOKEN, "wss://example.com:443/media-stream", WSS_SIGNATURE)
    sdk = RequestValidator(TOKEN)
    assert not sdk.validate(WSS_URL, None, signed_443)
    assert sdk.validate(WSS_URL, None, signed_80)


# ---------------------------------------------------------------- differential against the SDK

# Every grid URL's signature is tried on every grid URL; families share host and path.
FAMILIES = [  # (URL template, ports)
    ("https://mycompany.com{}/myapp.php?foo=1&bar=2", ["", ":443", ":80", ":1234"]),
    ("http://example.com{}/voice", ["", ":80", ":443", ":8080"]),
    ("wss://bridge.example.com{}/media-stream", ["", ":443", ":80", ":8443"]),
    ("ws://localhost{}/media-stream", ["", ":80", ":8000"]),
]
GRID_URLS = [template.format(port) for template, ports in FAMILIES for port in ports] + [
    "https://example.com",
    "https://example.com/",
    "https://example.com/?",  # geturl() drops an empty query: the SDK never signs the "?"
    "https://example.com/a/b;p?x=%20y&z=1&z=2#frag",
    "https://example.com/path?bodySHA256=abc",  # with form params the SDK checks no body hash
    "HTTPS://Example.COM/Voice",  # urlparse lower-cases the scheme, and only the scheme
    "https://user:pw@example.com:8443/voice",  # SDK quirk: port removal cuts at the first colon
    "https://user:pw@example.com/voice",
    "https://[::1]:8443/voice",  # ... which mangles IPv6 literals too
    "https://example.com:0/x",  # port 0 counts as no port
    "https://bücher.example/straße?q=ü",
]

PARAM_SETS: dict[str, tuple[Any, Any]] = {  # name: (ours, what the SDK is given)
    "none": (None, None),
    "empty": ({}, {}),
    "single": (PARAMS, PARAMS),
    "repeated-getall": (
        {"Digits": ["2", "1", "2"], "To": "+18005551212", "Blank": [""], "None": []},
        MultiDict({"Digits": ["2", "1", "2"], "To": ["+18005551212"], "Blank": [""], "None": []}),
    ),
    "repeated-getlist": (
        {"b": ("x", "y", "x"), "a": ["z"]},
        QueryDict({"b": ["x", "y", "x"], "a": ["z"]}),
    ),
    "unicode": (
        {"SpeechResult": "Grüße ☎ 🎧", "Ünïcode": "日本語", "Empty": ""},
        {"SpeechResult": "Grüße ☎ 🎧", "Ünïcode": "日本語", "Empty": ""},
    ),
}


def _candidate_signatures(sdk: RequestValidator, url: str, sdk_params: Any) -> list[str]:
    """Right for some URL variant, right for something else, and plain wrong."""
    other = RequestValidator("54321")
    variants = [url, remove_port(urlparse(url)), add_port(urlparse(url))]
    signed = [sdk.compute_signature(u, sdk_params) for u in GRID_URLS + variants]
    right = sdk.compute_signature(url, sdk_params)
    return [
        *dict.fromkeys(signed),
        sdk.compute_signature(url, {"Other": "param"}),
        other.compute_signature(url, sdk_params),
        right[:-1],
        right[:-2] + "==",
        right + " ",
        right.lower(),
        "",
        "=",
        "é" * 28,
        "\ud800" * 28,
        "A" * 28,
    ]


@pytest.mark.parametrize("params_name", PARAM_SETS)
@pytest.mark.parametrize("url", GRID_URLS)
def test_same_verdict_as_sdk(url: str, params_name: str) -> None:
    ours_params, sdk_params = PARAM_SETS[params_name]
    sdk = RequestValidator(TOKEN)
    accepted = 0
    for signature in _candidate_signatures(sdk, url, sdk_params):
        expected = sdk.validate(url, sdk_params, signature)
        assert is_valid_signature(TOKEN, url, signature, ours_params) is expected, signature
        accepted += expected
    assert accepted >= 1  # the grid exercises acceptance, not just rejection


@pytest.mark.parametrize("params_name", PARAM_SETS)
def test_same_signature_as_sdk(params_name: str) -> None:
    ours_params, sdk_params = PARAM_SETS[params_name]
    for url in GRID_URLS:
        expected = RequestValidator(TOKEN).compute_signature(url, sdk_params)
        assert compute_signature(TOKEN, url, ours_params) == expected


BODIES = [BODY, b"", "Grüße ☎".encode(), b"{}"]


def _body_urls(body: bytes) -> dict[str, bool]:
    """URL: whether its query carries a bodySHA256 value (right or wrong)."""
    digest = hashlib.sha256(body).hexdigest()
    return {
        f"{URL}&bodySHA256={digest}": True,
        f"https://mycompany.com:443/myapp.php?bodySHA256={digest}": True,
        f"wss://example.com/x?bodySHA256={digest}&bodySHA256=0": True,  # the first value counts
        f"wss://example.com/x?bodySHA256=0&bodySHA256={digest}": True,
        f"{URL}&bodySHA256={digest.upper()}": True,
        f"{URL}&bodySHA256={digest[::-1]}": True,
        f"{URL}&body%53HA256={digest}": True,  # the name is percent-decoded
        f"{URL}&bodySHA256=": False,  # parse_qs drops blank values: as good as no hash
        URL: False,
    }


@pytest.mark.parametrize("body", BODIES, ids=repr)
def test_body_variant_same_verdict_as_sdk(body: bytes) -> None:
    sdk = RequestValidator(TOKEN)
    urls = _body_urls(body)
    accepted = 0
    for url, has_hash in urls.items():
        for signature in [sdk.compute_signature(u, {}) for u in urls] + ["", "x"]:
            try:
                expected = sdk.validate(url, body.decode(), signature)
            except TypeError:  # twilio-python #885: a str body on a URL without bodySHA256
                expected = False
            # Without a hash we reject even when the SDK accepts (an empty body skips its check).
            expected = expected and has_hash
            ours = is_valid_body_signature(TOKEN, url, body, signature)
            assert ours is expected, (url, signature)
            accepted += expected
    assert accepted >= 4


def test_body_without_hash_is_rejected_where_the_sdk_accepts() -> None:
    signature = compute_signature(TOKEN, URL)
    assert RequestValidator(TOKEN).validate(URL, "", signature)
    assert not is_valid_body_signature(TOKEN, URL, b"", signature)
    with pytest.raises(TypeError):
        RequestValidator(TOKEN).validate(URL, "{}", signature)
    assert not is_valid_body_signature(TOKEN, URL, b"{}", signature)


@pytest.mark.parametrize(
    "url",
    ["https://example.com:99999/x", "https://example.com:http/x", "https://exa\ud800mple.com/x"],
)
def test_urls_the_sdk_raises_on_are_just_invalid(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is urllib's or a codec's
        RequestValidator(TOKEN).validate(url, {}, SIGNATURE)
    assert not is_valid_signature(TOKEN, url, SIGNATURE)
    assert not is_valid_body_signature(TOKEN, url + "?bodySHA256=" + BODY_HASH, BODY, SIGNATURE)


# ---------------------------------------------------------------- tampering and garbage


def _with(**changes: str | list[str]) -> dict[str, str | list[str]]:
    return {**PARAMS, **changes}


@pytest.mark.parametrize(
    ("url", "params", "token"),
    [
        (URL, _with(Digits="1235"), TOKEN),
        (URL, _with(Extra="1"), TOKEN),
        (URL, {k: v for k, v in PARAMS.items() if k != "Digits"}, TOKEN),
        (URL, _with(Digits=""), TOKEN),
        (URL, _with(Digits=["1234", "5"]), TOKEN),
        (URL.replace("myapp", "yourapp"), PARAMS, TOKEN),
        (URL.replace("foo=1", "foo=2"), PARAMS, TOKEN),
        (URL.replace("mycompany", "evil"), PARAMS, TOKEN),
        (URL.replace("https", "http"), PARAMS, TOKEN),
        (URL + "&x=1", PARAMS, TOKEN),
        (URL, PARAMS, "12346"),
        (URL, PARAMS, ""),
    ],
)
def test_tampering_is_rejected(url: str, params: Any, token: str) -> None:
    assert not is_valid_signature(token, url, SIGNATURE, params)


def test_name_value_boundary_is_not_signed() -> None:
    # Twilio's design, not ours: names and values are concatenated without separators, so moving
    # the boundary between a name and its value keeps the signature. The SDK agrees.
    moved = {"Digits1234": "", **{k: v for k, v in PARAMS.items() if k != "Digits"}}
    assert compute_signature(TOKEN, URL, moved) == SIGNATURE
    assert RequestValidator(TOKEN).validate(URL, moved, SIGNATURE)


@pytest.mark.parametrize(
    "signature",
    ["", " ", "é", "\ud800", "\x00" * 28, "=" * 28, SIGNATURE[:-1], SIGNATURE + "=",
     " " + SIGNATURE, SIGNATURE.lower(), SIGNATURE.replace("/", "_"), "🎧" * 7],
)
def test_garbage_signature_is_false_not_an_error(signature: str) -> None:
    assert not is_valid_signature(TOKEN, URL, signature, PARAMS)
    assert not is_valid_signature(TOKEN, WSS_URL, signature)
    assert not is_valid_body_signature(TOKEN, BODY_URL, BODY, signature)


@pytest.mark.parametrize("url", ["", "not a url", "://", "https://", "https://h:/x", "\ud800"])
def test_garbage_url_is_false_not_an_error(url: str) -> None:
    assert not is_valid_signature(TOKEN, url, SIGNATURE)
    assert not is_valid_body_signature(TOKEN, url, BODY, SIGNATURE)


# ---------------------------------------------------------------- websocket_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://bridge.example.com/media-stream", "wss://bridge.example.com/media-stream"),
        ("http://localhost:8000/media-stream", "ws://localhost:8000/media-stream"),
        ("wss://bridge.example.com/media-stream", "wss://bridge.example.com/media-stream"),
        ("ws://localhost/x?y=https://z", "ws://localhost/x?y=https://z"),
        ("HTTPS://Bridge.Example.com:8443/a?b=c", "wss://Bridge.Example.com:8443/a?b=c"),
    ],
)
def test_websocket_url(url: str, expected: str) -> None:
    assert websocket_url(url) == expected


@pytest.mark.parametrize("url", ["", "bridge.example.com/x", "ftp://x/y", "https:x", "//x/y"])
def test_websocket_url_refuses_other_schemes(url: str) -> None:
    with pytest.raises(ValueError, match=r"expected an http\(s\) or ws\(s\) URL"):
        websocket_url(url)
