"""Every bad input answers 4xx in the OpenAI error shape, and the server keeps serving afterwards.
Also: the API key is enforced, and request/upload size limits answer 413."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image
from server_harness import MAX_REQUEST_BYTES, MAX_UPLOAD_BYTES, RunningServer, shared_server


@pytest.fixture(scope="module")
def server(request, checkpoint_factory, tmp_path_factory) -> RunningServer:
    return shared_server(request, checkpoint_factory, tmp_path_factory)


USER = [{"role": "user", "content": "hi"}]
WAV_BASE64 = base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEfmt ").decode()


def png_data_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def part(**content) -> list[dict]:
    return [{"role": "user", "content": [content]}]


BAD_CHAT = [
    # (request body, status, substring of the message, param)
    ({"model": "gpt-17", "messages": USER}, 404, "does not exist", "model"),
    ({}, 400, "messages", "messages"),
    ({"messages": []}, 400, "non-empty", "messages"),
    ({"messages": "hi"}, 400, "messages", "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role", "messages[0].role"),
    ({"messages": part(type="hologram")}, 400, "unknown content part type", "messages[0].content[0].type"),
    ({"messages": part(type="text")}, 400, "must be a string", "messages[0].content[0].text"),
    ({"messages": part(type="image_url", image_url={"url": png_data_url()})}, 400, "text only",
     "messages[0].content[0]"),
    ({"messages": part(type="input_audio", input_audio={"data": WAV_BASE64, "format": "wav"})}, 400,
     "text only", "messages[0].content[0]"),
    ({"messages": part(type="video_url", video_url={"url": "data:video/mp4;base64,AAAAGGZ0eXBtcDQy"})}, 400,
     "text only", "messages[0].content[0]"),
    ({"messages": part(type="image_url", image_url={"url": "https://example.com/cat.png"})}, 400,
     "--allow-remote-media", "messages[0].content[0].image_url.url"),
    ({"messages": part(type="image_url", image_url={"url": "data:image/png;base64,@@@"})}, 400, "base64",
     "messages[0].content[0].image_url.url"),
    ({"messages": part(type="input_audio", input_audio={"data": "AAAA", "format": "midi"})}, 400, "format",
     "messages[0].content[0].input_audio.format"),
    ({"messages": part(type="file", file={"file_id": "file-doesnotexist"})}, 400, "no file with id",
     "messages[0].content[0].file.file_id"),
    ({"messages": USER, "temperature": -1}, 400, "temperature", "temperature"),
    ({"messages": USER, "top_p": 0}, 400, "top_p", "top_p"),
    ({"messages": USER, "n": 0}, 400, "n must be", "n"),
    ({"messages": USER, "n": 10_000}, 400, "n must be", "n"),
    ({"messages": USER, "max_tokens": 0}, 400, "max_tokens", "max_tokens"),
    ({"messages": USER, "max_completion_tokens": -5}, 400, "max_tokens", "max_tokens"),
    ({"messages": USER, "presence_penalty": 3}, 400, "presence_penalty", "presence_penalty"),
    ({"messages": USER, "frequency_penalty": -2.5}, 400, "frequency_penalty", "frequency_penalty"),
    ({"messages": USER, "top_logprobs": 3}, 400, "logprobs", "top_logprobs"),
    ({"messages": USER, "logprobs": True, "top_logprobs": 50}, 400, "logprobs", "logprobs"),
    ({"messages": USER, "max_tokens": "many"}, 400, "max_tokens", "max_tokens"),
    ({"messages": USER, "max_tokens": 100_000}, 400, "context", "messages"),
    ({"messages": [{"role": "user", "content": "sea " * 600}]}, 400, "context", "messages"),
    ({"messages": USER, "modalities": ["text", "audio"]}, 400, "audio parameter", "audio"),
    ({"messages": USER, "modalities": ["text", "audio"], "audio": {"voice": "Chelsie", "format": "ogg"}}, 400,
     "audio.format", "audio.format"),
    ({"messages": USER, "modalities": ["text", "audio"], "audio": {"voice": "Chelsie", "format": "wav"}}, 400,
     "text only", "modalities"),
    ({"messages": USER, "modalities": ["smell"]}, 400, "modalities", "modalities"),
    ({"messages": USER, "stream_options": {"include_usage": True}}, 400, "stream", "stream_options"),
    ({"messages": USER, "logit_bias": {"5": 10}}, 400, "logit_bias", "logit_bias"),
]  # fmt: skip


def assert_openai_error(
    response: httpx.Response, status: int, message: str, param: str | None = None
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message.lower() in error["message"].lower(), error
    if param is not None:
        assert error["param"] == param, error


def assert_still_serving(client: httpx.Client) -> None:
    ok = client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2, "ignore_eos": True})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("body, status, message, param", BAD_CHAT)
def test_bad_chat_request_is_a_4xx(server: RunningServer, body, status, message, param) -> None:
    with server.client() as client:
        assert_openai_error(client.post("/v1/chat/completions", json=body), status, message, param)
        if body is BAD_CHAT[-1][0]:
            assert_still_serving(client)


@pytest.mark.parametrize("body, message, param", [
    ({"max_tokens": 4}, "missing", "prompt"),
    ({"prompt": "hi", "temperature": 500}, "temperature", "temperature"),
    ({"prompt": ""}, "empty", "prompt"),
    ({"prompt": []}, "empty", "prompt"),
    ({"prompt": [1, 99_999]}, "vocabulary", "prompt"),
    ({"prompt": "hi", "suffix": "x"}, "suffix", "suffix"),
    ({"prompt": "hi", "best_of": 3}, "best_of", "best_of"),
])  # fmt: skip
def test_bad_completion_request_is_a_400(server: RunningServer, body, message, param) -> None:
    with server.client() as client:
        assert_openai_error(client.post("/v1/completions", json=body), 400, message, param)


def test_malformed_bodies_and_unknown_routes(server: RunningServer) -> None:
    with server.client() as client:
        headers = {"content-type": "application/json"}
        assert_openai_error(
            client.post("/v1/chat/completions", content=b"{not json", headers=headers), 400, "JSON"
        )
        assert_openai_error(client.post("/v1/chat/completions", content=b"[1, 2]", headers=headers), 400, "")
        assert_openai_error(client.get("/v1/nothing-here"), 404, "not found")
        assert_openai_error(client.get("/v1/files/file-0000"), 404, "no file", "file_id")
        assert_openai_error(client.delete("/v1/files/file-0000"), 404, "no file", "file_id")
        assert_openai_error(client.get("/v1/models/other"), 404, "does not exist")
        assert_openai_error(
            client.post("/v1/files", content=b"x", headers={"content-type": "text/plain"}), 400, "multipart"
        )
        assert_openai_error(client.post("/v1/files", files={"purpose": (None, "x")}), 400, "file")
        assert_still_serving(client)


def test_size_limits(server: RunningServer) -> None:
    with server.client() as client:
        big = {"messages": [{"role": "user", "content": "a" * (MAX_REQUEST_BYTES + 10)}]}
        assert_openai_error(client.post("/v1/chat/completions", json=big), 413, "limit")

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(MAX_REQUEST_BYTES // 10_000 + 2):
                yield b" " * 10_000

        chunked = client.post(
            "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_openai_error(chunked, 413, "limit")
        upload = client.post("/v1/files", files={"file": ("big.bin", b"\x01" * (MAX_UPLOAD_BYTES + 1))})
        assert_openai_error(upload, 413, "limit")
        upload = client.post("/v1/files", files={"file": ("big.bin", b"\x01" * (MAX_UPLOAD_BYTES + 100_000))})
        assert_openai_error(upload, 413, "limit")
        assert_openai_error(client.post("/v1/files", files={"file": ("empty.txt", b"")}), 400, "empty")
        assert_still_serving(client)


def test_uploaded_image_is_refused_by_a_text_only_model(server: RunningServer) -> None:
    png = base64.b64decode(png_data_url().split(",", 1)[1])
    with server.client() as client:
        uploaded = client.post("/v1/files", files={"file": ("red.png", png, "image/png")}).json()
        assert uploaded["mime_type"] == "image/png"
        response = client.post(
            "/v1/chat/completions", json={"messages": part(type="file", file={"file_id": uploaded["id"]})}
        )
        assert_openai_error(response, 400, "text only", "messages[0].content[0]")


def test_api_key_is_enforced(server: RunningServer) -> None:
    for key in (None, "sk-wrong"):
        with server.client(api_key=key) as client:
            for method, path in (
                ("GET", "/v1/models"),
                ("POST", "/v1/chat/completions"),
                ("POST", "/v1/files"),
            ):
                response = client.request(method, path, json={"messages": USER})
                assert_openai_error(response, 401, "API key")
                assert response.json()["error"]["code"] == "invalid_api_key"
            assert client.get("/health").status_code == 200  # probes and scrapers need no key
            assert client.get("/metrics").status_code == 200
    with server.client() as client:
        assert_still_serving(client)
