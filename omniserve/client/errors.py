"""`OmniServeError`: an error answered by the server (OpenAI error shape), or a stream that reported one."""

from __future__ import annotations

import json
from typing import Any

import httpx


class OmniServeError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"[{status_code}] {message}" + (f" (param: {param})" if param else ""))
        self.status_code = status_code  # HTTP status; for an error inside a stream, the status it reports
        self.message = message  # the server's message
        self.type = error_type
        self.param = param  # the offending request field, e.g. "messages[0].content[1]"
        self.code = code

    @classmethod
    def from_body(cls, status_code: int, body: Any) -> OmniServeError:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(status_code, str(body)[:1000] or f"HTTP {status_code}")
        return cls(
            error.get("status", status_code),
            str(error.get("message")),
            error.get("type"),
            error.get("param"),
            error.get("code"),
        )


def raise_for_error(response: httpx.Response) -> None:
    """Raise `OmniServeError` for a 4xx/5xx response whose body is already read."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = response.text
    raise OmniServeError.from_body(response.status_code, body)
