"""Service settings from the environment (and a `.env` file), validated once at startup."""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
from collections.abc import Mapping
from operator import attrgetter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from . import twiml
from .agent import DEFAULT_INSTRUCTIONS, Agent, AgentFactory
from .backend import DEFAULT_BASE_URL

__all__ = ["DEFAULT_BUSY_LINE", "DEFAULT_DRAIN_LINE", "ConfigError", "Settings", "load_agent"]

#: what a caller turned away hears (the worker is full, or the service is shutting down)
DEFAULT_BUSY_LINE = "Sorry, all our lines are busy right now. Please call again in a few minutes."
#: what the agent says to a call still live when a shutdown's drain period is over
DEFAULT_DRAIN_LINE = ("I'm sorry, I have to end our call now. Please call back in a minute. "
                      "Goodbye.")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """An environment variable has a value the service cannot run with."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={env[name]!r}: expected one of 1/0, true/false, yes/no, on/off")


def _url(env: Mapping[str, str], name: str, default: str | None, schemes: set[str]) -> str | None:
    value = env.get(name, "").strip() or default
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"{name}={value!r}: expected an absolute {'/'.join(sorted(schemes))} URL "
            "with a host and no query string"
        )
    return value.rstrip("/")


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of field names (letters, digits, `_`)."""
    names = tuple(n.strip() for n in env.get(name, "").split(",") if n.strip())
    bad = [n for n in names if not re.fullmatch(r"\w+", n, re.ASCII)]
    if bad:
        raise ConfigError(f"{name}: {bad[0]!r} is not a field name (expected e.g. "
                          "FromCity,CallerName)")
    return names


def _call_sids(env: Mapping[str, str], name: str) -> frozenset[str]:
    """A comma-separated list of Twilio CallSids (CA and 32 hex digits)."""
    sids = frozenset(n.strip() for n in env.get(name, "").split(",") if n.strip())
    bad = sorted(n for n in sids if not re.fullmatch(r"CA[0-9a-fA-F]{32}", n))
    if bad:
        raise ConfigError(f"{name}: {bad[0]!r} is not a CallSid (CA and 32 hex digits)")
    return sids


def _calls(env: Mapping[str, str], name: str) -> int | None:
    """A whole number of calls, 1 or more; unset or empty: None (no limit)."""
    text = env.get(name, "").strip()
    if not text:
        return None
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise ConfigError(f"{name}={text!r}: expected a whole number of calls, 1 or more "
                          "(unset: no limit)")
    return int(text)


def _amount(env: Mapping[str, str], name: str, default: float, expected: str) -> float:
    """A finite number, 0 or more; unset or empty: `default`."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name}={text!r}: expected {expected}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return _amount(env, name, default, "a number of seconds, 0 or more (e.g. 20)")


def _bind(env: Mapping[str, str], name: str) -> tuple[str, int] | None:
    """`host:port` (`[::1]:9090` for IPv6), or unset."""
    text = env.get(name, "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):([0-9]{1,5})", text)
    if match is None or not 0 < int(match[2]) < 65536:
        raise ConfigError(f"{name}={text!r}: expected host:port, e.g. 127.0.0.1:9090")
    return match[1].strip("[]"), int(match[2])


def _db(env: Mapping[str, str], name: str) -> str | None:
    """A SQLite file, a `postgresql://` URL, or `off` (None)."""
    text = env.get(name, "").strip() or "callbridge.db"
    if text.lower() == "off":
        return None
    if "://" in text and not text.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{name}={text!r}: expected a SQLite file, a postgresql:// URL, "
                          "or off")
    return text


def _days(env: Mapping[str, str], name: str, default: float) -> float | None:
    """A number of days, more than 0; 0: None (forever)."""
    return _amount(env, name, default, "a number of days (0: keep forever)") or None


def _vapi(env: Mapping[str, str]) -> dict[str, Any]:
    """`CALLBRIDGE_BACKEND` and, for `vapi`, VAPI's variables."""
    backend = env.get("CALLBRIDGE_BACKEND", "").strip().lower() or "openai"
    if backend not in ("openai", "vapi"):
        raise ConfigError(f"CALLBRIDGE_BACKEND={backend!r}: expected openai or vapi")
    key = env.get("VAPI_API_KEY", "").strip() or None
    assistant = env.get("VAPI_ASSISTANT_ID", "").strip() or None
    if backend == "vapi" and key is not None and assistant is None:
        raise ConfigError("VAPI_ASSISTANT_ID is not set: CALLBRIDGE_BACKEND=vapi with "
                          "VAPI_API_KEY needs the assistant that answers the calls")
    audio = env.get("VAPI_AUDIO_FORMAT", "").strip().lower() or "pcm_s16le"
    if audio not in ("pcm_s16le", "mulaw"):
        raise ConfigError(f"VAPI_AUDIO_FORMAT={audio!r}: expected pcm_s16le or mulaw")
    base_url = _url(env, "VAPI_BASE_URL", "https://api.vapi.ai", {"http", "https"})
    assert base_url is not None
    return {"backend": backend, "vapi_api_key": key, "vapi_assistant_id": assistant,
            "vapi_base_url": base_url, "vapi_audio_format": audio}


