"""Scheduler with encoder workers (a fake pool): items are ready only when their job reports done."""

from __future__ import annotations

import hashlib

from factories import fake_runner_output, make_request

from omniserve.config import CacheConfig, SchedulerConfig
from omniserve.core.page_pool import embedding_key
from omniserve.core.scheduler import Scheduler
from omniserve.core.scheduler_output import EncoderJob
from omniserve.multimodal import MediaItem, MediaPlan, StoredMedia
from omniserve.worker.encoder_messages import EncoderResult

ROWS_PER_PAGE = 4


class FakeEncoderPool:
    """Records submitted jobs; the test decides when (and how) each one reports."""

    def __init__(self) -> None:
        self.jobs: dict[int, EncoderJob] = {}
        self.reported: set[int] = set()

    def submit(self, job_id: int, job: EncoderJob) -> None:
        self.jobs[job_id] = job

    def job_id(self, request_id: str, item_index: int = 0) -> int:
        (job_id,) = [
            i for i, j in self.jobs.items() if (j.request_id, j.item_index) == (request_id, item_index)
        ]
        return job_id

    def report(self, scheduler: Scheduler, request_id: str, item_index: int = 0, error: str | None = None):
        job_id = self.job_id(request_id, item_index)
        self.reported.add(job_id)
        return scheduler.on_encoder_results([EncoderResult(job_id, error)])

    @property
    def in_flight(self) -> list[tuple[str, int]]:
        return [(j.request_id, j.item_index) for i, j in self.jobs.items() if i not in self.reported]


def item(offset: int, num_tokens: int, content: bytes = b"cat.png") -> MediaItem:
    plan = MediaPlan("image", StoredMedia(f"/store/{content.decode()}", "encoded"), "image 0", num_tokens)
    return MediaItem("image", hashlib.blake2b(content, digest_size=16).digest(), offset, num_tokens, plan)


def media_request(prompt_len: int, items: list[MediaItem], max_tokens: int = 2):
    request = make_request(num_prompt_tokens=prompt_len, max_tokens=max_tokens)
    request.mm_items = items
    return request


def scheduler(
    budget: int = 64, num_pages: int = 64, max_in_flight: int = 16
) -> tuple[Scheduler, FakeEncoderPool]:
    encoders = FakeEncoderPool()
    s = Scheduler(
        SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=8),
        CacheConfig(block_size=4),
        num_pages,
        ROWS_PER_PAGE,
        encoder_sink=encoders,
        max_encoder_jobs_in_flight=max_in_flight,
    )
    return s, encoders


def step(s: Scheduler):
    output = s.schedule()
    s.update_from_output(output, fake_runner_output(s, output))
    return output


def is_published(s: Scheduler, media: MediaItem) -> bool:
    return embedding_key(media.content_hash, 0) in s.pool.cached_pages


def test_chunk_is_cut_before_a_pending_item_and_continues_once_it_is_done() -> None:
    s, encoders = scheduler()
    image = item(4, 8)
    request = media_request(20, [image])
    s.add_request(request)
    first = step(s)
    assert first.encoder_jobs == []  # nothing runs in the engine process
    assert encoders.in_flight == [(request.request_id, 0)]
    assert first.num_scheduled_tokens == {request.request_id: 4}  # cut just before the item
    assert first.new_requests[0].item_page_ids == {0: encoders.jobs[0].page_ids}
    assert step(s).num_scheduled_tokens == {}  # still pending: the request waits
    assert encoders.report(s, request.request_id) == []
    third = step(s)
    assert third.num_scheduled_tokens == {request.request_id: 16}
    assert len(encoders.jobs) == 1  # encoded once


def test_other_requests_run_while_one_waits_on_its_encoder() -> None:
    s, encoders = scheduler()
    waiting = media_request(20, [item(0, 8)])  # its first chunk is all placeholder: cannot start
    plain = make_request(prompt=[7, 8, 9, 10, 11, 12], max_tokens=3)
    s.add_request(waiting)
    s.add_request(plain)
    for _ in range(3):
        output = step(s)
        assert waiting.request_id not in output.num_scheduled_tokens
        assert plain.request_id in output.num_scheduled_tokens
    assert plain.request_id not in s.requests  # finished (3 tokens) while the other still waits
    encoders.report(s, waiting.request_id)
    assert step(s).num_scheduled_tokens == {waiting.request_id: 20}


