"""Where a media item's encoded bytes are: inline bytes, a `data:` URL, or a file on disk.

In: what a caller hands a loader (`bytes`, a `data:` URL string, a path string or `os.PathLike`). Out: a
`ResolvedSource` holding either the bytes or the path, opened as a binary stream by the decoders (PIL,
PyAV). Remote URLs are refused: fetching belongs to the API process (`api/media.py`), never to a decoder.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from omniserve.encoders.media_errors import MediaError

# What every loader accepts as encoded media.
MediaSource = bytes | bytearray | memoryview | str | os.PathLike[str]


@dataclass(frozen=True)
class ResolvedSource:
    data: bytes | None  # the encoded bytes, when they came inline (bytes or data URL); else None
    path: Path | None  # the file to read, when the source was a path; else None
    mime_type: str | None  # the media type a data URL declared ("image/png"); None for bytes and paths

    def open(self) -> BinaryIO:
        """A fresh binary stream over the bytes or the file; the caller closes it."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return open(self.path, "rb")

    @property
    def size_bytes(self) -> int:
        return len(self.data) if self.data is not None else os.path.getsize(self.path)  # type: ignore[arg-type]


def parse_data_url(url: str, *, item: str = "media") -> tuple[str, bytes]:
    """`data:[<mime>][;base64],<payload>` -> (mime type, bytes); MediaError when malformed.

    A payload without `;base64` is percent-encoded text (RFC 2397). The mime type defaults to
    "text/plain" as the RFC says; loaders ignore it and sniff the bytes.
    """
    if not url.startswith("data:"):
        raise MediaError("not a data: URL", item=item)
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise MediaError("malformed data: URL (no ',' before the payload)", item=item)
    parts = header.split(";")
    mime_type = parts[0].strip().lower() or "text/plain"
    if "base64" in (part.strip().lower() for part in parts[1:]):
        cleaned = "".join(payload.split())
        try:
            data = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
        except (binascii.Error, ValueError) as error:
            raise MediaError(f"malformed base64 in data: URL ({error})", item=item) from error
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    return mime_type, data


def resolve_source(source: MediaSource, *, item: str = "media") -> ResolvedSource:
    """Bytes, data URL or path -> ResolvedSource; MediaError for an empty item, a missing file or a URL."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise MediaError("empty data (0 bytes)", item=item)
        return ResolvedSource(data=data, path=None, mime_type=None)
    if isinstance(source, str):
        if source.startswith("data:"):
            mime_type, data = parse_data_url(source, item=item)
            if not data:
                raise MediaError("empty data: URL payload (0 bytes)", item=item)
            return ResolvedSource(data=data, path=None, mime_type=mime_type)
        lowered = source[:8].lower()
        if lowered.startswith(("http://", "https://")):
            raise MediaError("remote URLs are fetched by the API before decoding; pass the bytes", item=item)
        if lowered.startswith("file://"):
            source = urllib.parse.unquote(urllib.parse.urlparse(source).path)
    if not isinstance(source, (str, os.PathLike)):
        raise MediaError(f"unsupported media source type {type(source).__name__}", item=item)
    path = Path(source)
    if not path.is_file():
        raise MediaError(f"file not found: {str(path)!r}", item=item)
    if path.stat().st_size == 0:
        raise MediaError(f"empty file: {str(path)!r}", item=item)
    return ResolvedSource(data=None, path=path, mime_type=None)
