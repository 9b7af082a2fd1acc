"""Pure ASGI middleware that answers before a route reads the body: the API key and request size limits.

- `ApiKeyAuth`: with an API key set, every /v1/* request needs `Authorization: Bearer <key>` (compared in
  constant time); /health and /metrics stay open for probes and scrapers. 401 otherwise.
- `BodySizeLimit`: 413 when Content-Length exceeds the limit; a body without Content-Length (chunked) is
  counted as it arrives and fails with 413 at the limit. Uploads to /v1/files get the upload limit
  (plus room for the multipart framing), everything else the request limit.
"""

from __future__ import annotations

import hmac
import json

from omniserve.api.errors import error_body
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MULTIPART_SLACK = 64 * 1024


async def _send_error(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.expected is not None
            and scope["type"] == "http"
            and scope["path"].startswith("/v1/")
            and scope["method"] != "OPTIONS"
        ):
            given = (_header(scope, b"authorization") or "").strip().encode("latin-1", errors="replace")
            if not hmac.compare_digest(given, self.expected):
                reason = (
                    "missing API key: send 'Authorization: Bearer <key>'"
                    if not given
                    else "incorrect API key"
                )
                await _send_error(send, 401, reason, "invalid_api_key")
                return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds the limit of {limit} bytes")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_request_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit_for(self, scope: Scope) -> int:
        if scope["path"].rstrip("/") == "/v1/files" and scope["method"] == "POST":
            return self.max_upload_bytes + _MULTIPART_SLACK
        return self.max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await _send_error(send, 400, "invalid Content-Length header", "invalid_request")
                return
            if int(length) > limit:
                await _send_error(
                    send,
                    413,
                    f"the request body has {length} bytes; the limit is {limit}",
                    "request_too_large",
                )
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)
