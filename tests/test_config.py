"""Settings from the environment: valid values load, invalid ones fail with the name."""

from __future__ import annotations

import pytest

from callbridge.config import ConfigError, Settings

KEY = {"OPENAI_API_KEY": "sk-test"}


def test_defaults() -> None:
    s = Settings.from_env(KEY)
    assert (s.model, s.voice, s.port, s.public_url, s.trust_proxy) == (
        "gpt-realtime", "marin", 8000, None, False)
    assert "sk-test" not in repr(s)
    agent = s.agent()
    assert agent.session_update().session.model == "gpt-realtime"


def test_no_key_means_offline() -> None:
    assert Settings.from_env({}).offline
    assert not Settings.from_env(KEY).offline


def test_everything_set() -> None:
    s = Settings.from_env(KEY | {
        "OPENAI_BASE_URL": "https://gw.example.com/v1/", "PORT": "9000",
        "CALLBRIDGE_PUBLIC_URL": "https://voice.example.com/", "CALLBRIDGE_TRUST_PROXY": "yes",
        "CALLBRIDGE_MODEL": "gpt-realtime-mini", "CALLBRIDGE_VOICE": "cedar",
        "CALLBRIDGE_INSTRUCTIONS": "Be brief.", "CALLBRIDGE_GREETING": "Say hi."})
    assert (s.openai_base_url, s.port, s.public_url, s.trust_proxy) == (
        "https://gw.example.com/v1", 9000, "https://voice.example.com", True)
    assert s.agent().greeting == "Say hi." and s.agent().instructions == "Be brief."


@pytest.mark.parametrize(
    ("env", "names"),
    [
        (KEY | {"PORT": "eighty"}, "PORT"),
        (KEY | {"PORT": "70000"}, "PORT"),
        (KEY | {"CALLBRIDGE_PUBLIC_URL": "bridge.example.com"}, "CALLBRIDGE_PUBLIC_URL"),
        (KEY | {"CALLBRIDGE_PUBLIC_URL": "https://b.example.com/?x=1"}, "CALLBRIDGE_PUBLIC_URL"),
        (KEY | {"OPENAI_BASE_URL": "ftp://x"}, "OPENAI_BASE_URL"),
        (KEY | {"CALLBRIDGE_TRUST_PROXY": "maybe"}, "CALLBRIDGE_TRUST_PROXY"),
        (KEY | {"CALLBRIDGE_VOICE": "  "}, "CALLBRIDGE_VOICE"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)
