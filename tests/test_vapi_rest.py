"""The VAPI REST client and its local fake, held to VAPI's documented `POST /call`.

The request bodies are the ones VAPI's WebSocket transport guide shows
(https://docs.vapi.ai/calls/websocket-transport) for PCM and mu-law, compared as
parsed JSON; the response is the guide's sample. Errors use NestJS's envelope, with
the 401 and 400 bodies users have reported from VAPI (see docs/vapi-protocol.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import pytest

from callbridge import __version__
from callbridge.config import ConfigError
from callbridge.local._vapirest import INVALID_KEY, LocalVapiRest
from callbridge.vapi_rest import VapiAudioFormat, VapiCall, VapiError, VapiRest

KEY = "vapi-5ecret-key-never-logged"
ASSISTANT = "5b0a4a08-133c-4146-9315-0984f8c6be80"
CALL_ID = "7420f27a-30fd-4f49-a995-5549ae7cc00d"
WS_URL = f"wss://api.vapi.ai/{CALL_ID}/transport"

# the guide's curl bodies, verbatim
PCM_BODY = json.loads("""{
    "assistantId": "5b0a4a08-133c-4146-9315-0984f8c6be80",
    "transport": {"provider": "vapi.websocket",
                  "audioFormat": {"format": "pcm_s16le", "container": "raw", "sampleRate": 16000}}
}""")
MULAW_BODY = json.loads("""{
    "assistantId": "5b0a4a08-133c-4146-9315-0984f8c6be80",
    "transport": {"provider": "vapi.websocket",
                  "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000}}
}""")
# the guide's sample response
CREATED = {
    "id": CALL_ID, "assistantId": ASSISTANT, "type": "vapi.websocketCall",
    "createdAt": "2024-09-10T11:14:12.339Z", "updatedAt": "2024-09-10T11:14:12.339Z",
    "orgId": "eb166faa-7145-46ef-8044-589b47ae3b56", "cost": 0, "status": "queued",
    "transport": {"provider": "vapi.websocket", "websocketCallUrl": WS_URL},
}


def nest_error(status: int, message: str | list[str], error: str) -> httpx.Response:
    return httpx.Response(status, json={"message": message, "error": error,
                                        "statusCode": status})


@attrs.define
class Recorded:
    """A `MockTransport` that answers one canned response and keeps the requests."""

    answer: Callable[[httpx.Request], httpx.Response]
    requests: list[httpx.Request] = attrs.Factory(list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def client(self, **kwargs: Any) -> VapiRest:
        return VapiRest(KEY, transport=httpx.MockTransport(self), **kwargs)


def answering(response: httpx.Response) -> Recorded:
    return Recorded(lambda request: response)


# -- the audio format -----------------------------------------------------------------

def test_audio_format_json_is_the_documented_object() -> None:
    assert VapiAudioFormat().to_json() == PCM_BODY["transport"]["audioFormat"]
    assert VapiAudioFormat.mulaw().to_json() == MULAW_BODY["transport"]["audioFormat"]
    assert VapiAudioFormat(sample_rate=24000).to_json() == {
        "format": "pcm_s16le", "container": "raw", "sampleRate": 24000}
    assert VapiAudioFormat().bytes_per_sample == 2
    assert VapiAudioFormat.mulaw().bytes_per_sample == 1


@pytest.mark.parametrize("kwargs", [
    {"format": "pcm_f32le"}, {"format": "PCM_S16LE"}, {"container": "wav"},
    {"sample_rate": 0}, {"sample_rate": 192001}, {"sample_rate": 16000.0},
    {"sample_rate": True},
])
def test_audio_format_refuses_what_vapi_does_not_take(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"audio|sample rate"):
        VapiAudioFormat(**kwargs)


# -- the request --------------------------------------------------------------------

@pytest.mark.parametrize(("audio", "expected"), [
    (VapiAudioFormat(), PCM_BODY), (VapiAudioFormat.mulaw(), MULAW_BODY)])
async def test_create_sends_the_documented_request(audio: VapiAudioFormat,
                                                   expected: dict[str, Any]) -> None:
    recorded = answering(httpx.Response(201, json=CREATED))
    async with recorded.client() as vapi:
        await vapi.create_websocket_call(ASSISTANT, audio)
    [request] = recorded.requests
    assert request.method == "POST"
    assert str(request.url) == "https://api.vapi.ai/call"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == f"callbridge/{__version__}"
    assert json.loads(request.content) == expected


async def test_metadata_goes_in_the_assistant_overrides() -> None:
    # CreateCallDTO has no top-level metadata; AssistantOverrides does
    recorded = answering(httpx.Response(201, json=CREATED))
    async with recorded.client(base_url="https://vapi.example/") as vapi:
        await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat(),
                                         metadata={"callSid": "CA123", "from": "+15550001"})
    [request] = recorded.requests
    assert str(request.url) == "https://vapi.example/call"
    assert json.loads(request.content) == PCM_BODY | {
        "assistantOverrides": {"metadata": {"callSid": "CA123", "from": "+15550001"}}}


async def test_empty_metadata_sends_no_overrides() -> None:
    recorded = answering(httpx.Response(201, json=CREATED))
    async with recorded.client() as vapi:
        await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat(), metadata={})
    assert json.loads(recorded.requests[0].content) == PCM_BODY


async def test_an_empty_assistant_id_is_our_bug() -> None:
    recorded = answering(httpx.Response(201, json=CREATED))
    async with recorded.client() as vapi:
        with pytest.raises(ValueError, match="assistant_id"):
            await vapi.create_websocket_call(" ", VapiAudioFormat())
    assert recorded.requests == []


# -- the response -------------------------------------------------------------------

async def test_the_documented_response_is_parsed() -> None:
    async with answering(httpx.Response(201, json=CREATED)).client() as vapi:
        call = await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert call == VapiCall(id=CALL_ID, websocket_url=WS_URL, status="queued")
    assert WS_URL not in repr(call)  # the URL is the call's only credential


async def test_a_response_without_status_still_gives_a_call() -> None:
    body = {"id": CALL_ID, "transport": {"websocketCallUrl": "ws://127.0.0.1:9/x"}}
    async with answering(httpx.Response(200, json=body)).client() as vapi:
        call = await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert call == VapiCall(id=CALL_ID, websocket_url="ws://127.0.0.1:9/x", status=None)


@pytest.mark.parametrize(("body", "match"), [
    ({k: v for k, v in CREATED.items() if k != "transport"}, "no transport.websocketCallUrl"),
    (CREATED | {"transport": {"provider": "vapi.websocket"}}, "no transport.websocketCallUrl"),
    (CREATED | {"transport": {"websocketCallUrl": ""}}, "no transport.websocketCallUrl"),
    (CREATED | {"transport": {"websocketCallUrl": "https://api.vapi.ai/x"}}, "not a ws://"),
    (CREATED | {"transport": {"websocketCallUrl": "wss:///x"}}, "not a ws://"),
    ({k: v for k, v in CREATED.items() if k != "id"}, "no call id"),
    ([CREATED], "not a JSON object"),
])
async def test_an_unusable_response_is_an_error(body: Any, match: str) -> None:
    async with answering(httpx.Response(201, json=body)).client() as vapi:
        with pytest.raises(VapiError, match=match) as caught:
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert caught.value.status_code == 201
    assert not caught.value.refused


async def test_a_response_that_is_not_json_is_an_error() -> None:
    async with answering(httpx.Response(201, text="<html>ok</html>")).client() as vapi:
        with pytest.raises(VapiError, match="not a JSON object"):
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())


# -- errors -------------------------------------------------------------------------

@pytest.mark.parametrize(("response", "status", "refused", "message"), [
    (nest_error(401, INVALID_KEY, "Unauthorized"), 401, True, INVALID_KEY),
    (nest_error(403, "Forbidden resource", "Forbidden"), 403, True, "Forbidden resource"),
    (nest_error(400, ["property customer should not exist",
                      "transport.audioFormat.format must be one of the following values: "
                      "pcm_s16le, mulaw"], "Bad Request"), 400, False,
     "property customer should not exist; transport.audioFormat.format must be one of the "
     "following values: pcm_s16le, mulaw"),
    (nest_error(400, "Couldn't Get Assistant.", "Bad Request"), 400, False,
     "Couldn't Get Assistant."),
    (nest_error(402, "Wallet Balance is below zero.", "Payment Required"), 402, False,
     "Wallet Balance is below zero."),
    (nest_error(404, "Cannot POST /call", "Not Found"), 404, False, "Cannot POST /call"),
    (nest_error(429, "ThrottlerException: Too Many Requests", "Too Many Requests"), 429,
     False, "ThrottlerException: Too Many Requests"),
    (httpx.Response(500, json={"statusCode": 500, "message": "Internal server error"}), 500,
     False, "Internal server error"),
    (httpx.Response(502, text="<html>\n<b>Bad   gateway</b></html>"), 502, False,
     "Bad Gateway: <html> <b>Bad gateway</b></html>"),
    (httpx.Response(503, text=""), 503, False, "Service Unavailable"),
    (httpx.Response(500, json={"message": []}), 500, False,
     'Internal Server Error: {"message":[]}'),
])
async def test_an_error_response_says_status_and_vapis_message(
        response: httpx.Response, status: int, refused: bool, message: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with answering(response).client() as vapi:
        with pytest.raises(VapiError) as caught:
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    error = caught.value
    assert (error.status_code, error.refused, error.message) == (status, refused, message)
    assert str(error) == f"create VAPI call for assistant {ASSISTANT}: HTTP {status}, {message}"
    assert KEY not in str(error) + repr(error) + caplog.text


async def test_no_response_is_an_error_without_a_status() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with Recorded(unreachable).client() as vapi:
        with pytest.raises(VapiError, match="ConnectError: connection refused") as caught:
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert caught.value.status_code is None
    assert not caught.value.refused
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_nothing_is_retried() -> None:
    # a call may have been created; the caller is waiting; a 429 locks out for seconds
    recorded = answering(nest_error(429, "Too Many Requests", "Too Many Requests"))
    async with recorded.client() as vapi:
        with pytest.raises(VapiError):
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert len(recorded.requests) == 1


async def test_the_key_is_in_no_repr_or_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with answering(httpx.Response(201, json=CREATED)).client() as vapi:
        assert KEY not in repr(vapi)
        await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert KEY not in caplog.text
    assert WS_URL not in caplog.text
    assert CALL_ID in caplog.text


def test_bad_client_arguments() -> None:
    with pytest.raises(ValueError, match="api_key"):
        VapiRest("  ")
    with pytest.raises(ValueError, match="timeout"):
        VapiRest(KEY, timeout=0)


# -- from_env -------------------------------------------------------------------------

async def test_from_env_without_a_key_is_none() -> None:
    assert VapiRest.from_env({}) is None
    assert VapiRest.from_env({"VAPI_API_KEY": "  ", "VAPI_BASE_URL": "https://x.test"}) is None


async def test_from_env_reads_the_key_and_base_url() -> None:
    recorded = answering(httpx.Response(201, json=CREATED))
    vapi = VapiRest.from_env({"VAPI_API_KEY": f" {KEY}\n"}, transport=httpx.MockTransport(recorded))
    assert vapi is not None
    async with vapi:
        assert vapi.base_url == "https://api.vapi.ai"
        await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert recorded.requests[0].headers["Authorization"] == f"Bearer {KEY}"

    other = VapiRest.from_env({"VAPI_API_KEY": KEY, "VAPI_BASE_URL": "http://127.0.0.1:8123/"})
    assert other is not None
    async with other:
        assert other.base_url == "http://127.0.0.1:8123"


@pytest.mark.parametrize("env", [
    {"VAPI_API_KEY": KEY, "VAPI_BASE_URL": "api.vapi.ai"},
    {"VAPI_API_KEY": KEY, "VAPI_BASE_URL": "ftp://api.vapi.ai"},
    {"VAPI_API_KEY": "two words"},
])
def test_from_env_refuses_a_bad_setting_without_echoing_the_key(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="VAPI_") as caught:
        VapiRest.from_env(env)
    assert KEY not in str(caught.value)
    assert "two words" not in str(caught.value)


# -- the local fake -----------------------------------------------------------------

def fake(**kwargs: Any) -> LocalVapiRest:
    return LocalVapiRest(api_key=KEY, **kwargs)


async def test_the_fake_creates_a_call_with_the_chosen_url() -> None:
    seen: list[tuple[str, VapiAudioFormat]] = []

    def url(call_id: str, audio: VapiAudioFormat) -> str:
        seen.append((call_id, audio))
        return f"ws://127.0.0.1:9000/vapi/{call_id}?rate={audio.sample_rate}"

    api = fake(websocket_url=url, assistants={ASSISTANT})
    async with VapiRest(KEY, transport=api.transport()) as vapi:
        call = await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat.mulaw(),
                                                metadata={"callSid": "CA1"})
    assert seen == [(call.id, VapiAudioFormat.mulaw())]
    assert call.websocket_url == f"ws://127.0.0.1:9000/vapi/{call.id}?rate=8000"
    assert call.status == "queued"
    created = api.calls[call.id]
    assert created.assistant_id == ASSISTANT
    assert created.audio_format == VapiAudioFormat.mulaw()
    assert created.metadata == {"callSid": "CA1"}
    assert created.websocket_url == call.websocket_url
    [request] = api.requests
    assert (request.method, request.path, request.status, request.authorized) == (
        "POST", "/call", 201, True)
    assert request.body == MULAW_BODY | {"assistantOverrides": {"metadata": {"callSid": "CA1"}}}


async def test_the_fakes_answer_has_the_documented_shape() -> None:
    api = fake()
    async with httpx.AsyncClient(transport=api.transport()) as client:
        response = await client.post("https://api.vapi.ai/call", json=PCM_BODY,
                                     headers={"authorization": f"bearer {KEY}"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == set(CREATED)
    assert body["assistantId"] == ASSISTANT
    assert body["type"] == "vapi.websocketCall"
    assert body["status"] == "queued"
    assert body["transport"] == {"provider": "vapi.websocket",
                                 "websocketCallUrl": f"wss://api.vapi.ai/{body['id']}/transport"}


async def test_the_fake_takes_an_inline_assistant_and_the_default_audio() -> None:
    api = fake()
    body = {"assistant": {"firstMessage": "Hello"}, "name": "callbridge",
            "transport": {"provider": "vapi.websocket", "conversationType": "voice"}}
    async with httpx.AsyncClient(transport=api.transport()) as client:
        response = await client.post("https://api.vapi.ai/call", json=body,
                                     headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 201
    assert response.json()["assistant"] == {"firstMessage": "Hello"}
    [call] = api.calls.values()
    assert (call.assistant_id, call.assistant) == (None, {"firstMessage": "Hello"})
    assert call.audio_format == VapiAudioFormat()  # VAPI's default


@pytest.mark.parametrize("authorization", [
    None, f"Basic {KEY}", "Bearer wrong-key", f"Bearer {KEY}x", "Bearer"])
async def test_the_fake_answers_401_for_a_wrong_key(authorization: str | None) -> None:
    api = fake()
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(transport=api.transport()) as client:
        response = await client.post("https://api.vapi.ai/call", json=PCM_BODY, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"message": INVALID_KEY, "error": "Unauthorized",
                               "statusCode": 401}
    assert api.calls == {}
    assert (api.requests[0].status, api.requests[0].authorized) == (401, False)


async def test_a_wrong_key_is_refused_through_the_client() -> None:
    api = fake()
    async with VapiRest("not-the-key", transport=api.transport()) as vapi:
        with pytest.raises(VapiError, match="Invalid Key") as caught:
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert caught.value.refused
    assert caught.value.status_code == 401


def _audio(**audio: Any) -> dict[str, Any]:
    return PCM_BODY | {"transport": {"provider": "vapi.websocket", "audioFormat": audio}}


@pytest.mark.parametrize(("body", "message"), [
    ({"transport": PCM_BODY["transport"]}, "assistantId or assistant is required"),
    (PCM_BODY | {"assistant": {}}, "give one of assistantId and assistant"),
    (PCM_BODY | {"squadId": "s"}, "give one of assistantId and squadId"),
    (PCM_BODY | {"assistantId": 7}, "assistantId must be a string"),
    (PCM_BODY | {"metadata": {"a": "b"}}, "property metadata should not exist"),
    (PCM_BODY | {"assistantOverrides": {"metadata": "x"}},
     "assistantOverrides.metadata must be an object"),
    (PCM_BODY | {"assistantOverrides": []}, "assistantOverrides must be an object"),
    (PCM_BODY | {"phoneNumberId": "p"}, "not permitted with the vapi.websocket transport"),
    (PCM_BODY | {"name": "x" * 41}, "name must be shorter than or equal to 40 characters"),
    ({"assistantId": ASSISTANT}, "transport must be an object"),
    (PCM_BODY | {"transport": {"provider": "twilio"}}, "transport.provider must be vapi.websocket"),
    (PCM_BODY | {"transport": {"provider": "vapi.websocket", "audio": {}}},
     "transport.property audio should not exist"),
    (PCM_BODY | {"transport": {"provider": "vapi.websocket", "conversationType": "chat"}},
     "transport.conversationType must be one of the following values: voice"),
    (PCM_BODY | {"transport": {"provider": "vapi.websocket", "audioFormat": "pcm"}},
     "transport.audioFormat must be an object"),
    (_audio(format="pcm_s16le"), "transport.audioFormat.sampleRate must be a number"),
    (_audio(sampleRate=16000), "transport.audioFormat.format must be one of the following "
     "values: pcm_s16le, mulaw"),
    (_audio(format="opus", sampleRate=16000), "transport.audioFormat.format must be one of"),
    (_audio(format="mulaw", sampleRate=8000, container="wav"),
     "transport.audioFormat.container must be one of the following values: raw"),
    (_audio(format="mulaw", sampleRate="8000"), "sampleRate must be a number"),
    (_audio(format="mulaw", sampleRate=192001), "sampleRate must not be greater than 192000"),
    (_audio(format="mulaw", sampleRate=0), "sampleRate must be a positive whole number"),
    (_audio(format="mulaw", sampleRate=8000.5), "sampleRate must be a positive whole number"),
    (_audio(format="mulaw", sampleRate=8000, channels=1),
     "transport.audioFormat.property channels should not exist"),
])
async def test_the_fake_answers_400_for_a_bad_body(body: dict[str, Any], message: str) -> None:
    api = fake()
    async with httpx.AsyncClient(transport=api.transport()) as client:
        response = await client.post("https://api.vapi.ai/call", json=body,
                                     headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400
    answer = response.json()
    assert (answer["error"], answer["statusCode"]) == ("Bad Request", 400)
    assert isinstance(answer["message"], list)
    assert any(message in line for line in answer["message"]), answer["message"]
    assert api.calls == {}
    assert api.requests[0].status == 400
    assert api.requests[0].body == body


async def test_the_fake_lists_every_problem_and_the_client_joins_them() -> None:
    api = fake()
    body = {"assistantId": ASSISTANT, "metadata": {}, "transport": {"provider": "x"}}
    async with httpx.AsyncClient(transport=api.transport()) as client:
        response = await client.post("https://api.vapi.ai/call", json=body,
                                     headers={"Authorization": f"Bearer {KEY}"})
    assert response.json()["message"] == ["property metadata should not exist",
                                          "transport.provider must be vapi.websocket"]


@pytest.mark.parametrize(("content", "content_type", "message"), [
    (b'{"assistantId": ', "application/json", "Unexpected token in JSON"),
    (b"[1]", "application/json", "the body must be a JSON object"),
    (json.dumps(PCM_BODY).encode(), "text/plain", "the body must be JSON"),
])
async def test_the_fake_answers_400_for_a_body_that_is_not_a_json_object(
        content: bytes, content_type: str, message: str) -> None:
    api = fake()
    async with httpx.AsyncClient(transport=api.transport()) as client:
        response = await client.post("https://api.vapi.ai/call", content=content, headers={
            "Authorization": f"Bearer {KEY}", "Content-Type": content_type})
    assert response.status_code == 400
    assert message in response.json()["message"]


async def test_the_fake_knows_its_assistants() -> None:
    api = fake(assistants={"another"})
    async with VapiRest(KEY, transport=api.transport()) as vapi:
        with pytest.raises(VapiError, match="Does Not Exist") as caught:
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert caught.value.status_code == 400
    assert api.calls == {}


@pytest.mark.parametrize(("method", "path"), [("GET", "/call"), ("POST", "/calls"),
                                              ("POST", "/call/web"), ("DELETE", "/call")])
async def test_the_fake_has_one_route(method: str, path: str) -> None:
    api = fake()
    async with httpx.AsyncClient(transport=api.transport()) as client:
        response = await client.request(method, f"https://api.vapi.ai{path}",
                                        headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 404
    assert response.json() == {"message": f"Cannot {method} {path}", "error": "Not Found",
                               "statusCode": 404}


async def test_the_fake_fails_on_request() -> None:
    api = fake()
    api.fail_next(402, "Wallet Balance is below zero.")
    api.fail_next(429, "Too Many Requests")
    async with VapiRest(KEY, transport=api.transport()) as vapi:
        with pytest.raises(VapiError, match="HTTP 402, Wallet Balance") as first:
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
        with pytest.raises(VapiError, match="HTTP 429") as second:
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
        call = await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert not first.value.refused and not second.value.refused
    assert list(api.calls) == [call.id]
    assert [r.status for r in api.requests] == [402, 429, 201]


async def test_the_fake_serves_asgi() -> None:
    api = fake(websocket_url=lambda call_id, audio: f"ws://localhost/{call_id}")
    transport = httpx.ASGITransport(app=api.asgi_app())
    async with VapiRest(KEY, base_url="http://vapi.test", transport=transport) as vapi:
        call = await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat(sample_rate=24000))
    async with VapiRest("wrong", base_url="http://vapi.test", transport=transport) as vapi:
        with pytest.raises(VapiError) as caught:
            await vapi.create_websocket_call(ASSISTANT, VapiAudioFormat())
    assert call.websocket_url == f"ws://localhost/{call.id}"
    assert api.calls[call.id].audio_format.sample_rate == 24000
    assert caught.value.refused
