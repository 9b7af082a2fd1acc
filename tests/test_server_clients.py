"""The official openai client and the omniserve SDK (`omniserve.client`) against the real server."""

from __future__ import annotations

import asyncio
import io

import openai
import pytest
from PIL import Image
from server_harness import API_KEY, RunningServer, shared_server

from omniserve.client import AsyncClient, Client, OmniServeError


@pytest.fixture(scope="module")
def server(request, checkpoint_factory, tmp_path_factory) -> RunningServer:
    return shared_server(request, checkpoint_factory, tmp_path_factory)


STORY = [{"role": "user", "content": "Tell me about lighthouses"}]


@pytest.fixture
def oai(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)


def test_openai_chat_and_streaming(server: RunningServer, oai: openai.OpenAI) -> None:
    options = dict(
        model=server.model, messages=STORY, max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
    )
    completion = oai.chat.completions.create(**options)
    text = completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 16
    stream = oai.chat.completions.create(**options, stream=True, stream_options={"include_usage": True})
    deltas, usage = [], None
    for chunk in stream:
        if chunk.choices:
            deltas.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(deltas) == text
    assert usage is not None and usage.completion_tokens == 16


def test_openai_completions_models_and_files(server: RunningServer, oai: openai.OpenAI) -> None:
    assert [model.id for model in oai.models.list()] == [server.model]
    completion = oai.completions.create(
        model=server.model, prompt="The sea is", max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 5
    uploaded = oai.files.create(
        file=("notes.txt", b"Ships pass the lighthouse at night.\n"), purpose="user_data"
    )
    assert oai.files.retrieve(uploaded.id).bytes == len(b"Ships pass the lighthouse at night.\n")
    chat = oai.chat.completions.create(
        model=server.model,
        max_tokens=3,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"file_id": uploaded.id}},
                    {"type": "text", "text": "Summarize."},
                ],
            }
        ],
    )
    assert chat.usage.prompt_tokens > 15
    assert oai.files.delete(uploaded.id).deleted


def test_openai_errors_carry_the_server_message(server: RunningServer, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="temperature"):
        oai.chat.completions.create(model=server.model, messages=STORY, temperature=-1)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        oai.chat.completions.create(model="gpt-17", messages=STORY)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError) as error:
        oai.chat.completions.create(
            model=server.model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                    ],
                }
            ],
        )
    assert "text only" in error.value.message and error.value.param == "messages[0].content[0]"


def test_sdk_client(server: RunningServer, tmp_path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("The keeper lights the lamp at dusk and sleeps at dawn.\n")
    image = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(image)
    with Client(server.base_url + "/v1", api_key=API_KEY) as client:
        assert client.health() and client.models() == [server.model]
        result = client.chat("Hello there", max_tokens=10, temperature=0, ignore_eos=True)
        assert result.finish_reason == "length" and result.usage["completion_tokens"] == 10
        streamed = "".join(client.chat_stream("Hello there", max_tokens=10, temperature=0, ignore_eos=True))
        assert streamed == result.text
        with_file = client.chat("Summarize the file.", files=[notes], max_tokens=2)
        plain = client.chat("Summarize the file.", max_tokens=2)
        assert with_file.usage["prompt_tokens"] > plain.usage["prompt_tokens"] + 10
        assert any(f.filename == "notes.txt" for f in client.files())
        completion = client.complete("Once upon a time", max_tokens=4, ignore_eos=True, n=2)
        assert len(completion.texts) == 2 and completion.usage["completion_tokens"] == 8
        with pytest.raises(OmniServeError) as error:
            client.chat("What is in this picture?", images=[image])
        assert error.value.status_code == 400 and "text only" in error.value.message
        assert error.value.param == "messages[0].content[0]"
        with pytest.raises(OmniServeError) as error:
            list(client.chat_stream("hi", temperature=-3))
        assert error.value.status_code == 400 and "temperature" in error.value.message
        assert "omniserve_kv_blocks_free" in client.metrics()
    with Client(server.base_url, api_key="wrong") as bad, pytest.raises(OmniServeError) as error:
        bad.models()
    assert error.value.status_code == 401


def test_sdk_async_client_concurrent_streams(server: RunningServer) -> None:
    async def run() -> list[str]:
        async with AsyncClient(server.base_url, api_key=API_KEY) as client:
            assert await client.health()

            async def one(index: int) -> str:
                pieces = [
                    piece
                    async for piece in client.chat_stream(f"Story {index}", max_tokens=8, ignore_eos=True)
                ]
                return "".join(pieces)

            texts = await asyncio.gather(*(one(i) for i in range(8)))
            whole = await client.chat("Story 0", max_tokens=8, ignore_eos=True, temperature=0)
            streamed = "".join(
                [p async for p in client.chat_stream("Story 0", max_tokens=8, ignore_eos=True, temperature=0)]
            )
            assert streamed == whole.text
            return texts

    texts = asyncio.run(run())
    assert len(texts) == 8 and sum(1 for text in texts if text) >= 7


def test_sdk_builds_inline_media_parts(tmp_path) -> None:
    from omniserve.client import content

    image, audio = tmp_path / "a.png", tmp_path / "b.wav"
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    image.write_bytes(buffer.getvalue())
    audio.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    image_part = content.inline_part("image", image, 1 << 20)
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert content.inline_part("audio", audio, 1 << 20)["input_audio"]["format"] == "wav"
    assert content.inline_part("image", image, 10) is None  # too big: uploaded instead
    messages = content.build_messages("Describe", [image_part], system="Be brief")
    assert messages[0] == {"role": "system", "content": "Be brief"}
    assert messages[1]["content"][0] is image_part and messages[1]["content"][1]["text"] == "Describe"
