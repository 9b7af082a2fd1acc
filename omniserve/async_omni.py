"""`AsyncOmni`: the asynchronous frontend the API server runs on, with the engine core in its own process.

    async for delta in async_omni.generate({"messages": [...]}, SamplingParams(), "chatcmpl-1", n=2):
        ...  # StreamDelta: index (choice), text, token_ids, finish_reason on the last one

Flow: InputProcessor (tokenize, validate, load media; in a pool of INPUT_THREADS worker threads, so a
prompt whose video takes a second to decode does not hold up the prompts behind it) -> `AddRequest` to the
engine process ->
`StepOutputs` read by a reader thread -> OutputProcessor on the event loop (detokenize, stop strings) ->
one asyncio queue per request (`RequestStream`). `add_request` validates before returning, so an HTTP
handler can answer 400 before it starts a stream. Closing or cancelling the stream (a client that
disconnects) aborts what is still running, so its pages are freed at once. n > 1 fans out into n engine
requests `{request_id}-{i}`; the prefix cache lets them share the prompt's pages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from omniserve.config import EngineConfig
from omniserve.core.engine_process import EngineProcessClient
from omniserve.core.engine_process_messages import (
    AbortRequests,
    AddRequest,
    EngineEvent,
    EngineFailed,
    StatsQuery,
    StatsReply,
    StepOutputs,
)
from omniserve.core.messages import EngineCoreRequest, EngineStats
from omniserve.frontend.input_processor import InputProcessor, ProcessedPrompt, PromptType
from omniserve.frontend.media_store import MediaLease
from omniserve.frontend.multimodal_processor import build_multimodal_processor
from omniserve.frontend.output_processor import OutputProcessor
from omniserve.metrics import ServingMetrics
from omniserve.omni import load_tokenizer
from omniserve.outputs import StreamDelta
from omniserve.sampling_params import SamplingParams

logger = logging.getLogger("omniserve")
INPUT_THREADS = 4  # prompts processed at once (media decode and preprocessing release the GIL)


class EngineDeadError(RuntimeError):
    """The engine process failed or exited; no request can be served any more."""


class RequestRejectedError(ValueError):
    """The engine refused a request at admission (its message says why)."""


class RequestFailedError(RuntimeError):
    """The engine could not serve this request (e.g. its media failed to encode); others are unaffected.
    `invalid_input`: the request's media is unusable (corrupt data found while decoding it), the caller's
    fault, not the server's."""

    def __init__(self, message: str, invalid_input: bool = False) -> None:
        super().__init__(message)
        self.invalid_input = invalid_input


class RequestStream:
    """The deltas of one submitted request (all n samples), as an async iterator.

    Finishing, `abort()`, cancellation while waiting (a disconnected client), an engine error and garbage
    collection all free whatever still runs in the engine; `abort()` is idempotent and synchronous (safe in
    `finally` blocks of cancelled tasks, where awaiting is not).
    """

    def __init__(self, owner: AsyncOmni, request_ids: list[str], queue: asyncio.Queue) -> None:
        self.request_ids = request_ids
        self.num_prompt_tokens = 0  # set by the owner once the prompt is tokenized
        self._owner = owner
        self._queue = queue
        self._pending = set(request_ids)  # engine request ids not finished yet
        loop = owner._loop
        assert loop is not None
        # If the stream is dropped unfinished, abort from the loop thread (GC may run anywhere).
        self._finalizer = weakref.finalize(self, _abort_later, loop, owner, self._pending)

    @property
    def finished(self) -> bool:
        return not self._pending

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> StreamDelta:
        if not self._pending:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except BaseException:  # cancelled: the consumer is gone
            self.abort()
            raise
        if isinstance(item, Exception):
            self.abort()
            raise item
        if item.finish_reason is not None:
            self._pending.discard(item.request_id)
            if not self._pending:
                self._owner._release(self.request_ids)
        return item

    def abort(self) -> None:
        if self._pending:
            self._owner._abort(sorted(self._pending))
            self._pending.clear()
        self._owner._release(self.request_ids)


def _abort_later(loop: asyncio.AbstractEventLoop, owner: AsyncOmni, pending: set[str]) -> None:
    if pending and not loop.is_closed():
        request_ids = sorted(pending)
        pending.clear()
        try:
            loop.call_soon_threadsafe(owner._abort, request_ids)
            loop.call_soon_threadsafe(owner._release, request_ids)
        except RuntimeError:  # the loop closed meanwhile
            pass


