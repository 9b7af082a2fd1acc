"""POST /v1/completions: text (or token id) prompts, no chat template.

In: `CompletionRequest`; several prompts run concurrently, choice index = prompt index * n + sample.
Out: a `text_completion` object, or server-sent `text_completion` chunks ending in `data: [DONE]`.
`echo` puts the prompt in front of the text. A client that hangs up aborts every prompt of the request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from omniserve.api.chat import usage
from omniserve.api.logprobs import LogprobFormatter
from omniserve.api.protocol import CompletionRequest
from omniserve.api.server_state import collect, error_event, get_state, sse

from omniserve.async_omni import RequestStream
from omniserve.outputs import StreamDelta

router = APIRouter()
_DONE = b"data: [DONE]\n\n"


@router.post("/v1/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    state = get_state(request)
    state.check_model(body.model)
    params = body.sampling_params(state.config.max_n)
    prompts = body.prompts()
    request_id = f"cmpl-{uuid.uuid4().hex}"
    streams: list[RequestStream] = []
    try:
        for index, prompt in enumerate(prompts):
            engine_prompt = prompt if isinstance(prompt, str) else {"prompt_token_ids": prompt}
            streams.append(await state.submit(engine_prompt, params, f"{request_id}-p{index}", body.n))
    except BaseException:
        for stream in streams:
            stream.abort()
        raise
    tokenizer = state.omni.tokenizer
    echoes = [(p if isinstance(p, str) else tokenizer.decode(p)) if body.echo else "" for p in prompts]
    formatter = LogprobFormatter(tokenizer) if params.logprobs is not None else None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _stream_events(
            request_id, state.model_name, streams, body.n, echoes, include_usage, formatter
        )
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    results = [await collect(request, stream) for stream in streams]
    if any(result is None for result in results):
        for stream in streams:
            stream.abort()
        return Response(status_code=499)
    choices, completion_tokens, cached = [], 0, 0
    for prompt_index, deltas in enumerate(results):
        assert deltas is not None
        for delta in sorted((d for d in deltas if d.output is not None), key=lambda d: d.index):
            output = delta.output
            assert output is not None
            echo = echoes[prompt_index]
            choices.append(
                {
                    "index": prompt_index * body.n + delta.index,
                    "text": echo + output.text,
                    "logprobs": formatter.completion(output.logprobs, len(echo)) if formatter else None,
                    "finish_reason": output.finish_reason,
                }
            )
            completion_tokens += len(output.token_ids)
            cached += delta.num_cached_tokens
    num_prompt_tokens = sum(stream.num_prompt_tokens for stream in streams)
    return JSONResponse(
        {
            "id": request_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": state.model_name,
            "choices": choices,
            "system_fingerprint": None,
            "usage": usage(num_prompt_tokens, completion_tokens, cached),
        }
    )


async def _merge(streams: list[RequestStream]) -> AsyncIterator[tuple[int, StreamDelta]]:
    """Deltas of several streams as they come, tagged with the stream's position."""
    if len(streams) == 1:
        async for delta in streams[0]:
            yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, StreamDelta | BaseException | None]] = asyncio.Queue()

    async def pump(position: int, stream: RequestStream) -> None:
        try:
            async for delta in stream:
                queue.put_nowait((position, delta))
            queue.put_nowait((position, None))
        except Exception as error:  # noqa: BLE001 - handed to the consumer
            queue.put_nowait((position, error))

    tasks = [asyncio.ensure_future(pump(i, stream)) for i, stream in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            position, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield position, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            stream.abort()


async def _stream_events(
    request_id: str,
    model: str,
    streams: list[RequestStream],
    n: int,
    echoes: list[str],
    include_usage: bool,
    formatter: LogprobFormatter | None,
) -> AsyncIterator[bytes]:
    created = int(time.time())
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None) -> bytes:
        return sse(
            {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                **extra,
                "choices": [
                    {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
                ],
            }
        )

    completion_tokens, cached = 0, 0
    offsets = {}  # choice index -> characters sent so far (for logprobs text_offset)
    try:
        for prompt_index, echo in enumerate(echoes):
            for sample in range(n):
                offsets[prompt_index * n + sample] = len(echo)
                if echo:
                    yield chunk(prompt_index * n + sample, echo, None, None)
        async for prompt_index, delta in _merge(streams):
            completion_tokens += len(delta.token_ids)
            cached += delta.num_cached_tokens if delta.finish_reason else 0
            if not delta.text and delta.finish_reason is None and formatter is None:
                continue
            index = prompt_index * n + delta.index
            logprobs = formatter.completion(delta.logprobs, offsets[index]) if formatter else None
            offsets[index] += len(delta.text)
            yield chunk(index, delta.text, delta.finish_reason, logprobs)
        if include_usage:
            num_prompt_tokens = sum(stream.num_prompt_tokens for stream in streams)
            yield sse(
                {
                    "id": request_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage(num_prompt_tokens, completion_tokens, cached),
                }
            )
    except Exception as error:  # noqa: BLE001 - headers are sent: report in-band
        yield error_event(error)
    finally:
        for stream in streams:
            stream.abort()
    yield _DONE
