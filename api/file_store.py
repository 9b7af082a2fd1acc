"""`FileStore`: uploads on disk, content-addressed, with a per-file and a total size limit and expiry.

    <root>/blobs/<sha256[:2]>/<sha256>   the bytes, written once per distinct content (temp file + rename)
    <root>/records/<file id>.json        one record per upload: name, purpose, size, times, sha256, mime

Two uploads of the same bytes share one blob; a blob is deleted with its last record. Records expire
`ttl_s` after upload and are swept lazily (on every upload and lookup). Methods block on disk I/O: the
API calls them in a worker thread. A lock makes them safe to call from several threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("omniserve.api")


class StorageFull(Exception):
    """Accepting the upload would exceed the total storage limit."""


@dataclass(frozen=True)
class StoredFile:
    id: str  # "file-" + 24 hex digits
    filename: str
    purpose: str
    bytes: int
    created_at: int  # unix seconds
    expires_at: int  # unix seconds
    sha256: str  # content hash: the blob's name, and the cache key of whatever is decoded from it
    mime_type: str

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "mime_type": self.mime_type,
        }


class FileStore:
    def __init__(self, root: Path, max_file_bytes: int, max_total_bytes: int, ttl_s: float) -> None:
        self.root = Path(root)
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "records").mkdir(parents=True, exist_ok=True)
        self._records: dict[str, StoredFile] = {}
        self._load()

    # ----- queries ---------------------------------------------------------------------------------
    @property
    def total_bytes(self) -> int:
        """Bytes of distinct blobs on disk."""
        return sum({record.sha256: record.bytes for record in self._records.values()}.values())

    def blob_path(self, record: StoredFile) -> Path:
        return self.root / "blobs" / record.sha256[:2] / record.sha256

    def get(self, file_id: str) -> StoredFile | None:
        with self._lock:
            self._sweep(time.time())
            return self._records.get(file_id)

    def list(self) -> list[StoredFile]:
        with self._lock:
            self._sweep(time.time())
            return sorted(self._records.values(), key=lambda record: (record.created_at, record.id))

    def read(self, record: StoredFile) -> bytes:
        return self.blob_path(record).read_bytes()

    # ----- changes ----------------------------------------------------------------------------------
    def put(self, data: bytes, filename: str, purpose: str, mime_type: str) -> StoredFile:
        if len(data) > self.max_file_bytes:
            raise ValueError(f"the file has {len(data)} bytes; the limit is {self.max_file_bytes}")
        sha256 = hashlib.sha256(data).hexdigest()
        now = time.time()
        with self._lock:
            self._sweep(now)
            is_new_blob = all(record.sha256 != sha256 for record in self._records.values())
            if is_new_blob and self.total_bytes + len(data) > self.max_total_bytes:
                raise StorageFull(
                    f"file storage is full ({self.total_bytes} of {self.max_total_bytes} bytes "
                    f"used): delete files or wait for them to expire"
                )
            record = StoredFile(
                id="file-" + secrets.token_hex(12),
                filename=filename,
                purpose=purpose,
                bytes=len(data),
                created_at=int(now),
                expires_at=int(now + self.ttl_s),
                sha256=sha256,
                mime_type=mime_type,
            )
            if is_new_blob:
                self._write_atomic(self.blob_path(record), data)
            self._write_atomic(self._record_path(record.id), json.dumps(dataclasses.asdict(record)).encode())
            self._records[record.id] = record
            return record

    def delete(self, file_id: str) -> bool:
        with self._lock:
            return self._delete(file_id)

    # ----- internals ----------------------------------------------------------------------------------
    def _record_path(self, file_id: str) -> Path:
        return self.root / "records" / f"{file_id}.json"

    def _load(self) -> None:
        for path in (self.root / "records").glob("file-*.json"):
            try:
                record = StoredFile(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as error:
                logger.warning("ignoring unreadable file record %s: %s", path, error)
                continue
            if self.blob_path(record).is_file():
                self._records[record.id] = record
        self._sweep(time.time())

    def _sweep(self, now: float) -> None:
        for file_id in [i for i, record in self._records.items() if record.expires_at <= now]:
            self._delete(file_id)

    def _delete(self, file_id: str) -> bool:
        record = self._records.pop(file_id, None)
        if record is None:
            return False
        self._record_path(file_id).unlink(missing_ok=True)
        if all(other.sha256 != record.sha256 for other in self._records.values()):
            self.blob_path(record).unlink(missing_ok=True)
        return True

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
