"""Scheduler + page pool with media items: encoder jobs, budget, encoder cache, release, prefix hashes."""

from __future__ import annotations

import hashlib

from factories import fake_runner_output, make_request
from omniserve.encoders.media_errors import MediaError

from omniserve.config import CacheConfig, SchedulerConfig
from omniserve.core.scheduler import Scheduler
from omniserve.multimodal import EncoderInput, MediaItem, MediaPlan, StoredMedia

ROWS_PER_PAGE = 4


def item(offset: int, num_tokens: int, content: bytes = b"cat.png") -> MediaItem:
    plan = MediaPlan("image", StoredMedia(f"/store/{content.decode()}", "encoded"), "image 0", num_tokens)
    return MediaItem("image", hashlib.blake2b(content, digest_size=16).digest(), offset, num_tokens, plan)


def prepare(plan: MediaPlan) -> EncoderInput:
    """Stands in for MediaPreparer: "broken" sources are unusable media."""
    if "broken" in plan.source.path:
        raise MediaError("corrupt or truncated image data", item=plan.name)
    return EncoderInput(plan.modality)


def media_request(prompt_len: int, items: list[MediaItem], max_tokens: int = 2):
    request = make_request(num_prompt_tokens=prompt_len, max_tokens=max_tokens)
    request.mm_items = items
    return request


def scheduler(budget: int = 64, encoder_budget: int = 100, num_pages: int = 64) -> Scheduler:
    return Scheduler(
        SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=8, max_num_encoder_tokens=encoder_budget),
        CacheConfig(block_size=4),
        num_pages,
        ROWS_PER_PAGE,
        prepare_media=prepare,
    )


def step(s: Scheduler):
    output = s.schedule()
    s.update_from_output(output, fake_runner_output(s, output))
    return output


def test_item_is_encoded_once_into_its_own_pages_and_sent_to_the_runner() -> None:
    s = scheduler()
    request = media_request(20, [item(3, 10)])
    s.add_request(request)
    output = step(s)
    assert [(job.request_id, job.item_index, job.num_tokens) for job in output.encoder_jobs] == [
        (request.request_id, 0, 10)
    ]
    assert len(output.encoder_jobs[0].page_ids) == 3  # ceil(10 / 4)
    assert output.new_requests[0].mm_spans == [(3, 10)]
    assert output.new_requests[0].item_page_ids == {0: output.encoder_jobs[0].page_ids}
    # the whole prompt was computed: the embedding pages are released (but stay cached) next step
    step(s)
    assert s.pool.held_embeddings(request.request_id) == {}


def test_chunk_boundary_inside_an_item_keeps_the_embedding_until_passed() -> None:
    s = scheduler(budget=8)
    request = media_request(30, [item(5, 12)])
    s.add_request(request)
    first = step(s)  # tokens 0..7: the chunk enters the item, which is encoded now
    assert first.num_scheduled_tokens[request.request_id] == 8 and len(first.encoder_jobs) == 1
    second = step(s)  # tokens 8..15: still inside the item, no new job
    assert second.encoder_jobs == [] and 0 in s.pool.held_embeddings(request.request_id)
    step(s)  # tokens 16..23: past the item (ends at 17)
    step(s)
    assert s.pool.held_embeddings(request.request_id) == {}


def test_encoder_budget_cuts_the_chunk_before_an_item_and_lets_others_run() -> None:
    s = scheduler(budget=64, encoder_budget=10)
    first = media_request(20, [item(2, 8, b"a")])
    second = media_request(20, [item(4, 8, b"b")])  # its item does not fit the rest of the budget
    plain = make_request(prompt=[7, 8, 9, 10, 11, 12])
    for request in (first, second, plain):
        s.add_request(request)
    output = step(s)
    assert output.num_scheduled_tokens[first.request_id] == 20
    assert output.num_scheduled_tokens[second.request_id] == 4  # cut just before its item
    assert output.num_scheduled_tokens[plain.request_id] == 6
    assert [job.request_id for job in output.encoder_jobs] == [first.request_id]
    output = step(s)
    assert [job.request_id for job in output.encoder_jobs] == [second.request_id]


def test_an_item_larger_than_the_encoder_budget_runs_in_a_step_of_its_own() -> None:
    s = scheduler(encoder_budget=4)
    request = media_request(30, [item(0, 20)])
    s.add_request(request)
    output = step(s)
    assert len(output.encoder_jobs) == 1 and output.num_scheduled_tokens[request.request_id] == 30


def test_equal_media_hit_the_encoder_cache_and_the_prefix_cache() -> None:
    s = scheduler()
    first = media_request(20, [item(2, 9, b"same")], max_tokens=1)
    s.add_request(first)
    step(s)
    step(s)
    again = media_request(20, [item(2, 9, b"same")], max_tokens=1)
    again.prompt_token_ids = list(first.prompt_token_ids)
    s.add_request(again)
    output = step(s)
    assert output.new_requests[0].num_computed_tokens == 16  # prefix hit through the image
    assert s.pool.prefix_hits >= 16


def test_different_media_with_equal_placeholder_tokens_do_not_share_prefix_blocks() -> None:
    s = scheduler()
    first = media_request(20, [item(2, 9, b"cat")], max_tokens=1)
    s.add_request(first)
    step(s)
    other = media_request(20, [item(2, 9, b"dog")], max_tokens=1)
    other.prompt_token_ids = list(first.prompt_token_ids)  # identical token ids, different image
    s.add_request(other)
    output = step(s)
    assert output.new_requests[0].num_computed_tokens == 0
    assert len(output.encoder_jobs) == 1  # and it gets its own encoding


def test_encoder_cache_hit_without_prefix_hit() -> None:
    s = scheduler()
    first = media_request(20, [item(6, 9, b"shared")], max_tokens=1)
    s.add_request(first)
    step(s)
    step(s)
    other = make_request(num_prompt_tokens=20, max_tokens=1)  # different text before the same image
    other.mm_items = [item(6, 9, b"shared")]
    other.prompt_token_ids = [7] + list(first.prompt_token_ids[1:])
    s.add_request(other)
    output = step(s)
    assert output.encoder_jobs == [] and s.pool.encoder_cache_hits == 1
    assert output.new_requests[0].item_page_ids  # the cached pages were handed to the runner


def test_preempted_or_aborted_request_frees_its_embedding_pages() -> None:
    s = scheduler(budget=8, num_pages=64)
    request = media_request(30, [item(2, 12)])
    s.add_request(request)
    step(s)
    assert s.pool.held_embeddings(request.request_id)
    s.abort_requests([request.request_id])
    assert s.pool.num_free_pages == 64


def test_media_that_fail_to_prepare_fail_their_request_only_and_free_its_pages() -> None:
    s = scheduler()
    bad = media_request(20, [item(3, 10, b"broken.png")])
    good = media_request(20, [item(3, 10)])
    s.add_request(bad)
    s.add_request(good)
    output = step(s)
    assert [job.request_id for job in output.encoder_jobs] == [good.request_id]
    assert output.encoder_jobs[0].encoder_input is not None  # prepared before the forward
    assert output.num_scheduled_tokens[bad.request_id] == 3  # the text before the item
    failed = s.on_encoder_results([])
    assert [(o.request_id, o.finish_reason, o.invalid_input) for o in failed] == [
        (bad.request_id, "error", True)
    ]
    assert "image 0: corrupt" in failed[0].error
    assert bad.request_id not in s.requests and s.pool.held_embeddings(bad.request_id) == {}
    while s.has_unfinished_requests():
        step(s)
    assert s.pool.num_free_pages == s.pool.num_pages  # everything freed (cached pages count as free)
