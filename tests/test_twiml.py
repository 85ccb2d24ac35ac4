"""TwiML builder: byte-for-byte parity with the twilio SDK, and rejection of what Twilio refuses."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import pytest
from twilio.twiml.voice_response import Connect, VoiceResponse  # type: ignore[import-untyped]

from callbridge.twiml import connect_stream, dial, say_and_hang_up

URL = "wss://bridge.example.com/media-stream"
NASTY = """a & b < c > d "double" 'single'\ttab\nnewline\rcr"""


def sdk_connect_stream(
    url: str,
    *,
    parameters: Mapping[str, str] | None = None,
    greeting: str | None = None,
    name: str | None = None,
    status_callback: str | None = None,
    status_callback_method: str | None = None,
    after: str | None = None,
    voice: str | None = None,
) -> str:
    """The same document built with the real SDK: the oracle."""
    response = VoiceResponse()
    if greeting is not None:
        response.say(greeting, voice=voice)
    connect = Connect()
    stream = connect.stream(
        url=url,
        name=name,
        status_callback=status_callback,
        status_callback_method=status_callback_method,
    )
    for key, value in (parameters or {}).items():
        stream.parameter(name=key, value=value)
    response.append(connect)
    if after is not None:
        response.say(after, voice=voice)
    return str(response)


CASES: dict[str, dict[str, Any]] = {
    "bare": {},
    "one-param": {"parameters": {"session_token": "opaque-one-time-token"}},
    "params-in-order": {"parameters": {"zeta": "1", "alpha": "2", "mid": "3"}},
    "params-escaped": {
        "parameters": {"tenant": "acme", "nasty": NASTY, "a&b<c>\"'": "", "utf": "Grüße ☎ 🎧"}
    },
    "greeting-and-after": {"greeting": "Connecting you now.", "after": "Goodbye."},
    "greeting-only": {"greeting": "Hello"},
    "after-only": {"after": "The assistant has hung up."},
    "say-voice": {"greeting": "Hi", "after": "Bye", "voice": "Polly.Joanna-Neural"},
    "say-escaped": {"greeting": NASTY, "after": "<Hangup/> & </Response>", "voice": 'a"b'},
    "empty-say": {"greeting": ""},
    "name-and-callback": {
        "name": "callbridge",
        "status_callback": "https://bridge.example.com/twilio/stream-status?x=1&y=2",
        "status_callback_method": "POST",
    },
    "callback-get": {"status_callback": "/relative/status", "status_callback_method": "GET"},
    "everything": {
        "parameters": {"session_token": "t0k&n", "tenant": "acme"},
        "greeting": "Hi",
        "name": 'stream "1"',
        "status_callback": "https://example.com/s",
        "status_callback_method": "POST",
        "after": "Bye",
        "voice": "alice",
    },
    "url-with-port-and-path": {"url": "wss://127.0.0.1:8443/a/b%20c"},
}


@pytest.mark.parametrize("kwargs", CASES.values(), ids=CASES.keys())
def test_matches_sdk_byte_for_byte(kwargs: dict[str, Any]) -> None:
    kwargs = {"url": URL, **kwargs}
    assert connect_stream(**kwargs) == sdk_connect_stream(**kwargs)


@pytest.mark.parametrize("kwargs", CASES.values(), ids=CASES.keys())
def test_parses_and_round_trips(kwargs: dict[str, Any]) -> None:
    kwargs = {"url": URL, **kwargs}
    root = ET.fromstring(connect_stream(**kwargs).encode("utf-8"))
    assert root.tag == "Response"
    children = [child.tag for child in root]
    expected = ["Say"] * ("greeting" in kwargs) + ["Connect"] + ["Say"] * ("after" in kwargs)
    assert children == expected
    says = root.findall("Say")
    # Like the SDK, <Say> text keeps a raw CR, which XML parsers read back as LF.
    spoken = [kwargs[k].replace("\r", "\n") for k in ("greeting", "after") if k in kwargs]
    assert [say.text or "" for say in says] == spoken
    assert all(say.get("voice") == kwargs.get("voice") for say in says)
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == kwargs["url"]
    assert stream.get("name") == kwargs.get("name")
    assert stream.get("statusCallback") == kwargs.get("status_callback")
    assert stream.get("statusCallbackMethod") == kwargs.get("status_callback_method")
    # Values, including tab/CR/LF, survive the parser's attribute normalisation.
    parsed = [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")]
    assert parsed == list(kwargs.get("parameters", {}).items())


def test_documented_shape() -> None:
    assert connect_stream(
        URL,
        parameters={"session_token": "tok", "tenant": "acme"},
        name="callbridge",
        status_callback="https://bridge.example.com/status",
        status_callback_method="POST",
        after="Goodbye.",
    ) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream name="callbridge" statusCallback="https://bridge.example.com/status"'
        ' statusCallbackMethod="POST" url="wss://bridge.example.com/media-stream">'
        '<Parameter name="session_token" value="tok" /><Parameter name="tenant" value="acme" />'
        "</Stream></Connect><Say>Goodbye.</Say></Response>"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ws://bridge.example.com/media", "wss://"),
        ("https://bridge.example.com/media", "wss://"),
        ("WSS://bridge.example.com/media", "wss://"),
        ("/media-stream", "wss://"),
        ("bridge.example.com/media", "wss://"),
        ("", "wss://"),
        ("wss:///media", "no host"),
        ("wss://", "no host"),
        ("wss://bridge.example.com/media?token=abc", "query string"),
        ("wss://bridge.example.com/media?", "query string"),
        ("wss://bridge.example.com/media#frag", "fragment"),
    ],
)
def test_rejects_bad_url(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        connect_stream(url)


@pytest.mark.parametrize("bad_name", ["", 3, None])
def test_rejects_bad_parameter_name(bad_name: Any) -> None:
    with pytest.raises(ValueError, match="non-empty strings"):
        connect_stream(URL, parameters={"ok": "1", bad_name: "x"})


@pytest.mark.parametrize("bad_value", [None, 1, b"bytes"])
def test_rejects_non_string_parameter_value(bad_value: Any) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        connect_stream(URL, parameters={"key": bad_value})


@pytest.mark.parametrize("method", ["get", "post", "PUT", ""])
def test_rejects_bad_status_callback_method(method: str) -> None:
    with pytest.raises(ValueError, match="status_callback_method"):
        connect_stream(URL, status_callback_method=method)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"parameters": {"k": "nul\x00"}},
        {"parameters": {"bell\x07": "v"}},
        {"greeting": "esc\x1b"},
        {"after": "\ufffe"},
        {"name": "\x0b"},
        {"voice": "\x01"},
    ],
)
def test_rejects_characters_xml_cannot_carry(kwargs: dict[str, Any]) -> None:
    if "voice" in kwargs:
        kwargs["greeting"] = "hi"
    with pytest.raises(ValueError, match="cannot be represented in XML"):
        connect_stream(URL, **kwargs)


# --- call control: <Dial> and <Say><Hangup> ------------------------------------------


@pytest.mark.parametrize(("to", "options"), [
    ("+14155550100", {}),
    ("+14155550100", {"caller_id": "+14155550199", "timeout": 20,
                      "action": "https://bridge.example.com/dial-action?line=Sorry%21&x=1"}),
    ("sip:desk@pbx.example.com;transport=tls", {"timeout": 30}),
    ("Ops & <Sales>", {}),
])
def test_dial_matches_sdk_byte_for_byte(to: str, options: dict[str, Any]) -> None:
    expected = VoiceResponse()
    sdk_options = {"caller_id": options.get("caller_id"), "timeout": options.get("timeout"),
                   "action": options.get("action")}
    sdk_dial = expected.dial(**{k: v for k, v in sdk_options.items() if v is not None})
    if to.startswith("sip:"):
        sdk_dial.sip(to)
    else:
        sdk_dial.number(to)
    assert dial(to, **options) == str(expected)


def test_dial_rejects_what_twilio_would() -> None:
    with pytest.raises(ValueError, match="nothing to dial"):
        dial("")
    with pytest.raises(ValueError, match="5 to 600"):
        dial("+14155550100", timeout=2)


@pytest.mark.parametrize("line", [None, "Sorry, nobody is free. Goodbye & thanks!"])
def test_say_and_hang_up_matches_sdk(line: str | None) -> None:
    expected = VoiceResponse()
    if line is not None:
        expected.say(line, voice="Polly.Joanna")
    expected.hangup()
    assert say_and_hang_up(line, voice="Polly.Joanna") == str(expected)
