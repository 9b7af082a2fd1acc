"""Content hashes of media items: equal media and equal preprocessing -> equal hash.

In: a modality, the sources as the caller gave them (bytes, data URL, path, PIL image, array, (samples,
rate)) and a fingerprint of everything that shapes the embedding (preprocessing config, fps, audio in
video). Out: 16 bytes of blake2b.

What is hashed is the content, never the name: a path is hashed by its file's bytes, a data URL by its
decoded payload (so the same file as a path, as bytes or as a data URL hashes equal), an array by dtype,
shape and bytes, a PIL image by mode, size and pixels. Each part is tagged and length-prefixed, so no two
different inputs can give the same byte stream.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
from PIL import Image

from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_source import parse_data_url, resolve_source

DIGEST_SIZE = 16
_FILE_CHUNK = 1 << 20


def _field(hasher: Any, tag: bytes, payload: bytes) -> None:
    hasher.update(tag + len(payload).to_bytes(8, "little") + payload)


def _array(hasher: Any, array: Any) -> None:
    if type(array).__name__ == "Tensor":
        array = array.detach().cpu().numpy()
    array = np.ascontiguousarray(array)
    _field(hasher, b"array", f"{array.dtype.str}{array.shape}".encode())
    _field(hasher, b"data", array.tobytes())


def _encoded(hasher: Any, source: Any, item: str) -> None:
    """Encoded bytes, a data URL or a path: the encoded bytes themselves."""
    if isinstance(source, str) and source.startswith("data:"):
        _field(hasher, b"encoded", parse_data_url(source, item=item)[1])
        return
    resolved = resolve_source(source, item=item)
    if resolved.data is not None:
        _field(hasher, b"encoded", resolved.data)
        return
    assert resolved.path is not None
    hasher.update(b"encoded" + os.path.getsize(resolved.path).to_bytes(8, "little"))
    with open(resolved.path, "rb") as file:
        while chunk := file.read(_FILE_CHUNK):
            hasher.update(chunk)


def hash_source(hasher: Any, source: Any, item: str) -> None:
    """Feed one source into `hasher` (see module doc)."""
    if isinstance(source, Image.Image):
        _field(hasher, b"pil", f"{source.mode}{source.size}".encode())
        _field(hasher, b"data", source.tobytes())
    elif isinstance(source, np.ndarray) or type(source).__name__ == "Tensor":
        _array(hasher, source)
    elif isinstance(source, tuple) and len(source) == 2:  # (samples, sample rate)
        samples, rate = source
        _field(hasher, b"rate", str(rate).encode())
        _array(hasher, np.asarray(samples) if isinstance(samples, list) else samples)
    elif isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):
        _encoded(hasher, source, item)
    else:
        raise MediaError(f"unsupported media source type {type(source).__name__}", item=item)


def content_hash(modality: str, sources: list[Any], fingerprint: str, *, item: str) -> bytes:
    """blake2b-128 over the modality, each source's content and the preprocessing fingerprint."""
    hasher = hashlib.blake2b(digest_size=DIGEST_SIZE)
    _field(hasher, b"modality", modality.encode())
    for source in sources:
        hash_source(hasher, source, item)
    _field(hasher, b"fingerprint", fingerprint.encode())
    return hasher.digest()
