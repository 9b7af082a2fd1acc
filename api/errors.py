"""Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx status.

Route code raises `APIError` (or one of the helpers below); the handlers installed by `install_handlers`
turn it, FastAPI's validation errors, unknown routes and unexpected exceptions into that shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("omniserve.api")

_TYPE_BY_STATUS = {
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = (
            error_type
            or _TYPE_BY_STATUS.get(status)
            or ("invalid_request_error" if status < 500 else "server_error")
        )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(404, message, param=param, code=code, error_type="invalid_request_error")


def too_large(message: str, param: str | None = None) -> APIError:
    return APIError(413, message, param=param, code="request_too_large")


def error_body(
    status: int,
    message: str,
    error_type: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    error_type = (
        error_type
        or _TYPE_BY_STATUS.get(status)
        or ("invalid_request_error" if status < 500 else "server_error")
    )
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(
        error_body(error.status, error.message, error.error_type, error.param, error.code),
        status_code=error.status,
        headers=headers,
    )


def _validation_message(error: dict[str, Any]) -> tuple[str, str | None]:
    """One readable line and the OpenAI-style param path ("messages[0].content") from a pydantic error."""
    location = [part for part in error.get("loc", ()) if part != "body"]
    param = ""
    for part in location:
        param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    if error.get("type") == "json_invalid":
        return "the request body is not valid JSON: " + str(error.get("ctx", {}).get("error", "")), None
    if error.get("type") == "missing":
        return f"missing required parameter '{param}'", param or None
    return (
        f"invalid parameter '{param}': {error.get('msg')}" if param else str(error.get("msg"))
    ), param or None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, error: APIError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = list(error.errors())
        message, param = _validation_message(errors[0]) if errors else ("invalid request", None)
        return error_response(bad_request(message, param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(error.status_code)
        return error_response(APIError(error.status_code, str(error.detail), code=code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, f"internal server error: {type(error).__name__}: {error}"))
