"""Build the TwiML document that connects a call to our media-stream WebSocket.

Sans-I/O: a pure function from arguments to the exact string the voice webhook returns, so it is
tested byte-for-byte against the twilio SDK without a server. The constraints it enforces are
Twilio's, and break calls at runtime rather than at deploy time if they slip through:

* ``<Stream url>`` must be an absolute ``wss://`` URL. Any other scheme fails the call with error
  31922, and a relative URL's resolution is undocumented.
* The URL may not carry a query string (Twilio does not support one and may silently strip it), so
  per-call data such as a session token travels as ``<Parameter>`` elements instead. Twilio hands
  them back in the ``start`` message's ``customParameters``; note they arrive inside the socket,
  so the handshake's ``X-Twilio-Signature`` does not cover them.
* ``<Connect><Stream>`` is synchronous: Twilio runs nothing after ``</Connect>`` while the stream is
  up. The ``after`` ``<Say>`` is therefore spoken only once *our server* closes the WebSocket (the
  caller hanging up or a REST redirect ends the document instead); it doubles as the fallback if
  the socket cannot be opened.

Output matches ``str(VoiceResponse())`` from the SDK: no whitespace between elements, attributes
sorted alphabetically, empty elements written ``<Parameter ... />``, and the same escaping as
:mod:`xml.etree.ElementTree`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["connect_stream", "dial", "say_and_hang_up"]

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_TEXT_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_TEXT_ESCAPES = str.maketrans(_TEXT_ENTITIES)
# In attributes tab, CR and LF become character references, else a parser reads them as spaces.
# Text keeps a raw CR, as the SDK does; a parser reads it as LF, which changes nothing spoken.
_ATTR_ESCAPES = str.maketrans(
    _TEXT_ENTITIES | {'"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"}
)
# Characters XML 1.0 cannot represent at all, not even escaped. The SDK would emit them raw and
# produce a document Twilio cannot parse, so they are rejected here instead.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CALLBACK_METHODS = frozenset({"GET", "POST"})


def connect_stream(
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
    """Return a TwiML document: optional greeting, a bidirectional stream to *url*, optional after.

    *parameters* become ``<Parameter>`` elements in iteration order; *voice* applies to both
    ``<Say>`` verbs. Raises :class:`ValueError` for input Twilio would reject or could not parse,
    and :class:`TypeError` for a parameter value that is not a ``str``.
    """
    _check_stream_url(url)
    if status_callback_method is not None and status_callback_method not in _CALLBACK_METHODS:
        raise ValueError(
            f"status_callback_method must be 'GET' or 'POST', not {status_callback_method!r}"
        )
    params = dict(parameters or {})
    for key, value in params.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"<Parameter> names must be non-empty strings, not {key!r}")
        if not isinstance(value, str):
            raise TypeError(f"<Parameter> {key!r} value must be a str, not {value!r}")

    stream_attrs = {
        "url": url,
        "name": name,
        "statusCallback": status_callback,
        "statusCallbackMethod": status_callback_method,
    }
    stream = "".join(_element("Parameter", {"name": k, "value": v}) for k, v in params.items())
    body = _element("Connect", {}, _element("Stream", stream_attrs, stream))
    if greeting is not None:
        body = _element("Say", {"voice": voice}, _text(greeting)) + body
    if after is not None:
        body += _element("Say", {"voice": voice}, _text(after))
    return _DECLARATION + _element("Response", {}, body)


def dial(
    to: str,
    *,
    caller_id: str | None = None,
    timeout: int | None = None,
    action: str | None = None,
) -> str:
    """A TwiML document that hands the call to *to*: a phone number (``<Number>``) or a
    ``sip:`` URI (``<Sip>``). *action*, when given, is where Twilio asks what to do once
    the dialled leg ends (``DialCallStatus``: busy, no-answer, failed, ...)."""
    if not to or _NOT_XML.search(to):
        raise ValueError(f"nothing to dial: {to!r}")
    if timeout is not None and not 5 <= timeout <= 600:
        raise ValueError(f"a <Dial> timeout is 5 to 600 seconds, not {timeout!r}")
    target = _element("Sip" if to.lower().startswith(("sip:", "sips:")) else "Number", {},
                      _text(to))
    attrs = {"action": action, "callerId": caller_id,
             "timeout": None if timeout is None else str(timeout)}
    return _DECLARATION + _element("Response", {}, _element("Dial", attrs, target))


def say_and_hang_up(line: str | None = None, *, voice: str | None = None) -> str:
    """A TwiML document that says *line* (if any), then hangs up."""
    said = "" if line is None else _element("Say", {"voice": voice}, _text(line))
    return _DECLARATION + _element("Response", {}, said + _element("Hangup", {}))


def _check_stream_url(url: str) -> None:
    # The raw prefix, not urlsplit's lower-cased scheme: "WSS://" is legal RFC 3986, but nothing
    # says Twilio accepts it, and a rejected URL only shows up as a failed call.
    if not url.startswith("wss://"):
        raise ValueError(f"stream url must be an absolute wss:// URL (Twilio error 31922): {url!r}")
    if not urlsplit(url).hostname:
        raise ValueError(f"stream url has no host: {url!r}")
    # Checked on the raw string: urlsplit reports "wss://h/p?" as having an empty query.
    if "?" in url or "#" in url:
        raise ValueError(
            f"stream url must not have a query string or fragment; use parameters instead: {url!r}"
        )


def _element(tag: str, attrs: Mapping[str, str | None], content: str = "") -> str:
    """Render one element; *content* is markup, already escaped. Empty content self-closes."""
    rendered = "".join(
        f' {key}="{_checked(value).translate(_ATTR_ESCAPES)}"'
        for key, value in sorted(attrs.items())  # the SDK sorts attributes by name
        if value is not None
    )
    # ElementTree, hence the SDK, self-closes any element without content, even <Say />.
    return f"<{tag}{rendered}>{content}</{tag}>" if content else f"<{tag}{rendered} />"


def _text(value: str) -> str:
    return _checked(value).translate(_TEXT_ESCAPES)


def _checked(value: str) -> str:
    if match := _NOT_XML.search(value):
        raise ValueError(f"{match.group()!r} cannot be represented in XML: {value!r}")
    return value
