"""Media through the real server (tiny Qwen2.5-Omni): image data URL, base64 audio, an uploaded video used by
file id, driven by the official openai client; greedy output equals the offline engine's; corrupt media is a
400 while the server keeps serving."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import pytest
from server_harness import API_KEY, start_server, stop_server

sys.path.insert(0, str(Path(__file__).parent / "frontend"))
from mm_test_media import frames, image, png_bytes, speech, wav_bytes  # noqa: E402


@pytest.fixture(scope="module")
def omni_server(tmp_path_factory):
    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint

    checkpoint = build_qwen2_5_omni_checkpoint(
        tmp_path_factory.mktemp("omni-srv") / "ckpt", seed=11, weight_scale=4.0
    )
    server = start_server(checkpoint, tmp_path_factory.mktemp("omni-server"))
    yield checkpoint, server
    stop_server(server)


def mp4_bytes(num_frames: int = 6) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=2)
        stream.width, stream.height, stream.pix_fmt = 84, 56, "yuv420p"
        for array in frames(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_image_audio_and_uploaded_video_match_the_offline_engine(omni_server, tmp_path) -> None:
    import openai

    from omniserve import Omni, SamplingParams

    checkpoint, server = omni_server
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY)
    video_path = tmp_path / "clip.mp4"
    video_path.write_bytes(mp4_bytes())
    uploaded = client.files.create(file=video_path.open("rb"), purpose="user_data")
    picture = "data:image/png;base64," + base64.b64encode(png_bytes(image(60, 90))).decode()
    sound = base64.b64encode(wav_bytes(speech(1.5))).decode()
    content = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": picture}},
        {"type": "input_audio", "input_audio": {"data": sound, "format": "wav"}},
        {"type": "file", "file": {"file_id": uploaded.id}},
    ]
    reply = client.chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": content}],
        max_tokens=5,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    offline_content = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": picture}},
        {"type": "input_audio", "input_audio": {"data": sound, "format": "wav"}},
        {"type": "video_url", "video_url": {"url": str(video_path)}},
    ]
    offline = Omni(str(checkpoint), device="cpu", num_kv_blocks=512).generate(
        {"messages": [{"role": "user", "content": offline_content}]},
        SamplingParams(temperature=0, max_tokens=5, ignore_eos=True),
    )[0]
    assert reply.usage.prompt_tokens == len(offline.prompt_token_ids) > 100  # placeholders expanded
    assert reply.usage.completion_tokens == 5
    assert reply.choices[0].message.content == offline.text


def test_corrupt_media_is_a_400_and_the_server_keeps_serving(omni_server) -> None:
    import openai

    _, server = omni_server
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY)
    broken = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nnot really a png").decode()
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model=server.model,
            max_tokens=3,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": broken}}]}],
        )
    assert "image" in str(error.value).lower()
    reply = client.chat.completions.create(
        model=server.model, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_pixel_data_corrupt_past_the_header_is_a_400_too(omni_server) -> None:
    """The frontend plans an image from its header; a truncated PNG only fails where it is decoded (the
    encoder side). That failure is still the client's: a 400 (an error event with status 400 when
    streaming), and the server keeps serving."""
    import httpx
    import openai

    _, server = omni_server
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY)
    truncated = png_bytes(image(60, 90, 5))[:80]
    url = "data:image/png;base64," + base64.b64encode(truncated).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=server.model, max_tokens=3, messages=messages)
    assert "image 0: corrupt or truncated image data" in str(error.value)
    body = {"model": server.model, "max_tokens": 3, "messages": messages, "stream": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, headers=headers) as reply:
        events = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert any('"status":400' in line and "invalid_request_error" in line for line in events), events
    reply = client.chat.completions.create(
        model=server.model, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
