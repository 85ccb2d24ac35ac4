"""Session settings of the local realtime server: defaults, strict field checks, merging.

Split from `_model` so the connection logic reads on its own. Bad client input raises
`_PeerError`, which the server turns into an `error` event; the session goes on.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any


class _PeerError(Exception):
    """The client event is invalid: becomes an `error` event, the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


_SERVER_VAD: dict[str, Any] = {
    "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
    "silence_duration_ms": 500, "idle_timeout_ms": None, "create_response": True,
    "interrupt_response": True,
}
_SEMANTIC_VAD: dict[str, Any] = {
    "type": "semantic_vad", "eagerness": "auto", "create_response": True,
    "interrupt_response": True,
}


def _default_session(session_id: str, model: str) -> dict[str, Any]:
    return {
        "type": "realtime", "object": "realtime.session", "id": session_id, "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful voice assistant. (local test server)",
        "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None,
        "truncation": "auto", "prompt": None, "include": None,
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "transcription": None,
                      "noise_reduction": None, "turn_detection": dict(_SERVER_VAD)},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0},
        },
    }


_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "an object", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _invalid_type(name: str, expected: str, value: Any) -> _PeerError:
    return _PeerError("invalid_type", f"Invalid type for '{name}': expected {expected}, "
                      f"but got {_json_type(value)} instead.", name)


def _field(raw: Mapping[str, Any], name: str, kind: type, *, required: bool = True,
           prefix: str = "") -> Any:
    """`raw[name]` if it has JSON type `kind`; the API's errors otherwise (no coercion)."""
    value = raw.get(name)
    if value is None:
        if required:
            raise _PeerError("missing_required_parameter",
                             f"Missing required parameter: '{prefix}{name}'.", prefix + name)
        return None
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise _invalid_type(prefix + name, _json_type(kind()), value)
    return value


def _merge(base: dict[str, Any], update: Mapping[str, Any], path: str) -> None:
    """Apply a partial session in place: objects merge, anything else replaces."""
    for key, value in update.items():
        here = f"{path}.{key}"
        if key == "turn_detection":
            base[key] = _turn_detection(value, here)
        elif here in ("session.tools", "session.tool_choice"):
            base[key] = _check_tools(value, here) if key == "tools" else _check_tool_choice(
                value, here)
        elif isinstance(value, Mapping) and isinstance(base.get(key), dict) and key != "format":
            _merge(base[key], value, here)
        elif key in ("audio", "input", "output") and not isinstance(value, Mapping):
            raise _invalid_type(here, "an object", value)
        else:
            base[key] = copy.deepcopy(value)


def _turn_detection(value: Any, path: str) -> dict[str, Any] | None:
    # the API replaces the whole object; omitted fields take their defaults
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, Mapping) else None
    defaults = {"server_vad": _SERVER_VAD, "semantic_vad": _SEMANTIC_VAD}.get(str(kind))
    if defaults is None or not isinstance(value, Mapping):
        raise _PeerError("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                         "'server_vad' and 'semantic_vad'.", f"{path}.type")
    return defaults | dict(value)


_FUNCTION_TOOL_KEYS = ("type", "name", "description", "parameters")


def _check_tools(value: Any, path: str) -> list[Any]:
    """`tools` as the GA API takes them: flat `{"type": "function", "name", ...}` objects.

    The Chat Completions shape (`{"type": "function", "function": {...}}`) is the
    usual mistake; it fails here as it does on the real API. MCP tools pass unchecked.
    """
    if not isinstance(value, list):
        raise _invalid_type(path, "an array", value)
    for i, tool in enumerate(value):
        here = f"{path}[{i}]"
        if not isinstance(tool, Mapping):
            raise _invalid_type(here, "an object", tool)
        kind = tool.get("type", "function")
        if kind == "mcp":
            continue
        if kind != "function":
            raise _PeerError("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                             "'function' and 'mcp'.", f"{here}.type")
        for key in tool:
            if key not in _FUNCTION_TOOL_KEYS:
                raise _PeerError("unknown_parameter", f"Unknown parameter: '{here}.{key}'.",
                                 f"{here}.{key}")
        _field(tool, "name", str, prefix=f"{here}.")
        _field(tool, "description", str, required=False, prefix=f"{here}.")
        _field(tool, "parameters", dict, required=False, prefix=f"{here}.")
    return copy.deepcopy(value)


def _check_tool_choice(value: Any, path: str) -> Any:
    """`auto`, `none`, `required`, or `{"type": "function", "name": ...}` (MCP unchecked)."""
    if isinstance(value, Mapping):
        if value.get("type") == "function":
            _field(value, "name", str, prefix=f"{path}.")
        elif value.get("type") != "mcp":
            raise _PeerError("invalid_value", f"Invalid value: '{value.get('type')}'. Supported "
                             "values are: 'function' and 'mcp'.", f"{path}.type")
    elif value not in ("auto", "none", "required"):
        raise _PeerError("invalid_value", f"Invalid value: {json.dumps(value)}. Supported values "
                         "are: 'none', 'auto', and 'required'.", path)
    return copy.deepcopy(value)


def _check_metadata(value: Any, path: str = "response.metadata") -> None:
    """`metadata`: at most 16 string values, keys up to 64 characters, values up to 512.

    The limits are the SDK's; the codes and messages follow the API's usual wording
    for them, UNCONFIRMED for the realtime endpoint.
    """
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise _invalid_type(path, "an object", value)
    if len(value) > 16:
        raise _PeerError("object_above_max_properties", f"Invalid '{path}': too many "
                         "properties. Expected an object with at most 16 properties, but got "
                         f"an object with {len(value)} properties instead.", path)
    for key, item in value.items():
        if not isinstance(item, str):
            raise _invalid_type(f"{path}.{key}", "a string", item)
        for text, limit, where in ((key, 64, path), (item, 512, f"{path}.{key}")):
            if len(text) > limit:
                raise _PeerError("string_above_max_length", f"Invalid '{where}': string too "
                                 f"long. Expected a string with maximum length {limit}, but "
                                 f"got a string with length {len(text)} instead.", where)
