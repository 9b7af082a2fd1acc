"""Media sources: bytes, data: URLs and paths resolve to bytes or a file; every bad source is a MediaError."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_source import parse_data_url, resolve_source


def test_media_error_is_a_value_error_naming_the_item() -> None:
    error = MediaError("corrupt JPEG data", item="image 2")
    assert isinstance(error, ValueError)
    assert str(error) == "image 2: corrupt JPEG data"
    assert (error.item, error.reason) == ("image 2", "corrupt JPEG data")


def test_bytes_and_buffers_resolve_inline() -> None:
    for source in (b"abc", bytearray(b"abc"), memoryview(b"abc")):
        resolved = resolve_source(source)
        assert resolved.data == b"abc" and resolved.path is None
        assert resolved.open().read() == b"abc"


def test_data_urls_base64_and_percent_encoded() -> None:
    payload = bytes(range(256))
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    assert parse_data_url(url) == ("image/png", payload)
    unpadded = "data:audio/wav;base64," + base64.b64encode(b"ab").decode().rstrip("=")
    assert resolve_source(unpadded).data == b"ab"
    assert parse_data_url("data:,a%20b") == ("text/plain", b"a b")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,@@@@", "malformed base64"),
        ("data:image/png;base64", "no ','"),
        ("data:image/png;base64,", "empty"),
    ],
)
def test_malformed_data_urls(url: str, reason: str) -> None:
    with pytest.raises(MediaError, match=reason):
        resolve_source(url, item="image 0")


def test_paths_and_file_urls(tmp_path: Path) -> None:
    path = tmp_path / "a b.bin"
    path.write_bytes(b"xyz")
    for source in (path, str(path), path.as_uri()):
        resolved = resolve_source(source)
        assert resolved.path == path and resolved.size_bytes == 3
        with resolved.open() as stream:
            assert stream.read() == b"xyz"


def test_missing_empty_remote_and_odd_sources(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="file not found"):
        resolve_source(tmp_path / "missing.png")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        resolve_source(tmp_path / "empty")
    with pytest.raises(MediaError, match="empty data"):
        resolve_source(b"")
    with pytest.raises(MediaError, match="remote URLs"):
        resolve_source("https://example.com/cat.png")
    with pytest.raises(MediaError, match="unsupported media source type"):
        resolve_source(12345)  # type: ignore[arg-type]
