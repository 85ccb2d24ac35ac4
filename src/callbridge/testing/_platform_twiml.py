"""TwiML as `LocalTwilio` runs it: a document parsed into the verbs it models.

Pure code (a string in, verb records out), so what the fake platform accepts is
tested without a call. It is strict where Twilio's own failures are: a document
that does not parse is error 12100, a root that is not `<Response>` or a tag that
is no TwiML verb is 12200 (schema validation), and the call carrying it ends; a
real verb the fake does not play (`<Gather>`, `<Record>`, ...) comes out as
`Unmodelled`, so the platform can note it and move on.

Modelled: `<Connect><Stream>` with its `<Parameter>`s, `<Dial>` (a number as text,
`<Number>`, `<Sip>`, `<Client>`, `<Conference>`, `<Queue>`), `<Say>`, `<Play>`,
`<Pause>`, `<Hangup>`, `<Reject>`, `<Redirect>`. Attribute defaults are Twilio's
documented ones (`<Dial timeout>` 30 s, methods POST, `<Pause length>` 1 s).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TypeAlias

import attrs

__all__ = ["Connect", "Dial", "Hangup", "Pause", "Play", "Redirect", "Say", "TwimlError",
           "Unmodelled", "Verb", "parse_twiml"]

# Every verb Twilio's voice TwiML knows; any other tag under <Response> is 12200.
_VERBS = frozenset({"Connect", "Dial", "Echo", "Enqueue", "Gather", "Hangup", "Leave", "Pause",
                    "Pay", "Play", "Record", "Redirect", "Refer", "Reject", "Say", "Sms",
                    "Start", "Stop", "Message", "Prompt"})
_DIAL_NOUNS = {"Number": "number", "Sip": "sip", "Client": "client",
               "Conference": "conference", "Queue": "queue", "Application": "application"}
_METHODS = frozenset({"GET", "POST"})


class TwimlError(ValueError):
    """A document Twilio would not run; `code` is the error Twilio's debugger shows."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@attrs.frozen(kw_only=True)
class Connect:
    """`<Connect><Stream url>`: a bidirectional Media Stream, blocking the document
    until the stream ends (the server closes it, or the call ends)."""

    url: str
    name: str | None = None
    track: str | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"
    #: the `<Parameter name value>`s, in document order: `start.customParameters`
    parameters: dict[str, str] = attrs.field(factory=dict)
    #: `<Connect action>`, requested (POST) once the stream has ended, its TwiML
    #: then run instead of the verbs after `</Connect>` [UNCONFIRMED for `<Stream>`]
    action: str | None = None
    action_method: str = "POST"


@attrs.frozen(kw_only=True)
class Dial:
    """`<Dial>`: a second leg; the call leaves whatever ran before it."""

    #: "number", "sip", "client", "conference", "queue" or "application"
    kind: str
    #: who is dialled (several `<Number>`s ring at once)
    targets: tuple[str, ...]
    action: str | None = None
    method: str = "POST"
    caller_id: str | None = None
    #: seconds the dialled party may ring (Twilio: 5-600, default 30)
    timeout: int = 30


@attrs.frozen
class Say:
    text: str


@attrs.frozen
class Play:
    url: str
    digits: str | None = None


@attrs.frozen
class Pause:
    length: float = 1.0


@attrs.frozen
class Hangup:
    """`<Hangup>`, also `<Reject>` (which on an answered call just ends it)."""


@attrs.frozen(kw_only=True)
class Redirect:
    url: str
    method: str = "POST"


@attrs.frozen
class Unmodelled:
    """A real TwiML verb that `LocalTwilio` does not play (noted, then skipped)."""

    tag: str


Verb: TypeAlias = Connect | Dial | Say | Play | Pause | Hangup | Redirect | Unmodelled


def parse_twiml(document: str) -> list[Verb]:
    """The verbs of a voice TwiML document, in order; raises `TwimlError`."""
    try:
        root = ET.fromstring(document.strip())
    except ET.ParseError as exc:
        raise TwimlError(12100, f"Document parse failure: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(12200, f"the root element is <{root.tag}>, not <Response>")
    return [_verb(element) for element in root]


def _verb(element: ET.Element) -> Verb:
    tag = element.tag
    if tag not in _VERBS:
        raise TwimlError(12200, f"<{tag}> is not a TwiML verb")
    if tag == "Connect":
        return _connect(element)
    if tag == "Dial":
        return _dial(element)
    if tag == "Say":
        return Say(element.text or "")
    if tag == "Play":
        return Play((element.text or "").strip(), element.get("digits"))
    if tag == "Pause":
        return Pause(_number(element, "length", 1.0, low=0.0))
    if tag in ("Hangup", "Reject"):
        return Hangup()
    if tag == "Redirect":
        url = (element.text or "").strip()
        if not url:
            raise TwimlError(12200, "<Redirect> without a URL")
        return Redirect(url=url, method=_method(element, "method"))
    return Unmodelled(tag)


def _connect(element: ET.Element) -> Verb:
    nouns = list(element)
    if len(nouns) != 1:
        raise TwimlError(12200, f"<Connect> needs exactly one noun, not {len(nouns)}")
    stream = nouns[0]
    if stream.tag != "Stream":
        return Unmodelled(f"Connect/{stream.tag}")
    url = stream.get("url")
    if not url:
        raise TwimlError(12200, "<Stream> without a url")
    parameters = {}
    for parameter in stream:
        if parameter.tag != "Parameter":
            raise TwimlError(12200, f"<{parameter.tag}> inside <Stream>")
        name = parameter.get("name")
        if not name:
            raise TwimlError(12200, "<Parameter> without a name")
        parameters[name] = parameter.get("value", "")
    return Connect(url=url, name=stream.get("name"), track=stream.get("track"),
                   status_callback=stream.get("statusCallback"),
                   status_callback_method=_method(stream, "statusCallbackMethod"),
                   parameters=parameters, action=element.get("action"),
                   action_method=_method(element, "method"))


def _dial(element: ET.Element) -> Dial:
    nouns = list(element)
    text = (element.text or "").strip()
    if nouns:
        kinds = {noun.tag for noun in nouns}
        unknown = kinds - set(_DIAL_NOUNS)
        if unknown or len(kinds) > 1:
            raise TwimlError(12200, f"<Dial> with {sorted(kinds)} (one kind of noun, "
                             f"of {sorted(_DIAL_NOUNS)})")
        kind = _DIAL_NOUNS[nouns[0].tag]
        targets = tuple((noun.text or "").strip() for noun in nouns)
        if not all(targets):
            raise TwimlError(12200, f"an empty <{nouns[0].tag}> in <Dial>")
    elif text:
        kind, targets = "number", (text,)
    else:
        raise TwimlError(12200, "<Dial> with nothing to dial")  # [UNCONFIRMED] code
    return Dial(kind=kind, targets=targets, action=element.get("action"),
                method=_method(element, "method"), caller_id=element.get("callerId"),
                timeout=int(_number(element, "timeout", 30, low=5, high=600)))


def _method(element: ET.Element, name: str) -> str:
    method = element.get(name, "POST").upper()
    if method not in _METHODS:
        raise TwimlError(12200, f"<{element.tag} {name}={method!r}>: GET or POST")
    return method


def _number(element: ET.Element, name: str, default: float, *, low: float,
            high: float | None = None) -> float:
    text = element.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise TwimlError(12200, f"<{element.tag} {name}={text!r}>: not a number") from None
    if value < low or (high is not None and value > high):
        raise TwimlError(12200, f"<{element.tag} {name}={text!r}>: out of range")
    return value
