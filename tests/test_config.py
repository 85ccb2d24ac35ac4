"""Settings from the environment: valid values load, invalid ones fail with the name."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from callbridge import Agent
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


def test_twilio_auth_token_and_unsigned_streams() -> None:
    s = Settings.from_env(KEY | {"TWILIO_AUTH_TOKEN": " tok-secret-123 ",
                                 "CALLBRIDGE_ALLOW_UNSIGNED_STREAMS": "1"})
    assert (s.twilio_auth_token, s.allow_unsigned_streams) == ("tok-secret-123", True)
    assert "tok-secret" not in repr(s)
    d = Settings.from_env(KEY)
    assert (d.twilio_auth_token, d.allow_unsigned_streams) == (None, False)
    with pytest.raises(ConfigError, match="CALLBRIDGE_ALLOW_UNSIGNED_STREAMS"):
        Settings.from_env(KEY | {"CALLBRIDGE_ALLOW_UNSIGNED_STREAMS": "maybe"})


async def test_the_service_warns_loudly_without_a_token(
        caplog: pytest.LogCaptureFixture) -> None:
    from callbridge.app import UNGUARDED_NOTICE, create_app

    for settings, warned in [(Settings(openai_api_key="sk-x"), True),
                             (Settings(openai_api_key="sk-x", twilio_auth_token="t" * 32), False)]:
        caplog.clear()
        app = create_app(settings)
        async with app.test_app():
            pass
        assert (UNGUARDED_NOTICE in caplog.text) is warned
        assert (app.guard is None) is warned


# --- CALLBRIDGE_AGENT and .env ------------------------------------------------------------

AGENT_MODULE = '''
import callbridge

agent = callbridge.Agent(instructions="You work for Pizza Co.", voice="cedar")

def per_number(call):
    return agent if call.to_number == "+1555" else callbridge.Agent(instructions="Other.")

not_an_agent = 42
'''


@pytest.fixture
def in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with the user's agent module, imported fresh each test."""
    name = f"myagent_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(AGENT_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop(name, None)


def module_name(project: Path) -> str:
    [path] = project.glob("myagent_*.py")
    return path.stem


def test_callbridge_agent_names_an_agent_or_a_function(in_project: Path) -> None:
    name = module_name(in_project)
    settings = Settings.from_env(KEY | {"CALLBRIDGE_AGENT": f"{name}:agent"})
    agent = settings.agent()
    assert isinstance(agent, Agent) and agent.voice == "cedar"
    chooser = Settings.from_env(KEY | {"CALLBRIDGE_AGENT": f"{name}:per_number"}).agent()
    assert callable(chooser) and not isinstance(chooser, Agent)


@pytest.mark.parametrize(("attribute", "message"), [
    ("", "expected module:attribute"),
    (":agent", "expected module:attribute"),
    ("nosuchmodule_xyz:agent", "cannot import 'nosuchmodule_xyz': ModuleNotFoundError"),
    ("{m}:missing", "has no attribute 'missing'"),
    ("{m}:not_an_agent", "'not_an_agent' is a int, not an Agent"),
    ("{m}:callbridge.Agent", "is a type, not an Agent"),
])
def test_a_bad_callbridge_agent_stops_startup_naming_the_variable(
    in_project: Path, attribute: str, message: str,
) -> None:
    spec = attribute.format(m=module_name(in_project)) or "justamodule"
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        Settings.from_env(KEY | {"CALLBRIDGE_AGENT": spec})
    assert str(caught.value).startswith(f"CALLBRIDGE_AGENT={spec!r}")


def test_settings_come_from_a_dotenv_file_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / ".env").write_text("CALLBRIDGE_VOICE=cedar\nCALLBRIDGE_MODEL=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLBRIDGE_MODEL", "from-environment")  # set variables win
    monkeypatch.setenv("CALLBRIDGE_VOICE", "")  # so monkeypatch restores it, unset...
    monkeypatch.delenv("CALLBRIDGE_VOICE")  # ...after the .env file set it
    settings = Settings.from_env()
    assert (settings.voice, settings.model) == ("cedar", "from-environment")


def test_the_operating_settings() -> None:
    """Issue 15's variables: what keeps records, metrics and recordings, validated."""
    default = Settings.from_env({})
    assert default.db == "callbridge.db" and default.retention_days == 30
    assert default.metrics_token is None and default.metrics_bind is None
    assert default.record_dir is None and default.debug_calls == frozenset()
    assert Settings().db is None  # built in code: no records unless given a store
    sid = "CA" + "0123456789abcdef" * 2
    settings = Settings.from_env({
        "CALLBRIDGE_DB": "postgresql://cb@db.internal/calls",
        "CALLBRIDGE_RETENTION_DAYS": "0", "CALLBRIDGE_METRICS_TOKEN": " s3cret ",
        "CALLBRIDGE_METRICS_BIND": "[::1]:9464", "CALLBRIDGE_RECORD_DIR": "/var/calls",
        "CALLBRIDGE_DEBUG_CALLS": f"{sid}, ",
    })
    assert settings.db == "postgresql://cb@db.internal/calls"
    assert settings.retention_days is None  # 0: kept for good
    assert settings.metrics_token == "s3cret" and "s3cret" not in repr(settings)
    assert settings.metrics_bind == ("::1", 9464)
    assert settings.record_dir == Path("/var/calls") and settings.debug_calls == {sid}
    assert Settings.from_env({"CALLBRIDGE_DB": "OFF"}).db is None
    for name, value in [("CALLBRIDGE_DB", "mysql://x/y"), ("CALLBRIDGE_RETENTION_DAYS", "-1"),
                        ("CALLBRIDGE_RETENTION_DAYS", "a week"),
                        ("CALLBRIDGE_METRICS_BIND", "9464"),
                        ("CALLBRIDGE_METRICS_BIND", "localhost:99999"),
                        ("CALLBRIDGE_DEBUG_CALLS", "MZ" + "0" * 32)]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


def test_the_backend_settings() -> None:
    """`CALLBRIDGE_BACKEND=vapi`: VAPI's key and assistant, or offline without a key."""
    assert Settings.from_env({}).backend == "openai"
    offline = Settings.from_env({"CALLBRIDGE_BACKEND": "VAPI"})
    assert offline.backend == "vapi" and offline.offline
    assert offline.vapi_audio_format == "pcm_s16le"
    # OpenAI's key is not VAPI's: still offline
    assert Settings.from_env({"CALLBRIDGE_BACKEND": "vapi", "OPENAI_API_KEY": "sk-x"}).offline
    live = Settings.from_env({"CALLBRIDGE_BACKEND": "vapi", "VAPI_API_KEY": "vk-secret",
                              "VAPI_ASSISTANT_ID": "asst_1", "VAPI_AUDIO_FORMAT": "mulaw",
                              "VAPI_BASE_URL": "https://vapi.example/"})
    assert not live.offline and live.vapi_assistant_id == "asst_1"
    assert live.vapi_audio_format == "mulaw" and live.vapi_base_url == "https://vapi.example"
    assert "vk-secret" not in repr(live)
    for env, name in [({"CALLBRIDGE_BACKEND": "gemini"}, "CALLBRIDGE_BACKEND"),
                      ({"CALLBRIDGE_BACKEND": "vapi", "VAPI_API_KEY": "k"}, "VAPI_ASSISTANT_ID"),
                      ({"VAPI_AUDIO_FORMAT": "opus"}, "VAPI_AUDIO_FORMAT"),
                      ({"VAPI_BASE_URL": "ftp://x"}, "VAPI_BASE_URL")]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(env)