def test_all_items_of_a_request_are_submitted_ahead_within_the_in_flight_limit() -> None:
    s, encoders = scheduler(budget=8, max_in_flight=2)
    request = media_request(40, [item(2, 4, b"a"), item(12, 4, b"b"), item(24, 4, b"c")])
    s.add_request(request)
    step(s)  # the chunk [0, 8) touches item 0 only; item 1 goes ahead, item 2 waits for a free slot
    assert encoders.in_flight == [(request.request_id, 0), (request.request_id, 1)]
    encoders.report(s, request.request_id, 0)
    step(s)
    assert (request.request_id, 2) in encoders.in_flight


def test_pages_are_published_in_the_encoder_cache_only_after_done() -> None:
    s, encoders = scheduler()
    image = item(2, 8, b"same")
    first = media_request(20, [image], max_tokens=1)
    s.add_request(first)
    step(s)
    assert not is_published(s, image)
    encoders.report(s, first.request_id)
    assert is_published(s, image)
    again = media_request(20, [item(2, 8, b"same")], max_tokens=1)
    again.prompt_token_ids = [5] + list(first.prompt_token_ids[1:])  # no prefix hit: the item is looked up
    s.add_request(again)
    output = step(s)
    assert s.pool.encoder_cache_hits == 1 and len(encoders.jobs) == 1
    assert output.num_scheduled_tokens[again.request_id] == 20


def test_a_failed_item_finishes_only_its_request_with_the_error() -> None:
    s, encoders = scheduler()
    doomed = media_request(20, [item(2, 8, b"bad")])
    fine = media_request(20, [item(2, 8, b"good")])
    s.add_request(doomed)
    s.add_request(fine)
    step(s)
    outputs = encoders.report(s, doomed.request_id, error="encoding failed: ValueError: broken image")
    assert [(o.request_id, o.finish_reason, o.error) for o in outputs] == [
        (doomed.request_id, "error", "encoding failed: ValueError: broken image")
    ]
    assert doomed.request_id not in s.requests and s.pool.held_embeddings(doomed.request_id) == {}
    assert not is_published(s, doomed.mm_items[0])
    encoders.report(s, fine.request_id)
    step(s)
    step(s)
    assert fine.request_id not in s.requests  # ran to the end (2 tokens)


def test_pages_of_a_job_in_flight_outlive_an_abort_until_the_worker_reports() -> None:
    s, encoders = scheduler(num_pages=32)
    image = item(0, 8, b"slow")
    request = media_request(20, [image])
    s.add_request(request)
    step(s)
    job_pages = encoders.jobs[0].page_ids
    s.abort_requests([request.request_id])
    assert s.pool.num_free_pages == 32 - len(job_pages)  # the worker may still be writing them
    assert not set(job_pages) & set(s.pool.free_queue)
    encoders.report(s, request.request_id)  # done after all: kept in the encoder cache, freed
    assert s.pool.num_free_pages == 32 and is_published(s, image)


def test_the_frontend_sees_the_error_as_the_requests_finish() -> None:
    from omniserve.core.messages import EngineCoreOutput
    from omniserve.demo import build_tokenizer
    from omniserve.frontend.input_processor import ProcessedPrompt
    from omniserve.frontend.output_processor import OutputProcessor
    from omniserve.sampling_params import SamplingParams

    processor = OutputProcessor(build_tokenizer())
    processor.add_request("r", 0, ProcessedPrompt(None, [1, 2, 3]), SamplingParams())
    error = "encoding failed: vision encoder worker 0 (pid 7) died (exit code -9)"
    (delta,), stopped = processor.process([EngineCoreOutput("r", [], finish_reason="error", error=error)])
    assert stopped == [] and delta.finish_reason == "error" and delta.error == error
    assert delta.output is not None and delta.output.error == error and delta.output.finish_reason == "error"
