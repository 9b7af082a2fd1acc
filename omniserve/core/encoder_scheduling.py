"""`EncoderScheduling`: the scheduler's media bookkeeping (which items have their embedding rows in the pool).

A prefill chunk may only cover placeholders whose rows are in the pool. `acquire` is asked, for a chunk
[start, start + n) of a request, how much of it is covered, and takes what the chunk needs:

    item state:   not held --take_embedding--> cached hit ............................ ready
                                           \\-> fresh pages + job --(encoder reports)--> ready (published)
                                                                  \\-(fails)-----------> request aborted

Two encoder backends, same bookkeeping:
- in-process (`sink` None): the item is decoded and preprocessed here (`prepare`, in the engine loop: the
  debugging mode), and its job rides in this step's `SchedulerOutput` and runs before the forward, so an
  item is ready the step it is taken; at most `max_num_encoder_tokens` rows per step (a bigger item runs in
  a step of its own); pages are published when the step commits (`end_step`). An item whose media fail to
  prepare gives its pages back and fails its request (reported with the next `on_results`).
- workers (`sink` = the engine's `EncoderPool`): jobs are submitted at once, and ahead: when a chunk of a
  request is considered, every item of it not yet held is submitted too (within
  `max_encoder_jobs_in_flight`, and, for items beyond the chunk, only while `reserve_pages` stay free for
  KV). An item is ready when its job reports done (`on_results`); only then are its pages published in the
  encoder cache. A chunk is cut just before its first item that is not ready (the request waits, others run).

Pages of a job in flight are never freed under a worker: when its request finishes or is preempted, they
become the job's own (orphans) and are released, published if the job succeeded, when it reports.
`item_pages_to_send` hands the runner each held item's pages once per admission.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from omniserve.core.page_pool import Page, PagePool
from omniserve.core.scheduler_output import EncoderJob
from omniserve.encoders.media_errors import MediaError
from omniserve.multimodal import EncoderInput, MediaItem, MediaPlan
from omniserve.request import Request
from omniserve.worker.encoder_messages import EncoderResult


class EncoderJobSink(Protocol):
    """Where worker-mode jobs go. `submit` must not block on the encoder; every submitted job id comes
    back exactly once in an `EncoderResult` passed to `EncoderScheduling.on_results`."""

    def submit(self, job_id: int, job: EncoderJob) -> None: ...


@dataclass
class _InFlight:
    request_id: str
    item_index: int
    content_hash: bytes
    orphan_pages: list[Page] | None = None  # the request let go: the job owns the pages until it reports


class EncoderScheduling:
    def __init__(
        self,
        pool: PagePool,
        rows_per_page: int,
        max_encoder_tokens: int,
        sink: EncoderJobSink | None = None,
        max_in_flight: int = 16,
        reserve_pages: int = 0,
        prepare: Callable[[MediaPlan], EncoderInput] | None = None,
    ) -> None:
        self.pool = pool
        self.rows_per_page = rows_per_page
        self.max_encoder_tokens = max_encoder_tokens  # in-process: rows encoded per step
        self.sink = sink
        self.max_in_flight = max_in_flight  # workers: jobs not reported yet
        self.reserve_pages = reserve_pages  # workers: free pages encode-ahead leaves for KV
        self.prepare = prepare  # in-process: MediaPreparer.prepare (decode + preprocess)
        self._prepare_failures: list[tuple[str, EncoderResult]] = []  # in-process: (request id, failure)
        self._job_ids = itertools.count()
        self._in_flight: dict[int, _InFlight] = {}  # job id -> what it encodes
        self._pending: dict[tuple[str, int], int] = {}  # (request id, item index) -> job id
        self._sent: dict[str, set[int]] = {}  # request id -> item indices whose pages the runner has
        # In-process, this step only:
        self._budget = max_encoder_tokens
        self._encoded_any = False
        self._step_jobs: list[tuple[EncoderJob, bytes]] = []  # with the item's content hash
        self._taken: dict[str, list[int]] = {}  # request id -> items taken this step (for rollback)

    @property
    def num_in_flight(self) -> int:
        return len(self._in_flight)

    # ----- one step --------------------------------------------------------------------------------
    def begin_step(self, running: list[Request]) -> None:
        """Release the rows of items every running request's prefill has passed (they stay cached)."""
        self._budget, self._encoded_any, self._step_jobs, self._taken = self.max_encoder_tokens, False, [], {}
        for request in running:
            for index in list(self.pool.held_embeddings(request.request_id)):
                if request.mm_items[index].end <= request.num_computed_tokens:
                    self.pool.release_embedding(request.request_id, index)

    def acquire(self, request: Request, start: int, num_new: int) -> int:
        """Take the rows of every item the chunk [start, start + num_new) touches (workers: and submit the
        request's later items ahead); return the length of the chunk that is covered by ready items."""
        end, covered = start + num_new, num_new
        for index, item in enumerate(request.mm_items):
            if item.end <= start:
                continue
            in_chunk = item.offset < end
            if self.sink is None and not in_chunk:
                break  # in-process encodes only what this chunk needs; items are in prompt order
            if not self._ensure(request, index, item, in_chunk) and in_chunk:
                covered = min(covered, max(item.offset - start, 0))
                if self.sink is None:
                    break
        return covered

    def _ensure(self, request: Request, index: int, item: MediaItem, in_chunk: bool) -> bool:
        """Hold the item's pages (cached, or fresh with a job); True when its rows are ready for this step."""
        request_id = request.request_id
        if index in self.pool.held_embeddings(request_id):
            return (request_id, index) not in self._pending
        num_pages = -(-item.num_tokens // self.rows_per_page)
        if self.sink is None:
            may_encode = item.num_tokens <= self._budget or not self._encoded_any
        else:
            may_encode = len(self._in_flight) < self.max_in_flight and (
                in_chunk or self.pool.num_free_pages - num_pages >= self.reserve_pages
            )
        taken = self.pool.take_embedding(request_id, index, item.content_hash, num_pages, may_encode)
        if taken is None:
            return False
        page_ids, cached = taken
        self._taken.setdefault(request_id, []).append(index)
        if cached:
            return True
        job = EncoderJob(request_id, index, item.plan, page_ids, item.num_tokens)
        if self.sink is None:  # runs before this step's forward
            if self.prepare is None:
                raise RuntimeError("in-process encoding needs a prepare function")
            try:
                job.encoder_input = self.prepare(item.plan)
            except Exception as error:  # noqa: BLE001 - bad media fail their request, not the engine
                self.pool.release_embedding(request_id, index)
                self._taken[request_id].remove(index)
                failure = EncoderResult(-1, f"encoding failed: {error}", isinstance(error, MediaError))
                self._prepare_failures.append((request_id, failure))
                return False
            self._step_jobs.append((job, item.content_hash))
            self._budget -= item.num_tokens
            self._encoded_any = True
            return True
        job_id = next(self._job_ids)
        self._in_flight[job_id] = _InFlight(request_id, index, item.content_hash)
        self._pending[(request_id, index)] = job_id
        self.sink.submit(job_id, job)
        return False

    def rollback(self, request: Request) -> None:
        """The request is not scheduled this step after all: in-process, give back what it took this step
        (its jobs do not run). Workers keep what they took: submitted jobs run anyway, rows stay useful."""
        if self.sink is not None:
            return
        for index in self._taken.pop(request.request_id, []):
            self.pool.release_embedding(request.request_id, index)
        self._step_jobs = [entry for entry in self._step_jobs if entry[0].request_id != request.request_id]

    def end_step(self, scheduled: dict[str, int]) -> list[EncoderJob]:
        """In-process: the jobs of requests scheduled this step (those preempted after taking drop theirs),
        published now since they run before anyone reads them. Workers: nothing (already submitted)."""
        jobs = [(job, content_hash) for job, content_hash in self._step_jobs if job.request_id in scheduled]
        for job, content_hash in jobs:
            self.pool.publish_embedding(job.request_id, job.item_index, content_hash)
        self._step_jobs = []
        return [job for job, _ in jobs]

    def item_pages_to_send(self, request_id: str, everything: bool) -> dict[int, list[int]]:
        """Held items' pages the runner does not have yet (`everything`: a (re)admitted request)."""
        sent = set() if everything else self._sent.setdefault(request_id, set())
        held = self.pool.held_embeddings(request_id)
        new = {index: [page.page_id for page in pages] for index, pages in held.items() if index not in sent}
        self._sent[request_id] = sent | set(new)
        return new

    # ----- requests leaving, results arriving ------------------------------------------------------
    def let_go(self, request_id: str) -> None:
        """Before the request's pages are freed (finish, abort, preemption): pages still being written by a
        worker become its job's own."""
        for (owner, index), job_id in list(self._pending.items()):
            if owner == request_id:
                del self._pending[(owner, index)]
                self._in_flight[job_id].orphan_pages = self.pool.detach_embedding(owner, index)
        self._sent.pop(request_id, None)
        self._taken.pop(request_id, None)

    def on_results(self, results: list[EncoderResult]) -> list[tuple[str, EncoderResult]]:
        """Apply worker reports: done items become ready and are published in the encoder cache. Returns
        (request id, failed result) for each failed item of a live request (the scheduler aborts it),
        in-process preparation failures included."""
        failures, self._prepare_failures = self._prepare_failures, []
        for result in results:
            record = self._in_flight.pop(result.job_id, None)
            if record is None:
                continue
            if record.orphan_pages is not None:
                if result.error is None:
                    self.pool.publish_pages(record.orphan_pages, record.content_hash)
                self.pool.release_pages(record.orphan_pages)
                continue
            del self._pending[(record.request_id, record.item_index)]
            if result.error is None:
                self.pool.publish_embedding(record.request_id, record.item_index, record.content_hash)
            else:
                failures.append((record.request_id, result))
        return failures
