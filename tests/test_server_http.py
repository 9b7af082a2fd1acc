"""End to end over HTTP (httpx): chat and completions, streaming, n, stop, logprobs, uploads used by id,
models, health, concurrent clients. The real server runs in a subprocess (tests/server_harness.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from server_harness import API_KEY, RunningServer, shared_server


@pytest.fixture(scope="module")
def server(request, checkpoint_factory, tmp_path_factory) -> RunningServer:
    return shared_server(request, checkpoint_factory, tmp_path_factory)


HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def sse_events(response: httpx.Response) -> list[dict | str]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_health_models_and_version(server: RunningServer) -> None:
    assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
    with server.client() as client:
        models = client.get("/v1/models").json()
        assert [card["id"] for card in models["data"]] == [server.model]
        assert models["data"][0]["max_model_len"] == 512
        assert client.get(f"/v1/models/{server.model}").json()["id"] == server.model


def test_chat_completion(server: RunningServer) -> None:
    with server.client() as client:
        body = client.post(
            "/v1/chat/completions",
            json={
                "model": server.model,
                "messages": HELLO,
                "max_tokens": 7,
                "ignore_eos": True,
                "temperature": 0,
            },
        ).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 7 and usage["prompt_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 7


def test_streaming_deltas_join_to_the_full_text(server: RunningServer) -> None:
    request = {
        "model": server.model,
        "messages": [{"role": "user", "content": "Tell me a story about the sea"}],
        "max_completion_tokens": 24,
        "ignore_eos": True,
        "temperature": 0,
    }
    with server.client() as client:
        whole = client.post("/v1/chat/completions", json=request).json()
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                **request,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if isinstance(e, dict)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 24
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)


def test_n_choices_stop_strings_seed_and_logprobs(server: RunningServer) -> None:
    with server.client() as client:
        body = client.post(
            "/v1/chat/completions",
            json={
                "messages": HELLO,
                "n": 3,
                "max_tokens": 12,
                "ignore_eos": True,
                "seed": 7,
                "temperature": 1.0,
                "logprobs": True,
                "top_logprobs": 2,
            },
        ).json()
        again = client.post(
            "/v1/chat/completions",
            json={
                "messages": HELLO,
                "n": 3,
                "max_tokens": 12,
                "ignore_eos": True,
                "seed": 7,
                "temperature": 1.0,
            },
        ).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in body["choices"]]
    assert texts == [c["message"]["content"] for c in again["choices"]]  # seeded: reproducible
    assert len(set(texts)) > 1  # but the n samples differ from each other
    assert body["usage"]["completion_tokens"] == 36
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 12 and all(len(entry["top_logprobs"]) == 2 for entry in content)
    assert all(entry["logprob"] <= 0 for entry in content)
    stop = texts[0][2:5]  # a stop string that occurs: the text is cut before it
    with server.client() as client:
        cut = client.post(
            "/v1/chat/completions",
            json={
                "messages": HELLO,
                "n": 1,
                "max_tokens": 12,
                "ignore_eos": True,
                "seed": 7,
                "temperature": 1.0,
                "stop": [stop],
            },
        ).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and stop not in cut["message"]["content"]
    assert texts[0].startswith(cut["message"]["content"])


def test_completions_plain_batched_echo_and_stream(server: RunningServer) -> None:
    with server.client() as client:
        body = client.post(
            "/v1/completions",
            json={
                "model": server.model,
                "prompt": ["The sea", "A cat"],
                "n": 2,
                "max_tokens": 5,
                "ignore_eos": True,
                "echo": True,
                "logprobs": 1,
            },
        ).json()
        assert body["object"] == "text_completion"
        assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
        assert body["choices"][0]["text"].startswith("The sea") and body["choices"][3]["text"].startswith(
            "A cat"
        )
        assert len(body["choices"][2]["logprobs"]["tokens"]) == 5
        assert body["usage"]["completion_tokens"] == 20
        ids = client.post(
            "/v1/completions", json={"prompt": [72, 101, 108], "max_tokens": 3, "ignore_eos": True}
        )
        assert ids.json()["usage"] == {
            "prompt_tokens": 3,
            "completion_tokens": 3,
            "total_tokens": 6,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        request = {"prompt": "Once upon a time", "max_tokens": 10, "ignore_eos": True, "temperature": 0}
        whole = client.post("/v1/completions", json=request).json()["choices"][0]["text"]
        with client.stream("POST", "/v1/completions", json={**request, "stream": True}) as response:
            events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == whole


def test_uploaded_text_file_is_usable_by_id(server: RunningServer) -> None:
    notes = b"The lighthouse keeper counts ships every night and writes their names in a book.\n"
    with server.client() as client:
        uploaded = client.post(
            "/v1/files", files={"file": ("notes.txt", notes, "text/plain")}, data={"purpose": "user_data"}
        ).json()
        assert (
            uploaded["object"] == "file"
            and uploaded["bytes"] == len(notes)
            and uploaded["id"].startswith("file-")
        )
        assert client.get(f"/v1/files/{uploaded['id']}").json()["filename"] == "notes.txt"
        assert uploaded["id"] in [f["id"] for f in client.get("/v1/files").json()["data"]]
        assert client.get(f"/v1/files/{uploaded['id']}/content").content == notes
        question = {"type": "text", "text": "Summarize the notes."}
        plain = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": [question]}], "max_tokens": 2},
        ).json()
        with_file = client.post(
            "/v1/chat/completions",
            json={
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "file", "file": {"file_id": uploaded["id"]}}, question],
                    }
                ],
                "max_tokens": 2,
            },
        ).json()
        # The file's text reached the prompt.
        assert with_file["usage"]["prompt_tokens"] - plain["usage"]["prompt_tokens"] >= 15
        # Same bytes again: a new id, one blob on disk (content-addressed).
        again = client.post("/v1/files", files={"file": ("copy.txt", notes)}).json()
        assert again["id"] != uploaded["id"]
        assert len([p for p in (server.storage_dir / "blobs").rglob("*") if p.is_file()]) >= 1
        blobs_before = {p.name for p in (server.storage_dir / "blobs").rglob("*") if p.is_file()}
        assert client.delete(f"/v1/files/{uploaded['id']}").json()["deleted"] is True
        assert client.get(f"/v1/files/{uploaded['id']}").status_code == 404
        still = {p.name for p in (server.storage_dir / "blobs").rglob("*") if p.is_file()}
        assert still == blobs_before  # the copy still references the blob
        client.delete(f"/v1/files/{again['id']}")
        gone = {p.name for p in (server.storage_dir / "blobs").rglob("*") if p.is_file()}
        assert len(gone) == len(blobs_before) - 1
        missing = client.post(
            "/v1/chat/completions",
            json={
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": uploaded["id"]}}]}
                ]
            },
        )
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "file_not_found"


def test_concurrent_streaming_clients(server: RunningServer) -> None:
    async def one(client: httpx.AsyncClient, index: int) -> tuple[str, dict]:
        request = {
            "messages": [{"role": "user", "content": f"Client number {index} says hello"}],
            "max_tokens": 12,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        text, usage = "", {}
        async with client.stream("POST", "/v1/chat/completions", json=request) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if event["choices"]:
                        text += event["choices"][0]["delta"].get("content", "")
                    else:
                        usage = event["usage"]
        return text, usage

    async def run_all() -> list[tuple[str, dict]]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=120) as client:
            return await asyncio.gather(*(one(client, i) for i in range(16)))

    results = asyncio.run(run_all())
    assert all(usage["completion_tokens"] == 12 for _, usage in results)
    assert sum(1 for text, _ in results if text) >= 15
    metrics = server.metrics()
    assert metrics["omniserve_num_requests_running"] == 0
    assert metrics["omniserve_kv_blocks_free"] == metrics["omniserve_kv_blocks_total"]
