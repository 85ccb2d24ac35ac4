"""Property-style: no mutation of a valid message escapes the decoders as another exception.

Starting from the recorded Twilio messages and realtime server events, every key
dropped or given a wrong value, and 200 random multi-key mutations per decoder, must
decode to an event or raise `RemoteProtocolError`: a peer's bad input never
surfaces as a `KeyError` or `TypeError` from inside the codec.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _recorded import (
    BETA_DISABLED,
    CONNECTED,
    DELTA,
    DTMF,
    MARK_ECHO,
    MEDIA,
    OUT_CLEAR,
    OUT_MARK,
    OUT_MEDIA,
    RESPONSE_DONE,
    SPEECH_STARTED,
    START,
    START_NO_PARAMETERS,
    STOP,
)

from callbridge import codec
from callbridge._errors import RemoteProtocolError

_TWILIO_VALID = [CONNECTED, START, START_NO_PARAMETERS, MEDIA, DTMF, MARK_ECHO, STOP,
                 OUT_MEDIA, OUT_MARK, OUT_CLEAR]
_SERVER_VALID = [json.dumps(DELTA), json.dumps(SPEECH_STARTED), json.dumps(RESPONSE_DONE),
                 BETA_DISABLED,
                 json.dumps({"type": "input_audio_buffer.speech_stopped", "event_id": "e",
                             "audio_end_ms": 2000, "item_id": "item_2"}),
                 json.dumps({"type": "conversation.item.truncated", "event_id": "e",
                             "item_id": "item_1", "content_index": 0, "audio_end_ms": 1500}),
                 json.dumps({"type": "response.output_audio.done", "event_id": "e",
                             "response_id": "resp_1", "item_id": "item_1", "output_index": 0,
                             "content_index": 0}),
                 json.dumps({"type": "response.created", "event_id": "e",
                             "response": {"id": "resp_1", "status": "in_progress"}}),
                 json.dumps({"type": "session.updated", "event_id": "e",
                             "session": {"type": "realtime", "model": "gpt-realtime"}})]

_REPLACEMENTS: list[Any] = [0, 17, -1, 2.5, True, [], ["x"], None, {}, {"k": "v"}, ""]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path into nested dicts and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


def _mutate(doc: Any, path: tuple[Any, ...], value: Any, drop: bool) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def _random_mutations(texts: list[str], count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        doc = json.loads(rng.choice(texts))
        for _ in range(rng.randint(1, 3)):
            paths = list(_paths(doc))
            if not paths:
                break
            path = rng.choice(paths)
            doc = _mutate(doc, path, rng.choice(_REPLACEMENTS), drop=rng.random() < 0.3)
        yield json.dumps(doc)


def _every_single_mutation(texts: list[str]) -> Iterator[str]:
    for text in texts:
        doc = json.loads(text)
        for path in _paths(doc):
            yield json.dumps(_mutate(doc, path, None, drop=True))
            for value in _REPLACEMENTS:
                yield json.dumps(_mutate(doc, path, value, drop=False))


def _assert_event_or_remote_error(decode: Callable[[str], Any], texts: Iterator[str]) -> int:
    tried = 0
    for text in texts:
        tried += 1
        try:
            decode(text)
        except RemoteProtocolError:
            pass
        except Exception as exc:  # the point is to catch everything else
            pytest.fail(f"{type(exc).__name__}: {exc} for {text}")
    return tried


@pytest.mark.parametrize(
    ("decode", "texts"),
    [
        pytest.param(codec.decode_twilio, _TWILIO_VALID, id="twilio"),
        pytest.param(codec.decode_server_event, _SERVER_VALID, id="server"),
    ],
)
def test_random_mutations_decode_or_raise_remote_protocol_error(
    decode: Callable[[str], Any], texts: list[str]
) -> None:
    mutations = _random_mutations(texts, 200, seed=20260821)
    assert _assert_event_or_remote_error(decode, mutations) == 200


@pytest.mark.parametrize(
    ("decode", "texts"),
    [
        pytest.param(codec.decode_twilio, _TWILIO_VALID, id="twilio"),
        pytest.param(codec.decode_server_event, _SERVER_VALID, id="server"),
    ],
)
def test_every_single_mutation_decodes_or_raises_remote_protocol_error(
    decode: Callable[[str], Any], texts: list[str]
) -> None:
    assert _assert_event_or_remote_error(decode, _every_single_mutation(texts)) > 200

