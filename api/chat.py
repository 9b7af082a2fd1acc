"""POST /v1/chat/completions.

In: `ChatCompletionRequest` (JSON). Validation order: model name, sampling values, output modalities,
content parts (a worker thread decodes inline media), input modalities the model accepts, then the
frontend's checks (chat template, context length). Out: a `chat.completion` object, or with `stream=true`
server-sent `chat.completion.chunk` events ending in `data: [DONE]` (one role chunk per choice, then
content deltas, the finish_reason on each choice's last chunk, and a usage chunk with
`stream_options.include_usage`). A client that hangs up aborts the request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from omniserve.api.chat_content import ParsedChat
from omniserve.api.errors import APIError, bad_request
from omniserve.api.logprobs import LogprobFormatter
from omniserve.api.protocol import ChatCompletionRequest
from omniserve.api.server_state import ServerState, collect, error_event, get_state, sse

from omniserve.async_omni import RequestStream
from omniserve.outputs import StreamDelta

router = APIRouter()
_DONE = b"data: [DONE]\n\n"


def _has_parts(messages: list[dict[str, Any]]) -> bool:
    return any(isinstance(message, dict) and isinstance(message.get("content"), list) for message in messages)


async def _parse(state: ServerState, body: ChatCompletionRequest) -> ParsedChat:
    if _has_parts(body.messages):  # parts may hold megabytes of base64 or read uploads: off the loop
        parsed = await asyncio.to_thread(state.content_parser.parse, body.messages)
    else:
        parsed = state.content_parser.parse(body.messages)
    for param, ref in parsed.media:
        if ref.modality not in state.omni.input_modalities:
            accepted = " and ".join(state.omni.input_modalities)
            raise APIError(
                400,
                f"this model accepts {accepted} only: the {ref.modality} part at {param} cannot be used",
                param=param,
                code="unsupported_modality",
            )
    if state.config.allow_remote_media:
        await parsed.fetch_remote_media(state.config.max_upload_bytes, state.config.remote_media_timeout_s)
    return parsed


def usage(num_prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": num_prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": num_prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    state = get_state(request)
    state.check_model(body.model)
    params = body.sampling_params(state.config.max_n)
    if "audio" in body.output_modalities():
        raise bad_request(
            "this model produces text only: audio output needs a model with a speech decoder "
            "(talker); send modalities ['text']",
            "modalities",
        )
    parsed = await _parse(state, body)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    stream = await state.submit(parsed.prompt(), params, request_id, body.n)
    formatter = LogprobFormatter(state.omni.tokenizer) if params.logprobs is not None else None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _stream_events(stream, state.model_name, body.n, include_usage, formatter)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    deltas = await collect(request, stream)
    if deltas is None:
        return Response(status_code=499)  # the client is gone: nobody reads this
    return JSONResponse(
        _completion(request_id, state.model_name, deltas, stream.num_prompt_tokens, formatter)
    )


def _completion(
    request_id: str,
    model: str,
    deltas: list[StreamDelta],
    num_prompt_tokens: int,
    formatter: LogprobFormatter | None,
) -> dict[str, Any]:
    finals = sorted((d for d in deltas if d.output is not None), key=lambda d: d.index)
    choices = []
    for delta in finals:
        output = delta.output
        assert output is not None
        choices.append(
            {
                "index": delta.index,
                "message": {"role": "assistant", "content": output.text},
                "logprobs": formatter.chat(output.logprobs) if formatter else None,
                "finish_reason": output.finish_reason,
            }
        )
    completion_tokens = sum(len(d.output.token_ids) for d in finals if d.output)
    cached = max((d.num_cached_tokens for d in finals), default=0)
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(num_prompt_tokens, completion_tokens, cached),
        "system_fingerprint": None,
    }


async def _stream_events(
    stream: RequestStream, model: str, n: int, include_usage: bool, formatter: LogprobFormatter | None
) -> AsyncIterator[bytes]:
    request_id = stream.request_ids[0].rsplit("-", 1)[0]
    created = int(time.time())
    extra = {"usage": None} if include_usage else {}

    def chunk(choices: list[dict[str, Any]]) -> bytes:
        return sse(
            {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": choices,
                **extra,
            }
        )

    completion_tokens, cached = 0, 0
    try:
        for index in range(n):
            yield chunk(
                [
                    {
                        "index": index,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        async for delta in stream:
            completion_tokens += len(delta.token_ids)
            cached = max(cached, delta.num_cached_tokens)
            if not delta.text and delta.finish_reason is None and formatter is None:
                continue  # text held back (stop-string tail or an incomplete character): nothing to send
            yield chunk(
                [
                    {
                        "index": delta.index,
                        "delta": {"content": delta.text} if delta.text else {},
                        "logprobs": formatter.chat(delta.logprobs) if formatter else None,
                        "finish_reason": delta.finish_reason,
                    }
                ]
            )
        if include_usage:
            yield sse(
                {
                    "id": request_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage(stream.num_prompt_tokens, completion_tokens, cached),
                }
            )
    except Exception as error:  # noqa: BLE001 - headers are sent: report in-band
        yield error_event(error)
    finally:
        stream.abort()  # no-op when finished; frees pages when the client hung up
    yield _DONE
