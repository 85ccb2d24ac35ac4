"""The OpenAI backend's URL derivation, which must match the openai SDK's."""

from __future__ import annotations

import pytest

from callbridge.backend import realtime_url


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.openai.com/v1", "wss://api.openai.com/v1/realtime?model=gpt-realtime"),
        ("https://api.openai.com/v1/", "wss://api.openai.com/v1/realtime?model=gpt-realtime"),
        ("http://127.0.0.1:8080/v1", "ws://127.0.0.1:8080/v1/realtime?model=gpt-realtime"),
        ("https://gw.example.com/openai/v1?tenant=a",
         "wss://gw.example.com/openai/v1/realtime?tenant=a&model=gpt-realtime"),
    ],
)
def test_realtime_url(base: str, url: str) -> None:
    assert realtime_url(base, "gpt-realtime") == url


def test_model_name_is_quoted() -> None:
    assert realtime_url("https://h/v1", "a b&c").endswith("?model=a+b%26c")


@pytest.mark.parametrize("base", ["ftp://h/v1", "api.openai.com/v1", "https:///v1"])
def test_bad_base_url(base: str) -> None:
    with pytest.raises(ValueError, match="base URL"):
        realtime_url(base, "gpt-realtime")
