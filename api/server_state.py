"""`ServerState`: what every route needs (the frontend, the settings, the file store), kept on `app.state`.

Also the helpers every generation route shares: model-name check, submitting a request with errors
mapped to the OpenAI shape, collecting a whole result while watching for a client that hangs up, and SSE
framing.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from omniserve.api.chat_content import ChatContentParser
from omniserve.api.errors import APIError, bad_request, not_found
from omniserve.api.file_store import FileStore
from omniserve.api.server_config import ServerConfig

from omniserve.async_omni import AsyncOmni, EngineDeadError, RequestFailedError, RequestStream
from omniserve.frontend.input_processor import PromptType
from omniserve.outputs import StreamDelta
from omniserve.sampling_params import SamplingParams


@dataclass
class ServerState:
    omni: AsyncOmni
    config: ServerConfig
    files: FileStore
    content_parser: ChatContentParser
    model_name: str  # the name /v1/models lists and requests must use
    created: int = field(default_factory=lambda: int(time.time()))

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise not_found(
                f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                "model",
                "model_not_found",
            )

    def check_alive(self) -> None:
        if not self.omni.is_alive:
            raise APIError(
                503, f"the engine is not running: {self.omni.dead_reason or 'it exited'}", code="engine_dead"
            )

    async def submit(
        self, prompt: PromptType, params: SamplingParams, request_id: str, n: int
    ) -> RequestStream:
        """Validate and start; invalid prompts answer 400 with the frontend's message."""
        self.check_alive()
        try:
            return await self.omni.add_request(prompt, params, request_id, n)
        except EngineDeadError as error:
            raise APIError(503, str(error), code="engine_dead") from error
        except ValueError as error:
            raise bad_request(
                str(error), "messages" if isinstance(prompt, dict) and "messages" in prompt else "prompt"
            ) from error


def get_state(request: Request) -> ServerState:
    return request.app.state.server


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def collect(request: Request, stream: RequestStream) -> list[StreamDelta] | None:
    """All deltas of a non-streaming request; None (and the request aborted) when the client hung up."""

    async def drain() -> list[StreamDelta]:
        return [delta async for delta in stream]

    drain_task = asyncio.ensure_future(drain())
    watch_task = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({drain_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch_task.cancel()
        if not drain_task.done():
            drain_task.cancel()
        stream.abort()  # no-op when finished
    if drain_task not in done:
        return None
    try:
        return drain_task.result()
    except EngineDeadError as error:
        raise APIError(503, str(error), code="engine_dead") from error
    except RequestFailedError as error:
        if error.invalid_input:
            raise APIError(400, str(error), code="invalid_media") from error
        raise APIError(500, str(error), code="request_failed") from error


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    text = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    )
    return f"data: {text}\n\n".encode()


def error_event(error: Exception) -> bytes:
    status, code, kind = 500, None, "server_error"
    if isinstance(error, EngineDeadError):
        status, code = 503, "engine_dead"
    elif isinstance(error, RequestFailedError) and error.invalid_input:
        status, code, kind = 400, "invalid_media", "invalid_request_error"
    return sse(
        {
            "error": {
                "message": str(error),
                "type": kind,
                "param": None,
                "code": code,
                "status": status,
            }
        }
    )
