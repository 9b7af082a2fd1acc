"""`ServerConfig`: the HTTP server's settings (the engine's live in `omniserve.config`).

Flags of `omniserve serve` map to these fields one to one (`omniserve.api.serve`); validated in
`__post_init__`, frozen afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MiB = 1024**2


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # interface to bind; 0.0.0.0 for every interface
    port: int = 8000  # TCP port; 0 = any free port
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <api_key>"
    served_model_name: str | None = None  # name clients send as "model"; None = derived from the model
    max_request_bytes: int = 32 * MiB  # JSON request bodies above this answer 413
    max_upload_bytes: int = 256 * MiB  # one uploaded file above this answers 413
    max_storage_bytes: int = 4096 * MiB  # all stored uploads together; a new upload past it answers 507
    file_ttl_s: float = 24 * 3600.0  # uploads expire (and are deleted) this long after upload
    file_storage_dir: Path | None = None  # where uploads live; None = <cache dir>/files
    allow_remote_media: bool = False  # fetch http(s) media URLs in messages (off: only data URLs, file ids)
    remote_media_timeout_s: float = 20.0  # per remote fetch
    max_n: int = 16  # most choices one request may ask for
    log_level: str = "info"  # uvicorn's log level: critical, error, warning, info, debug, trace
    access_log: bool = True  # one uvicorn log line per HTTP request

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty (leave it out to disable authentication)")
        for name in ("max_request_bytes", "max_upload_bytes", "max_storage_bytes", "max_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.file_ttl_s <= 0 or self.remote_media_timeout_s <= 0:
            raise ValueError("file_ttl_s and remote_media_timeout_s must be positive")
        if self.log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ValueError(
                f"log_level must be critical, error, warning, info, debug or trace, got {self.log_level!r}"
            )
        if self.max_upload_bytes > self.max_storage_bytes:
            raise ValueError("max_upload_bytes cannot exceed max_storage_bytes")
