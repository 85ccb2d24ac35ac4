"""Validation of what we send to OpenAI against the openai package's GA models."""

from __future__ import annotations

import json
from typing import Any

import pydantic
from openai.types.realtime import RealtimeClientEvent


def assert_no_extra(value: Any, where: str = "$") -> None:
    """The SDK models allow extra keys; a key the API does not know must fail here."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"unknown keys at {where}: {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            assert_no_extra(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            assert_no_extra(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_no_extra(item, f"{where}.{key}")


_CLIENT_EVENT = pydantic.TypeAdapter(RealtimeClientEvent)


def validate_client_event(wire: dict[str, Any] | str) -> Any:
    """Validate one client event strictly; returns the SDK model."""
    if isinstance(wire, str):
        wire = json.loads(wire)
    validated = _CLIENT_EVENT.validate_python(wire, strict=True)
    assert_no_extra(validated)
    assert validated.model_dump(mode="json", by_alias=True, exclude_unset=True) == wire
    return validated
