"""Media references in requests: data URLs, uploaded files and (when allowed) http(s) URLs.

In: the `url` / `data` / `file_id` of a content part. Out: a `MediaRef` that says which modality it is,
where its bytes are, and (for bytes already in hand) their content hash, the key of the encoder and prefix
caches. Bytes are not decoded here (no PIL, no PyAV): decoding belongs to the encoder workers, so that the
API process never blocks on it. `fetch_remote` loads an http(s) URL with a size and time limit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

import httpx

MODALITIES = ("image", "audio", "video")
_AUDIO_FORMAT_MIME = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "m4a": "audio/mp4",
    "webm": "audio/webm",
    "pcm16": "audio/L16",
}


@dataclass(frozen=True)
class MediaRef:
    modality: str  # "image" | "audio" | "video"
    mime_type: str  # from the data URL, the upload, or the sniffed bytes ("application/octet-stream" unknown)
    source: str  # "data_url" | "file" | "url"
    data: bytes | None = None  # the encoded bytes, when they came inline
    path: Path | None = None  # an upload on disk: read there by whoever decodes it
    url: str | None = None  # a remote URL, fetched only once the model accepts this modality
    content_hash: str | None = None  # sha256 hex of the bytes; None until the bytes are known


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_base64(text: str) -> bytes:
    """Strict base64 (standard alphabet, padding optional); ValueError when malformed."""
    cleaned = "".join(text.split())
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"malformed base64 data: {error}") from error


def parse_data_url(url: str) -> tuple[str, bytes]:
    """`data:<mime>[;base64],<payload>` -> (mime type, bytes). ValueError when malformed."""
    if not url.startswith("data:"):
        raise ValueError("not a data URL")
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise ValueError("a data URL needs a ',' between its header and its data")
    fields = header.split(";")
    mime = fields[0].strip().lower() or "text/plain"
    if "base64" not in (f.strip().lower() for f in fields[1:]):
        raise ValueError("only base64 data URLs are supported (data:<mime>;base64,<data>)")
    data = decode_base64(payload)
    if not data:
        raise ValueError("the data URL holds no data")
    return mime, data


def audio_mime(format_name: str) -> str | None:
    return _AUDIO_FORMAT_MIME.get(format_name.lower())


def sniff_mime(data: bytes) -> str | None:
    """The media type of well-known image/audio/video containers, from their first bytes."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head[4:8] == b"ftyp":
        return "audio/mp4" if head[8:11] == b"M4A" else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def modality_of(mime: str) -> str | None:
    kind = mime.split("/", 1)[0]
    return kind if kind in MODALITIES else None


async def fetch_remote(url: str, max_bytes: int, timeout_s: float) -> tuple[str, bytes]:
    """GET an http(s) URL -> (mime type, bytes); ValueError on a bad status, a timeout or too many bytes."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ValueError(f"fetching {url} answered HTTP {response.status_code}")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ValueError(f"{url} is larger than the limit of {max_bytes} bytes")
                    chunks.append(chunk)
                data = b"".join(chunks)
                mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
    except httpx.HTTPError as error:
        raise ValueError(f"cannot fetch {url}: {error}") from error
    return sniff_mime(data) or mime or "application/octet-stream", data
