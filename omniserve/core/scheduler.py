"""`Scheduler`: decides, each step, how many tokens every request computes.

One rule: each request is owed `num_tokens - num_computed_tokens` tokens (+ pending ones, see async
scheduling below), and a step pays them out of a token budget (`max_num_batched_tokens`) in this order:
  1. running requests that decode (owe exactly one token),
  2. running requests in the middle of a (chunked) prefill, oldest first,
  3. waiting requests, first come first served, after a prefix-cache lookup.
Once decodes are in, a step that carries D of them holds at most max(`mixed_step_token_budget`, 1.5 D)
tokens (prefill chunks get at least MIN_PREFILL_TOKENS_WITH_DECODES), so a long prompt arriving cannot
stretch the running requests' next token: it prefills over several steps instead of one.
When the pool runs out of pages, the most recently admitted running request that is not yet scheduled in
this step is preempted: its pages are freed and it waits at the front of the queue to be recomputed
(its tokens are kept, so its output does not change). No new request is admitted in a step that preempted.

Media (`encoder_scheduling.py`): a chunk may only cover placeholders whose embedding is in the pool. Before
a chunk is scheduled, every media item it touches is taken from the encoder cache or given fresh embedding
pages and an encoder job: run in-process before this step's forward (within `max_num_encoder_tokens` rows
per step), or submitted to the encoder workers, ahead of need, and ready once they report. An item that is
not ready cuts the chunk just before it; a request cut to nothing waits without holding anyone up. A failed
encoding finishes its request with an error. Embedding pages are released (stay cached) once the prefill
has passed the item.

Async scheduling (the engine schedules and launches step N+1 before it reads step N's tokens): when a step
is scheduled, a request whose chunk reaches its last token will sample one; until `update_from_output`
appends it, that token is pending (`Request.num_pending_tokens`) and owed like a known one, so the next step
computes it (the runner takes its value from the device). Then:
  - a request whose outputs + pending tokens reach `max_tokens` is not scheduled again: its last token is on
    its way;
  - a request that finishes (EOS, stop id, length) on a token also gets a token from the step in flight; that
    one is dropped here (the request is gone) and by the runner (its state is dropped); the KV it wrote lands
    in pages already freed, written in stream order before any later use of them;
  - an abort while a step is in flight frees pages at once; that step's token for it is dropped likewise;
  - preemption: a victim keeps its pending token. The step in flight is read back (its results applied)
    before the next step is scheduled, so the preempted request has its token appended before it can be
    re-admitted (admission waits, as a guard, while the head of the queue has a pending token), and resumes
    with all its tokens, as in sync mode.
Results are matched with the requests each step scheduled (by `step_id`), not by id alone: a request that
finished and an id reused by a new request never take each other's tokens. Sync scheduling is the same code
with at most one pending token between `schedule` and `update_from_output`.

Flows in: `Request`s (add_request), aborts, `EncoderResult`s (workers), and `ModelRunnerOutput`s.
Flows out: a `SchedulerOutput` per step, and `EngineCoreOutput`s for the frontend.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

from omniserve.config import CacheConfig, SchedulerConfig
from omniserve.core.encoder_scheduling import EncoderJobSink, EncoderScheduling
from omniserve.core.messages import EngineCoreOutput
from omniserve.core.page_pool import PagePool
from omniserve.core.scheduler_output import (
    CachedRequestData,
    ModelRunnerOutput,
    NewRequestData,
    SchedulerOutput,
)
from omniserve.multimodal import EncoderInput, MediaPlan
from omniserve.request import Request, RequestStatus
from omniserve.worker.encoder_messages import EncoderResult

MIN_PREFILL_TOKENS_WITH_DECODES = 32  # prefill progress per step however many requests decode


class Scheduler:
    def __init__(
        self,
        scheduler_config: SchedulerConfig,
        cache_config: CacheConfig,
        num_pages: int,
        embedding_rows_per_page: int = 1,
        encoder_sink: EncoderJobSink | None = None,
        max_encoder_jobs_in_flight: int = 16,
        prepare_media: Callable[[MediaPlan], EncoderInput] | None = None,
    ) -> None:
        """`encoder_sink`: None encodes in-process (items prepared with `prepare_media`, jobs in the
        `SchedulerOutput`); else jobs are submitted to it (the encoder worker pool or the side-stream
        encoder) and their results come back through `on_encoder_results`."""
        self.config = scheduler_config
        self.pool = PagePool(num_pages, cache_config.block_size, cache_config.enable_prefix_caching)
        self.media = EncoderScheduling(
            self.pool,
            embedding_rows_per_page,
            scheduler_config.max_num_encoder_tokens,
            encoder_sink,
            max_encoder_jobs_in_flight,
            reserve_pages=self.pool.pages_needed(scheduler_config.max_num_batched_tokens),
            prepare=prepare_media,
        )
        self.requests: dict[str, Request] = {}  # every live (unfinished) request
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # in admission order
        self._dropped: set[str] = set()  # ids whose runner state goes away with the next step
        self._sent_page_counts: dict[str, int] = {}  # request id -> pages the runner knows about
        self._step_ids = itertools.count(1)
        # step id -> the requests that sample a token in that step, until its results are applied
        self._sampling: dict[int, dict[str, Request]] = {}
        self.num_preemptions = 0

    # ----- requests in and out ---------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def abort_requests(self, request_ids: list[str]) -> list[Request]:
        """Abort and free at once; unknown or finished ids are ignored."""
        aborted = []
        for request_id in request_ids:
            request = self.requests.get(request_id)
            if request is not None:
                self._finish(request, RequestStatus.FINISHED_ABORTED)
                aborted.append(request)
        return aborted

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def on_encoder_results(self, results: list[EncoderResult]) -> list[EngineCoreOutput]:
        """Worker reports (and in-process preparation failures): ready items, and, for a failed item, its
        request finished with the error."""
        outputs = []
        for request_id, failure in self.media.on_results(results):
            request = self.requests.get(request_id)
            if request is None:  # another item of it failed already
                continue
            self._finish(request, RequestStatus.FINISHED_ERROR)
            outputs.append(
                EngineCoreOutput(
                    request_id,
                    [],
                    finish_reason="error",
                    error=failure.error,
                    invalid_input=failure.invalid_input,
                )
            )
        return outputs

    def _finish(self, request: Request, status: RequestStatus) -> None:
        request.status = status
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        self.media.let_go(request.request_id)
        self.pool.free(request.request_id)
        self._sent_page_counts.pop(request.request_id, None)
        self._dropped.add(request.request_id)
        del self.requests[request.request_id]

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self.media.let_go(request.request_id)
        self.pool.free(request.request_id)
        self._sent_page_counts.pop(request.request_id, None)
        self._dropped.add(request.request_id)
        request.status = RequestStatus.WAITING
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    # ----- one step --------------------------------------------------------------------------------
    def _chunk(self, request: Request, num_computed: int, budget: int) -> int:
        owed = request.num_tokens + request.num_pending_tokens - num_computed
        cap = self.config.long_prefill_token_threshold
        return min(owed, budget, cap) if cap > 0 else min(owed, budget)

    def _cap_for_decodes(self, budget: int, num_decode_tokens: int) -> int:
        """The budget left for prefill chunks in a step that already carries `num_decode_tokens` decodes."""
        mixed = self.config.mixed_step_token_budget
        if mixed <= 0 or num_decode_tokens == 0:
            return budget
        # a step of many decodes is compute-bound already: there, 1.5x the tokens is ~1.5x its time
        step_tokens = max(mixed, 3 * num_decode_tokens // 2)
        return min(budget, max(step_tokens - num_decode_tokens, MIN_PREFILL_TOKENS_WITH_DECODES))

    def schedule(self) -> SchedulerOutput:
        budget = self.config.max_num_batched_tokens
        scheduled: dict[str, int] = {}
        preempted: list[Request] = []
        self.media.begin_step(self.running)
        num_decode_tokens, capped = 0, False

        # 1 + 2: running requests, decodes before partial prefills (stable: oldest first within each).
        for request in sorted(self.running, key=lambda r: r.num_owed_tokens > 1):
            if request.status != RequestStatus.RUNNING:  # preempted earlier in this loop
                continue
            if request.num_output_tokens + request.num_pending_tokens >= request.max_tokens:
                continue  # async: its last token is in flight, the request finishes with it
            is_decode = request.num_owed_tokens == 1
            if not is_decode and not capped:  # decodes are all in: the rest of the step is prefill
                budget, capped = self._cap_for_decodes(budget, num_decode_tokens), True
            if budget == 0:
                break
            num_new = self._chunk(request, request.num_computed_tokens, budget)
            if request.mm_items:
                num_new = self.media.acquire(request, request.num_computed_tokens, num_new)
                if num_new == 0:  # waits for its encoder (budget of a later step, or a worker)
                    self.media.rollback(request)
                    continue
            while not self.pool.allocate(request, num_new):
                victims = [r for r in self.running if r.request_id not in scheduled and r is not request]
                victim = victims[-1] if victims else request
                self._preempt(victim)
                preempted.append(victim)
                if victim is request:
                    break
            if request.status == RequestStatus.RUNNING:
                scheduled[request.request_id] = num_new
                budget -= num_new
                num_decode_tokens += num_new if is_decode else 0

        # 3: waiting requests, only if nobody was preempted (they would take the pages back at once).
        if not capped:
            budget = self._cap_for_decodes(budget, num_decode_tokens)
        new_request_ids: set[str] = set()
        skipped: list[Request] = []
        while self.waiting and budget > 0 and not preempted and len(self.running) < self.config.max_num_seqs:
            if self.waiting[0].num_pending_tokens:  # preempted with a token in flight: resume it first
                break
            request = self.waiting.popleft()
            prefix = self.pool.find_cached_prefix(request)
            num_cached = len(prefix) * self.pool.block_size
            num_new = self._chunk(request, num_cached, budget)
            if request.mm_items:
                num_new = self.media.acquire(request, num_cached, num_new)
                if num_new == 0:  # its encoder work is not done / does not fit: let the next one in
                    self.media.rollback(request)
                    skipped.append(request)
                    continue
            if not self.pool.allocate(request, num_new, prefix):
                self.media.rollback(request)
                self.waiting.appendleft(request)
                break
            request.status = RequestStatus.RUNNING
            request.num_computed_tokens = num_cached
            if request.num_preemptions == 0:
                request.num_cached_tokens = num_cached
            self.running.append(request)
            scheduled[request.request_id] = num_new
            new_request_ids.add(request.request_id)
            budget -= num_new
        self.waiting.extendleft(reversed(skipped))

        encoder_jobs = self.media.end_step(scheduled)
        return self._make_output(scheduled, new_request_ids, encoder_jobs)

    def _make_output(
        self, scheduled: dict[str, int], new_request_ids: set[str], encoder_jobs: list
    ) -> SchedulerOutput:
        new_requests, cached_requests = [], []
        sampling: dict[str, Request] = {}
        for request_id, num_tokens in scheduled.items():
            request = self.requests[request_id]
            if request_id in new_request_ids:
                page_ids = self.pool.page_ids(request_id)
                new_requests.append(
                    NewRequestData(
                        request_id=request_id,
                        token_ids=request.all_token_ids,
                        num_prompt_tokens=request.num_prompt_tokens,
                        sampling_params=request.sampling_params,
                        eos_token_ids=sorted(request.eos_token_ids),
                        page_ids=page_ids,
                        num_computed_tokens=request.num_computed_tokens,
                        mm_spans=[(item.offset, item.num_tokens) for item in request.mm_items],
                        item_page_ids=self.media.item_pages_to_send(request_id, everything=True),
                        mrope_positions=request.mrope_positions,
                        mrope_delta=request.mrope_delta,
                    )
                )
            else:
                new_page_ids = self.pool.page_ids(request_id, self._sent_page_counts[request_id])
                cached_requests.append(
                    CachedRequestData(
                        request_id,
                        new_page_ids,
                        request.num_computed_tokens,
                        self.media.item_pages_to_send(request_id, everything=False),
                    )
                )
            self._sent_page_counts[request_id] = self.pool.num_request_pages(request_id)
            request.num_computed_tokens += num_tokens  # counts as computed from here on
            if request.num_computed_tokens == request.num_tokens + request.num_pending_tokens:
                request.num_pending_tokens += 1  # the chunk reaches the end: the step samples a token
                sampling[request_id] = request
        # A request dropped and re-admitted in this same step is new to the runner: drop first, then add.
        output = SchedulerOutput(
            new_requests=new_requests,
            cached_requests=cached_requests,
            num_scheduled_tokens=scheduled,
            total_num_scheduled_tokens=sum(scheduled.values()),
            dropped_request_ids=self._dropped,
            encoder_jobs=encoder_jobs,
            step_id=next(self._step_ids),
        )
        self._dropped = set()
        if sampling:
            self._sampling[output.step_id] = sampling
        return output

    def update_from_output(
        self, scheduler_output: SchedulerOutput, runner_output: ModelRunnerOutput
    ) -> list[EngineCoreOutput]:
        """Append sampled tokens, finish requests that stopped, and report to the frontend. A token of a
        request that finished while the step was in flight (aborted, or stopped by the previous step's token)
        is dropped."""
        outputs = []
        sampling = self._sampling.pop(scheduler_output.step_id, {})
        for index, request_id in enumerate(runner_output.request_ids):
            request = sampling.get(request_id)
            if request is None:
                continue
            request.num_pending_tokens -= 1
            if request.is_finished:
                continue
            token_id = runner_output.sampled_token_ids[index]
            status = request.append_output_token(token_id)
            logprob = runner_output.logprobs[index]
            outputs.append(
                EngineCoreOutput(
                    request_id=request_id,
                    new_token_ids=[token_id],
                    new_logprobs=[logprob] if logprob is not None else None,
                    finish_reason=status.finish_reason if status else None,
                    stop_token_id=request.stop_token_id,
                    num_cached_tokens=request.num_cached_tokens,
                )
            )
            if status is not None:
                self._finish(request, status)
        return outputs