def _line(env: Mapping[str, str], name: str, default: str) -> str:
    """A line for `<Say>` or the agent: empty or unset is `default`."""
    line = env.get(name, "").strip() or default
    try:
        twiml.say_and_hang_up(line)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return line


def _agent_specs(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    specs = tuple(s.strip() for s in env.get(name, "").split(",") if s.strip())
    for spec in specs:
        load_agent(spec, variable=name)  # a bad one stops startup here, naming the variable
    return specs


def load_agent(spec: str, *, variable: str = "CALLBRIDGE_AGENT") -> Agent | AgentFactory:
    """The `Agent`, or the function of a `CallContext` returning one, that `spec`
    (`module:attribute`, as hypercorn names apps) names. The working directory is on
    the import path, as it is for `python -m`. A bad spec, a module that does not
    import, a missing attribute or something that is neither raises `ConfigError`
    naming `variable`."""
    module_name, _, attribute = spec.strip().partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{variable}={spec!r}: expected module:attribute, e.g. myagent:agent")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised on import
        raise ConfigError(
            f"{variable}={spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        agent = attrgetter(attribute)(module)
    except AttributeError:
        raise ConfigError(
            f"{variable}={spec!r}: module {module_name!r} has no attribute {attribute!r}"
        ) from None
    if isinstance(agent, Agent) or (callable(agent) and not isinstance(agent, type)):
        return agent
    raise ConfigError(f"{variable}={spec!r}: {attribute!r} is a {type(agent).__name__}, "
                      "not an Agent or a function of the CallContext returning one")


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the service reads from the environment.

    | variable | meaning |
    |---|---|
    | `OPENAI_API_KEY` | key for the OpenAI Realtime API; unset: offline, the local echo agent |
    | `OPENAI_BASE_URL` | API base, default `https://api.openai.com/v1` |
    | `CALLBRIDGE_PUBLIC_URL` | the service's public `https://host[/prefix]`, as Twilio reaches it |
    | `CALLBRIDGE_TRUST_PROXY` | honour `X-Forwarded-Proto`/`-Host` (only behind your own proxy) |
    | `CALLBRIDGE_AGENT` | `module:attribute`: an `Agent`, or a function choosing one per call |
    | `CALLBRIDGE_MODEL`, `CALLBRIDGE_VOICE` | realtime model and voice |
    | `CALLBRIDGE_INSTRUCTIONS` | the agent's instructions (system prompt) |
    | `CALLBRIDGE_GREETING` | if set, the agent speaks first, following these instructions |
    | `HOST`, `PORT` | where `callbridge serve` listens (default `0.0.0.0:8000`) |
    | `TWILIO_AUTH_TOKEN` | check Twilio's signatures and the stream token; unset: no checks |
    | `CALLBRIDGE_ALLOW_UNSIGNED_STREAMS` | accept stream upgrades without a signature header |
    | `CALLBRIDGE_STREAM_PARAMETERS` | more webhook fields (`FromCity,CallerName`) for the stream |
    | `CALLBRIDGE_AGENTS` | more agents (`module:attribute`, comma-separated) a call may name |
    | `CALLBRIDGE_MAX_CALLS` | calls a worker runs at once; more are turned away (unset: no limit) |
    | `CALLBRIDGE_BUSY_LINE` | what a caller turned away hears (over the limit, or shutting down) |
    | `CALLBRIDGE_DRAIN_S` | on shutdown, how long live calls may go on (default 20) |
    | `CALLBRIDGE_DRAIN_LINE` | what the agent says to the calls still live after that |
    | `CALLBRIDGE_LOG_FORMAT` | `text` (default) or `json`: one JSON object per log line |
    | `CALLBRIDGE_DEBUG_CALLS` | CallSids (comma-separated) whose raw frames are logged |
    | `CALLBRIDGE_METRICS_TOKEN` | `/metrics` answers requests bearing it (unset: 404) |
    | `CALLBRIDGE_METRICS_BIND` | `host:port`: serve `/metrics` there instead, to anyone |
    | `CALLBRIDGE_DB` | call records: SQLite file (`callbridge.db`), `postgresql://` URL, `off` |
    | `CALLBRIDGE_RETENTION_DAYS` | records, recordings older are deleted (default 30; 0: kept) |
    | `CALLBRIDGE_RECORD_DIR` | record each call to a stereo WAV here (unset: no recordings) |
    | `CALLBRIDGE_BACKEND` | `openai` (default) or `vapi`: VAPI's WebSocket transport |
    | `VAPI_API_KEY`, `VAPI_ASSISTANT_ID` | with `vapi`: the key, the assistant (no key: offline) |
    | `VAPI_BASE_URL`, `VAPI_AUDIO_FORMAT` | VAPI's API; `pcm_s16le` (16 kHz, default) or `mulaw` |

    With `CALLBRIDGE_AGENT` set, the model, voice, instructions and greeting variables
    are unused: the agent says them. `from_env()` reads the process environment, after
    loading a `.env` file from the working directory if there is one (python-dotenv;
    variables already set win).
    """

    openai_api_key: str | None = attrs.field(default=None, repr=False)
    openai_base_url: str = DEFAULT_BASE_URL
    public_url: str | None = None
    trust_proxy: bool = False
    model: str = "gpt-realtime"
    voice: str = "marin"
    instructions: str = DEFAULT_INSTRUCTIONS
    greeting: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000
    twilio_auth_token: str | None = attrs.field(default=None, repr=False)
    allow_unsigned_streams: bool = False
    #: `CALLBRIDGE_AGENT`, checked by `from_env` (see `load_agent`)
    agent_spec: str | None = None
    #: Twilio webhook fields passed to the stream as `<Parameter>`s (and so to the
    #: `CallContext.parameters`), besides `From`, `To` and `CallSid`
    stream_parameters: tuple[str, ...] = ()
    #: `CALLBRIDGE_AGENTS`: the agents an outbound call may name (its `agent` parameter)
    agents: tuple[str, ...] = ()
    #: `CALLBRIDGE_MAX_CALLS`: the calls (media streams) one worker runs at once; over
    #: it, the webhook answers `busy_line` and a stream is refused. None: no limit
    max_calls: int | None = None
    #: `CALLBRIDGE_BUSY_LINE`: what a caller turned away hears, then the call hangs up
    busy_line: str = DEFAULT_BUSY_LINE
    #: `CALLBRIDGE_DRAIN_S`: when the service shuts down (SIGTERM), how long the live
    #: calls may go on before the agent ends them (see docs/drain.md)
    drain_s: float = 20.0
    #: `CALLBRIDGE_DRAIN_LINE`: what the agent says, in full, to end those calls
    drain_line: str = DEFAULT_DRAIN_LINE
    #: `CALLBRIDGE_LOG_FORMAT`: `callbridge serve`'s log lines, "text" or "json"
    log_format: str = "text"
    #: `CALLBRIDGE_DEBUG_CALLS`: the calls (CallSids) whose raw frames are logged; a
    #: call whose stream has the `<Parameter>` `callbridge_debug` set to 1 is too
    debug_calls: frozenset[str] = frozenset()
    #: `CALLBRIDGE_METRICS_TOKEN`: `/metrics` answers only `Authorization: Bearer` it
    metrics_token: str | None = attrs.field(default=None, repr=False)
    #: `CALLBRIDGE_METRICS_BIND`: (host, port) where `/metrics` is served on its own
    metrics_bind: tuple[str, int] | None = None
    #: `CALLBRIDGE_DB`: where call records go (a SQLite path or a `postgresql://` URL);
    #: None: nowhere. From the environment the default is `callbridge.db`; `off` is None
    db: str | None = None
    #: `CALLBRIDGE_RETENTION_DAYS`: records and recordings older than this are deleted
    #: (None: kept)
    retention_days: float | None = 30.0
    #: `CALLBRIDGE_RECORD_DIR`: one stereo WAV per call goes here (None: no recordings)
    record_dir: Path | None = None
    #: `CALLBRIDGE_BACKEND`: "openai" (the Realtime API) or "vapi" (VAPI's WebSocket
    #: transport, `callbridge.vapi`)
    backend: str = "openai"
    vapi_api_key: str | None = attrs.field(default=None, repr=False)
    vapi_assistant_id: str | None = None
    vapi_base_url: str = "https://api.vapi.ai"
    #: `VAPI_AUDIO_FORMAT`: "pcm_s16le" (16 kHz) or "mulaw" (8 kHz)
    vapi_audio_format: str = "pcm_s16le"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        if env is None:
            from dotenv import load_dotenv

            load_dotenv(Path.cwd() / ".env", override=False)
            env = os.environ
        key = env.get("OPENAI_API_KEY", "").strip() or None
        port_text = env.get("PORT", "8000").strip()
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"PORT={port_text!r}: expected a port number 1-65535")
        strings = {}
        for name, default in [("CALLBRIDGE_MODEL", "gpt-realtime"), ("CALLBRIDGE_VOICE", "marin")]:
            value = env.get(name, default).strip()
            if not value:
                raise ConfigError(f"{name} is set but empty")
            strings[name] = value
        base_url = _url(env, "OPENAI_BASE_URL", DEFAULT_BASE_URL, {"http", "https", "ws", "wss"})
        assert base_url is not None
        agent_spec = env.get("CALLBRIDGE_AGENT", "").strip() or None
        if agent_spec is not None:
            load_agent(agent_spec)  # a bad one stops startup here, naming the variable
        from .twilio_rest import TwilioCredentials  # (it reads settings with this module)

        TwilioCredentials.from_env(env)  # credentials set half-way stop startup here too
        _url(env, "CALLBRIDGE_TWILIO_API_URL", None, {"http", "https"})
        log_format = env.get("CALLBRIDGE_LOG_FORMAT", "text").strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise ConfigError(f"CALLBRIDGE_LOG_FORMAT={log_format!r}: expected text or json")
        return cls(
            openai_api_key=key,
            openai_base_url=base_url,
            public_url=_url(env, "CALLBRIDGE_PUBLIC_URL", None, {"http", "https"}),
            trust_proxy=_flag(env, "CALLBRIDGE_TRUST_PROXY"),
            model=strings["CALLBRIDGE_MODEL"],
            voice=strings["CALLBRIDGE_VOICE"],
            instructions=env.get("CALLBRIDGE_INSTRUCTIONS", "").strip() or DEFAULT_INSTRUCTIONS,
            greeting=env.get("CALLBRIDGE_GREETING", "").strip() or None,
            host=env.get("HOST", "0.0.0.0").strip() or "0.0.0.0",
            port=int(port_text),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", "").strip() or None,
            allow_unsigned_streams=_flag(env, "CALLBRIDGE_ALLOW_UNSIGNED_STREAMS"),
            agent_spec=agent_spec,
            stream_parameters=_names(env, "CALLBRIDGE_STREAM_PARAMETERS"),
            agents=_agent_specs(env, "CALLBRIDGE_AGENTS"),
            max_calls=_calls(env, "CALLBRIDGE_MAX_CALLS"),
            busy_line=_line(env, "CALLBRIDGE_BUSY_LINE", DEFAULT_BUSY_LINE),
            drain_s=_seconds(env, "CALLBRIDGE_DRAIN_S", 20.0),
            drain_line=_line(env, "CALLBRIDGE_DRAIN_LINE", DEFAULT_DRAIN_LINE),
            log_format=log_format,
            debug_calls=_call_sids(env, "CALLBRIDGE_DEBUG_CALLS"),
            metrics_token=env.get("CALLBRIDGE_METRICS_TOKEN", "").strip() or None,
            metrics_bind=_bind(env, "CALLBRIDGE_METRICS_BIND"),
            db=_db(env, "CALLBRIDGE_DB"),
            retention_days=_days(env, "CALLBRIDGE_RETENTION_DAYS", 30.0),
            record_dir=Path(env["CALLBRIDGE_RECORD_DIR"].strip())
            if env.get("CALLBRIDGE_RECORD_DIR", "").strip() else None,
            **_vapi(env),
        )

    @property
    def offline(self) -> bool:
        """No API key for the backend: calls are answered by the local echo agent (in
        PCM mode behind a local VAPI, for `vapi`), not OpenAI or VAPI."""
        if self.backend == "vapi":
            return self.vapi_api_key is None
        return self.openai_api_key is None

    def agent(self) -> Agent | AgentFactory:
        """`CALLBRIDGE_AGENT`'s agent, or one made of the other variables."""
        if self.agent_spec is not None:
            return load_agent(self.agent_spec)
        return Agent(
            instructions=self.instructions, voice=self.voice, model=self.model,
            greeting=self.greeting,
        )