class AsyncOmni:
    def __init__(
        self, model: str | None = None, *, startup_timeout_s: float = 900.0, **engine_options: Any
    ) -> None:
        """Starts the engine process and blocks until it is ready; raises `EngineStartupError` when it
        cannot start. `engine_options` are the flat `EngineConfig` fields, as for `Omni`."""
        self.config = EngineConfig.from_kwargs(model=model, **engine_options)
        self.engine = EngineProcessClient(self.config, startup_timeout_s)
        self.info = self.engine.info
        self.tokenizer = load_tokenizer(self.info.model_path)
        mm = build_multimodal_processor(self.info.model_path, self.tokenizer)
        self._modalities = ("text", *mm.family.modalities) if mm is not None else ("text",)
        self.input_processor = InputProcessor(self.tokenizer, self.info, mm)
        self.output_processor = OutputProcessor(self.tokenizer)
        self.metrics = ServingMetrics()
        self.dead_reason: str | None = None
        self._closing = False  # shutdown() started: the engine exiting is expected
        self._queues: dict[str, asyncio.Queue] = {}  # engine request id -> queue of the stream it feeds
        self._media_store = mm.store if mm is not None else None
        self._leases: dict[str, MediaLease] = {}  # engine request id -> its prompt's stored media
        self._stats_waiters: dict[int, asyncio.Future[EngineStats]] = {}
        self._query_ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=INPUT_THREADS, thread_name_prefix="omniserve-input")
        self._reader = threading.Thread(target=self._read_events, name="omniserve-engine-reader", daemon=True)
        self._reader.start()

    # ----- public API -------------------------------------------------------------------------------------
    @property
    def input_modalities(self) -> tuple[str, ...]:
        """What prompts may contain ("text", plus the media the checkpoint's encoders take); the API answers
        400 for other media parts before submitting them."""
        return self._modalities

    @property
    def is_alive(self) -> bool:
        return self.dead_reason is None and self.engine.is_alive()

    async def add_request(
        self, prompt: PromptType, params: SamplingParams, request_id: str, n: int = 1
    ) -> RequestStream:
        """Validate and submit; the returned stream yields the deltas of the n samples (`delta.index` =
        sample). Raises ValueError for an invalid prompt or parameters, before anything runs."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        loop = self._bind_loop()
        self._check_alive()
        arrival = time.monotonic()
        requests, processed = await loop.run_in_executor(
            self._executor, self._process, request_id, prompt, params, n
        )
        in_use = [request.request_id for request in requests if request.request_id in self._queues]
        if in_use or self.dead_reason is not None:
            if processed.media_lease is not None:
                self._media_store.release(processed.media_lease)
            self._check_alive()
            raise ValueError(f"request id {in_use[0]!r} is already in use")
        if processed.media_lease is not None:  # the store's files live until every sample is done
            processed.media_lease.users = len(requests)
            for request in requests:
                self._leases[request.request_id] = processed.media_lease
        queue: asyncio.Queue[StreamDelta | Exception] = asyncio.Queue()
        stream = RequestStream(self, [request.request_id for request in requests], queue)
        stream.num_prompt_tokens = len(processed.prompt_token_ids)
        for index, request in enumerate(requests):
            self.output_processor.add_request(request.request_id, index, processed, request.sampling_params)
            self._queues[request.request_id] = queue
            self.metrics.on_arrival(request.request_id, len(processed.prompt_token_ids), arrival)
        self.engine.send(AddRequest(requests))
        return stream

    async def generate(
        self, prompt: PromptType, params: SamplingParams, request_id: str, n: int = 1
    ) -> AsyncIterator[StreamDelta]:
        """`add_request` + iterate; closing or cancelling this generator aborts what still runs."""
        stream = await self.add_request(prompt, params, request_id, n)
        try:
            async for delta in stream:
                yield delta
        finally:
            stream.abort()

    async def stats(self, timeout_s: float = 30.0) -> EngineStats:
        """A fresh snapshot from the engine process (answered between two steps)."""
        loop = self._bind_loop()
        self._check_alive()
        query_id = next(self._query_ids)
        future: asyncio.Future[EngineStats] = loop.create_future()
        self._stats_waiters[query_id] = future
        try:
            self.engine.send(StatsQuery(query_id))
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._stats_waiters.pop(query_id, None)

    def shutdown(self) -> None:
        self._closing = True
        self.engine.shutdown()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._media_store is not None:
            self._media_store.close()  # its folder goes too (also at exit, for an engine never shut down)

    # ----- internals ----------------------------------------------------------------------------------------
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("AsyncOmni is bound to one event loop; it was used from another")
        return loop

    def _check_alive(self) -> None:
        if self.dead_reason is not None:
            raise EngineDeadError(f"the engine is not running: {self.dead_reason}")

    def _process(
        self, request_id: str, prompt: PromptType, params: SamplingParams, n: int
    ) -> tuple[list[EngineCoreRequest], ProcessedPrompt]:
        """Worker thread: tokenize and validate once, then fan out n engine requests."""
        request, processed = self.input_processor.process(request_id, prompt, params)
        requests = []
        for index in range(n):
            sample_params = params
            if n > 1 and params.seed is not None:  # same seed for all n would give n identical samples
                sample_params = dataclasses.replace(params, seed=params.seed + index)
            requests.append(
                dataclasses.replace(
                    request, request_id=f"{request_id}-{index}", sampling_params=sample_params
                )
            )
        return requests, processed

    def _abort(self, request_ids: list[str]) -> None:
        """Synchronous on purpose: it runs in `finally` blocks of cancelled tasks, where awaits are unsafe."""
        for request_id in request_ids:
            self.output_processor.abort(request_id)
            self.metrics.on_abort(request_id)
        if self.dead_reason is None:
            try:
                self.engine.send(AbortRequests(request_ids))
            except OSError:
                pass

    def _release(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self._queues.pop(request_id, None)
            lease = self._leases.pop(request_id, None)
            if lease is not None:
                self._media_store.release(lease)

    def _read_events(self) -> None:
        """Reader thread: hand every engine event to the event loop, in order."""
        while True:
            try:
                event: EngineEvent = self.engine.recv()
            except (EOFError, OSError):
                event = EngineFailed("the engine process exited", "")
            loop = self._loop
            if loop is None or loop.is_closed():
                if isinstance(event, EngineFailed):
                    self.dead_reason = event.message
            else:
                try:
                    loop.call_soon_threadsafe(self._on_event, event)
                except RuntimeError:  # loop closed meanwhile
                    self.dead_reason = self.dead_reason or "the event loop closed"
            if isinstance(event, EngineFailed):
                return

    def _on_event(self, event: EngineEvent) -> None:
        """Event loop thread: route outputs to their streams."""
        if isinstance(event, StepOutputs):
            self._on_step(event)
        elif isinstance(event, StatsReply):
            future = self._stats_waiters.get(event.query_id)
            if future is not None and not future.done():
                future.set_result(event.stats)
        elif isinstance(event, EngineFailed):
            self._on_engine_failed(event)

    def _on_step(self, event: StepOutputs) -> None:
        deltas, stopped = self.output_processor.process(event.outputs)
        if stopped:  # a stop string matched: the engine still runs them, free their pages now
            self.engine.send(AbortRequests(stopped))
        now = time.monotonic()
        for delta in deltas:
            self.metrics.on_delta(delta, now)
            queue = self._queues.get(delta.request_id)
            if queue is not None:
                queue.put_nowait(
                    RequestFailedError(delta.error, delta.invalid_input) if delta.error else delta
                )
        for request_id, reason in event.rejected:
            self.output_processor.abort(request_id)
            self.metrics.on_abort(request_id)
            queue = self._queues.get(request_id)
            if queue is not None:
                queue.put_nowait(RequestRejectedError(reason))

    def _on_engine_failed(self, event: EngineFailed) -> None:
        if self.dead_reason is None:
            self.dead_reason = event.message
            if self._closing:
                pass
            elif event.traceback:
                logger.error("engine process failed:\n%s", event.traceback)
            else:
                logger.error("engine process failed: %s", event.message)
        error = EngineDeadError(f"the engine is not running: {self.dead_reason}")
        for queue in {id(q): q for q in self._queues.values()}.values():
            queue.put_nowait(error)
        for future in self._stats_waiters.values():
            if not future.done():
                future.set_exception(error)
