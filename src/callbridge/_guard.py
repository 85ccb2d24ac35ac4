"""Only Twilio gets in: signed webhooks, signed stream upgrades, and a stream token.

An open media-stream endpoint is a toll-fraud hole: whoever can reach it opens a
model session on the operator's key. With the Twilio auth token the service checks
three things, each before anything is paid for:

1. The voice webhook carries a valid `X-Twilio-Signature` (else HTTP 403).
2. The WebSocket upgrade carries a valid signature over the stream's `wss://` URL
   (else 403 before the upgrade). Whether Twilio always signs upgrades is not
   settled, so `allow_unsigned_streams` can let an upgrade *without* the header
   through; a wrong signature is refused either way.
3. `start.customParameters` carries the token the signed webhook put in the TwiML:
   bound to the call SID, short-lived, single use per worker. Checked before the
   model connection opens (`run_call`'s `authorize`).

The arithmetic is in the sans-I/O modules `signature` and `streamtoken`; this is
the policy and the clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from . import signature, streamtoken
from . import twilio as tw
from ._call import CallRefused

__all__ = ["TwilioGuard"]

log = logging.getLogger("callbridge.guard")


class TwilioGuard:
    """The checks above for one worker (the replay memory is per process)."""

    def __init__(
        self,
        auth_token: str,
        *,
        allow_unsigned_streams: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auth_token = auth_token
        self._key = streamtoken.derive_key(auth_token)
        self._replays = streamtoken.ReplayGuard()
        self._clock = clock
        self.allow_unsigned_streams = allow_unsigned_streams

    def __repr__(self) -> str:  # never the token
        return f"TwilioGuard(allow_unsigned_streams={self.allow_unsigned_streams})"

    def webhook_ok(
        self,
        url: str,
        header: str | None,
        *,
        form: Mapping[str, Sequence[str]] | None = None,
        body: bytes | None = None,
    ) -> bool:
        """A form (or GET) webhook, or with `body` a JSON one (`bodySHA256` in the URL)."""
        if not header:
            return False
        if body is not None:
            return signature.is_valid_body_signature(self._auth_token, url, body, header)
        return signature.is_valid_signature(self._auth_token, url, header, form)

    def upgrade_ok(self, url: str, header: str | None) -> bool:
        """A media-stream WebSocket upgrade to `url` (its `wss://` form is checked)."""
        if header is None:
            return self.allow_unsigned_streams
        return signature.is_valid_signature(self._auth_token, signature.websocket_url(url),
                                            header)

    def stream_token(self, call_sid: str) -> str:
        """The token for the TwiML `<Parameter name="callbridge_token">` of this call."""
        return streamtoken.issue(self._key, call_sid, now=self._clock())

    def authorize(self, start: tw.Start) -> None:
        """`run_call`'s `authorize`: the stream must carry this call's fresh token."""
        now = self._clock()
        try:
            claims = streamtoken.verify(
                self._key, start.custom_parameters.get(streamtoken.PARAMETER), start.call_sid,
                now=now)
            self._replays.check(claims, now=now)
        except streamtoken.InvalidStreamToken as exc:
            raise CallRefused(str(exc)) from None
