"""Server parts without a server: multipart parsing, the file store, media references, content-part
parsing, the Prometheus text, serving metrics, and a clear error when the engine cannot start."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
import time

import httpx
import pytest
from omniserve.api.chat_content import ChatContentParser
from omniserve.api.errors import APIError
from omniserve.api.file_store import FileStore, StorageFull
from omniserve.api.media import parse_data_url, sniff_mime
from omniserve.api.metrics import render
from omniserve.api.multipart import parse_multipart

from omniserve.core.messages import EngineStats
from omniserve.metrics import ServingMetrics
from omniserve.outputs import StreamDelta


def test_multipart_round_trip_with_httpx_encoder() -> None:
    payload = bytes(range(256)) * 3 + b"\r\n--tricky\r\n"
    request = httpx.Request(
        "POST",
        "http://x/v1/files",
        data={"purpose": "vision"},
        files={"file": ('we "ird".bin', payload, "application/x-thing")},
    )
    body = request.read()
    form = parse_multipart(body, request.headers["content-type"])
    assert form["purpose"].text() == "vision" and form["purpose"].filename is None
    assert form["file"].data == payload and form["file"].content_type == "application/x-thing"
    assert form["file"].filename == 'we "ird".bin'
    with pytest.raises(ValueError, match="multipart"):
        parse_multipart(body, "application/json")
    with pytest.raises(ValueError, match="closing boundary"):
        parse_multipart(body[: len(body) // 2], request.headers["content-type"])


def test_file_store_dedups_limits_and_expires(tmp_path) -> None:
    store = FileStore(tmp_path, max_file_bytes=100, max_total_bytes=150, ttl_s=3600)
    first = store.put(b"a" * 80, "a.txt", "user_data", "text/plain")
    second = store.put(b"a" * 80, "b.txt", "user_data", "text/plain")  # same bytes: shares the blob
    assert first.id != second.id and first.sha256 == second.sha256 and store.total_bytes == 80
    with pytest.raises(ValueError, match="limit"):
        store.put(b"x" * 101, "big", "user_data", "text/plain")
    with pytest.raises(StorageFull):
        store.put(b"b" * 80, "c.txt", "user_data", "text/plain")
    assert store.delete(first.id) and store.blob_path(second).is_file()
    assert store.delete(second.id) and not store.blob_path(second).exists()
    kept = store.put(b"kept", "k.txt", "user_data", "text/plain")
    reopened = FileStore(tmp_path, 100, 150, ttl_s=3600)  # records survive a restart
    assert reopened.get(kept.id) == kept and store.read(kept) == b"kept"
    short = FileStore(tmp_path / "short", 100, 150, ttl_s=0.01)
    gone = short.put(b"soon gone", "g.txt", "user_data", "text/plain")
    time.sleep(0.02)
    assert short.get(gone.id) is None and not short.blob_path(gone).exists()


def test_data_urls_and_sniffing() -> None:
    assert parse_data_url("data:image/png;base64,aGVsbG8=") == ("image/png", b"hello")
    assert parse_data_url("data:Image/PNG;base64,aGVsbG8") == ("image/png", b"hello")  # padding optional
    for bad, message in (
        ("data:image/png,hello", "base64"),
        ("data:image/png;base64", "','"),
        ("data:image/png;base64,!!!", "base64"),
        ("data:image/png;base64,", "no data"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_data_url(bad)
    assert sniff_mime(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_mime(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "audio/wav"
    assert sniff_mime(b"\x00\x00\x00\x18ftypmp42") == "video/mp4"
    assert sniff_mime(b"plain text") is None


def test_content_parser_canonical_parts_and_media(tmp_path) -> None:
    store = FileStore(tmp_path, 1000, 10_000, 3600)
    text_file = store.put(b"notes about ships", "n.txt", "user_data", "text/plain")
    parser = ChatContentParser(store, allow_remote_media=True)
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nxxxx").decode()
    parsed = parser.parse(
        [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    {"type": "file", "file": {"file_id": text_file.id}},
                    {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
                ],
            },
            {"role": "assistant", "content": None},
        ]
    )
    assert parsed.messages[0] == {"role": "system", "content": "be brief"}
    assert parsed.messages[1]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image", "media_index": 0},
        {"type": "text", "text": "notes about ships"},
        {"type": "video", "media_index": 1},
    ]
    assert parsed.messages[2] == {"role": "assistant", "content": ""}
    (image_param, image), (video_param, video) = parsed.media
    assert (
        image_param == "messages[1].content[1]"
        and image.modality == "image"
        and len(image.content_hash) == 64
    )
    assert video.source == "url" and video.url == "https://example.com/v.mp4" and video.content_hash is None
    with pytest.raises(ValueError, match="was not fetched"):
        parsed.prompt()  # remote media are fetched first (only when the server allows them)
    parsed.media[1] = (video_param, dataclasses.replace(video, data=b"mp4 bytes"))
    content = parsed.prompt()["messages"][1]["content"]
    assert content[1] == {"type": "image", "image": image.data}
    assert content[3] == {"type": "video", "video": b"mp4 bytes"}
    with pytest.raises(APIError) as error:
        parser.parse([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}])
    assert error.value.status == 400 and error.value.param == "messages[0].content[0].image_url.url"


def test_serving_metrics_and_prometheus_text() -> None:
    metrics = ServingMetrics()
    metrics.on_arrival("r-0", num_prompt_tokens=10, arrival=100.0)
    metrics.on_delta(StreamDelta("r-0", 0, [5], "a"), now=100.25)  # first token after 0.25 s
    metrics.on_delta(StreamDelta("r-0", 0, [6, 7], "bc"), now=100.35)  # two tokens, 0.05 s apart each
    metrics.on_delta(StreamDelta("r-0", 0, [8], "d", finish_reason="length"), now=100.40)
    assert metrics.time_to_first_token.count == 1 and metrics.time_to_first_token.total == pytest.approx(0.25)
    assert metrics.inter_token_latency.count == 3
    assert metrics.inter_token_latency.total == pytest.approx(0.15)
    assert metrics.generation_tokens_total == 4 and metrics.num_requests_finished["length"] == 1
    assert metrics.num_requests_in_flight == 0
    stats = EngineStats(
        num_running=2,
        num_waiting=1,
        num_kv_blocks_total=64,
        num_kv_blocks_free=60,
        num_kv_blocks_used_peak=9,
        num_preemptions=0,
        prefix_cache_queries=10,
        prefix_cache_hits=4,
    )
    text = render('my "model"', stats, metrics)
    assert 'omniserve_kv_blocks_free{model_name="my \\"model\\""} 60' in text
    assert 'omniserve_kv_blocks_total{model_name="my \\"model\\""} 64' in text
    assert 'omniserve_time_to_first_token_seconds_bucket{model_name="my \\"model\\"",le="0.25"} 1' in text
    assert 'omniserve_time_to_first_token_seconds_bucket{model_name="my \\"model\\"",le="0.1"} 0' in text
    assert 'le="+Inf"} 3' in text  # three inter-token gaps
    for name in (
        "omniserve_num_requests_running",
        "omniserve_num_requests_waiting",
        "omniserve_encoder_cache_hits_total",
        "omniserve_generation_tokens_per_second",
    ):
        assert f"# TYPE {name} " in text
    for line in text.splitlines():  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_serve_reports_a_bad_model_without_a_traceback(tmp_path) -> None:
    env = dict(os.environ, OMNISERVE_CACHE_DIR=str(tmp_path))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "omniserve",
            "serve",
            str(tmp_path / "no-such-model"),
            "--port",
            "0",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "Traceback" not in result.stderr
