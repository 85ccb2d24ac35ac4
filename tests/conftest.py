"""Fixtures shared by the service tests."""

from __future__ import annotations

import os

import pytest

# Servers the tests start read their settings from the environment, where call records
# go to ./callbridge.db by default: not from the tests (those about records set it).
os.environ.setdefault("CALLBRIDGE_DB", "off")


@pytest.fixture(params=[False, True], ids=["asgi", "frontdoor"])
def front_door(request: pytest.FixtureRequest) -> bool:
    """Both ways the service serves Twilio's media stream: through hypercorn's ASGI
    path (`hypercorn --worker-class trio callbridge.app:app`), and on callbridge's
    own front door (`callbridge serve`): `create_app(front_door=...)`."""
    return bool(request.param)
