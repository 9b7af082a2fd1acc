"""Opening encoded audio/video with PyAV, with the demuxer chosen from the item's first bytes.

In: a `MediaSource` and the demuxers allowed for the modality. Out: `open_container(...)`, a context
manager yielding an open `av` input container (closed, with its stream, on exit), or `MediaError`.
The demuxer is passed as `format=` so that FFmpeg never probes on its own: probing would let playlist and
concat demuxers (hls, concat, ...) open files or URLs named inside the data. Paths are read through a
Python file object, never handed to FFmpeg's protocol layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import av
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_source import MediaSource, resolve_source

SNIFF_BYTES = 512

# Demuxer names (any one of FFmpeg's comma-separated names selects the demuxer).
AUDIO_CONTAINERS = ("wav", "mp3", "flac", "ogg", "mov", "matroska", "aac")
VIDEO_CONTAINERS = ("mov", "matroska", "avi", "ogg", "mpegts", "flv")


def _is_adts(head: bytes) -> bool:
    """ADTS AAC frame header: 12-bit sync, then layer bits 00."""
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0


def _is_mpeg_audio(head: bytes) -> bool:
    """MPEG audio frame header (mp3, mp2): 11-bit sync, a defined version and a layer other than 00."""
    if len(head) < 4 or head[0] != 0xFF or (head[1] & 0xE0) != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0x3, (head[1] >> 1) & 0x3
    bitrate, sample_rate = head[2] >> 4, (head[2] >> 2) & 0x3
    return version != 1 and layer != 0 and bitrate != 0xF and sample_rate != 0x3


def sniff_container(head: bytes) -> str | None:
    """The demuxer for these leading bytes, or None when the format is not one we decode."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mov"  # mp4, m4a, mov, 3gp
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # mkv, webm
    if head[:3] == b"FLV":
        return "flv"
    if head[:3] == b"ID3":
        return "mp3"  # an ID3v2 tag precedes MPEG audio frames
    if _is_adts(head):
        return "aac"
    if _is_mpeg_audio(head):
        return "mp3"
    if len(head) >= 377 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"  # 188-byte transport packets, each starting with 0x47
    return None


@contextlib.contextmanager
def open_container(
    source: MediaSource, allowed: tuple[str, ...], *, kind: str, item: str
) -> Iterator[av.container.InputContainer]:
    """`with open_container(...) as container:` opens `source` with the demuxer its leading bytes name, if
    that demuxer is in `allowed`, and closes the container and the underlying stream on exit.

    `kind` ("audio", "video") only words the errors. Corrupt headers raise MediaError here; corrupt
    packets surface later, while decoding.
    """
    resolved = resolve_source(source, item=item)
    with resolved.open() as stream:
        demuxer = sniff_container(stream.read(SNIFF_BYTES))
        stream.seek(0)
        if demuxer is None or demuxer not in allowed:
            raise MediaError(f"unsupported or unrecognized {kind} format", item=item)
        try:
            container = av.open(stream, mode="r", format=demuxer, metadata_errors="ignore")
        except (av.FFmpegError, OSError, ValueError, EOFError) as error:
            raise MediaError(f"corrupt or unreadable {kind} data ({error})", item=item) from error
        try:
            yield container
        finally:
            container.close()
