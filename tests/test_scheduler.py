"""Scheduler: token budget, chunked prefill, decode-first order, preemption, abort, no starvation."""

from __future__ import annotations

from factories import fake_runner_output, make_request, make_scheduler, run_step

from omniserve.request import RequestStatus


def drain(scheduler, max_steps: int = 1000) -> list:
    outputs = []
    for _ in range(max_steps):
        if not scheduler.has_unfinished_requests():
            return outputs
        output, results = run_step(scheduler)
        assert output.total_num_scheduled_tokens <= scheduler.config.max_num_batched_tokens
        outputs.append((output, results))
    raise AssertionError("requests did not finish: starvation or livelock")


def test_budget_is_respected_and_every_request_finishes() -> None:
    scheduler = make_scheduler(num_pages=200, max_num_batched_tokens=16)
    requests = [make_request(num_prompt_tokens=n, max_tokens=5) for n in (3, 30, 7, 12, 1, 25)]
    for request in requests:
        scheduler.add_request(request)
    steps = drain(scheduler)
    for output, _ in steps:
        for num in output.num_scheduled_tokens.values():
            assert num >= 1
    assert all(r.status == RequestStatus.FINISHED_LENGTH and r.num_output_tokens == 5 for r in requests)
    assert scheduler.pool.num_free_pages == 200


def test_long_prompt_is_chunked_and_samples_only_at_the_end() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=16)
    request = make_request(num_prompt_tokens=50, max_tokens=2)
    scheduler.add_request(request)
    chunks = []
    for _ in range(4):
        output, results = run_step(scheduler)
        chunks.append(output.num_scheduled_tokens[request.request_id])
        assert bool(results) == (request.num_computed_tokens == 50)
    assert chunks == [16, 16, 16, 2]
    assert request.num_output_tokens == 1


def test_prefill_chunk_cap() -> None:
    from omniserve.config import CacheConfig, SchedulerConfig
    from omniserve.core.scheduler import Scheduler

    scheduler = Scheduler(
        SchedulerConfig(max_num_batched_tokens=32, max_num_seqs=4, long_prefill_token_threshold=8),
        CacheConfig(block_size=4),
        64,
    )
    a, b = make_request(num_prompt_tokens=20), make_request(num_prompt_tokens=20)
    scheduler.add_request(a)
    scheduler.add_request(b)
    output, _ = run_step(scheduler)
    assert output.num_scheduled_tokens == {a.request_id: 8, b.request_id: 8}


def test_decodes_are_scheduled_before_older_partial_prefills() -> None:
    from omniserve.config import CacheConfig, SchedulerConfig
    from omniserve.core.scheduler import Scheduler

    scheduler = Scheduler(
        SchedulerConfig(max_num_batched_tokens=4, max_num_seqs=4, long_prefill_token_threshold=3),
        CacheConfig(block_size=4),
        64,
    )
    long, short = (
        make_request(num_prompt_tokens=40, max_tokens=20),
        make_request(num_prompt_tokens=1, max_tokens=20),
    )
    scheduler.add_request(long)
    scheduler.add_request(short)
    output, _ = run_step(scheduler)
    assert output.num_scheduled_tokens == {long.request_id: 3, short.request_id: 1}
    for _ in range(5):  # short decodes every step, ahead of the older prefill, which keeps progressing
        output, results = run_step(scheduler)
        assert list(output.num_scheduled_tokens) == [short.request_id, long.request_id]
        assert output.num_scheduled_tokens[short.request_id] == 1
        assert [r.request_id for r in results] == [short.request_id]


def test_preemption_frees_pages_and_the_request_resumes_with_its_tokens() -> None:
    # 6 pages of 4 tokens: two requests of 8 prompt tokens growing to 20 tokens cannot both fit.
    scheduler = make_scheduler(num_pages=6, block_size=4, max_num_batched_tokens=32)
    first, second = (
        make_request(num_prompt_tokens=8, max_tokens=12),
        make_request(num_prompt_tokens=8, max_tokens=12),
    )
    scheduler.add_request(first)
    scheduler.add_request(second)
    preempted_seen = False
    for _ in range(200):
        if not scheduler.has_unfinished_requests():
            break
        output, _ = run_step(scheduler)
        if second.request_id in output.dropped_request_ids and second.status == RequestStatus.WAITING:
            preempted_seen = True
            assert scheduler.pool.page_ids(second.request_id) == []
    assert preempted_seen and second.num_preemptions >= 1 and first.num_preemptions == 0
    assert first.num_output_tokens == second.num_output_tokens == 12
    assert scheduler.pool.num_free_pages == 6


def test_resumed_request_is_sent_whole_with_its_outputs() -> None:
    scheduler = make_scheduler(num_pages=6, block_size=4, max_num_batched_tokens=32, prefix_caching=False)
    first, second = (
        make_request(num_prompt_tokens=8, max_tokens=12),
        make_request(num_prompt_tokens=8, max_tokens=12),
    )
    scheduler.add_request(first)
    scheduler.add_request(second)
    for _ in range(200):
        output = scheduler.schedule()
        resumed = [
            n for n in output.new_requests if n.request_id == second.request_id and second.num_preemptions
        ]
        if resumed:
            assert resumed[0].token_ids == second.all_token_ids
            assert len(resumed[0].token_ids) > 8 and resumed[0].num_computed_tokens == 0
            return
        scheduler.update_from_output(output, fake_runner_output(scheduler, output))
    raise AssertionError("no resume seen")


def test_abort_frees_pages_at_once() -> None:
    scheduler = make_scheduler(num_pages=20)
    running, waiting = make_request(num_prompt_tokens=10, max_tokens=50), make_request(num_prompt_tokens=10)
    scheduler.add_request(running)
    run_step(scheduler)
    assert scheduler.pool.num_free_pages < 20
    scheduler.add_request(waiting)
    scheduler.abort_requests([running.request_id, waiting.request_id, "unknown"])
    assert scheduler.pool.num_free_pages == 20
    assert running.status == waiting.status == RequestStatus.FINISHED_ABORTED
    assert not scheduler.has_unfinished_requests()
    output = scheduler.schedule()
    assert running.request_id in output.dropped_request_ids and output.is_empty


def test_max_num_seqs_and_fcfs_admission() -> None:
    scheduler = make_scheduler(num_pages=100, max_num_seqs=2, max_num_batched_tokens=64)
    requests = [make_request(num_prompt_tokens=4, max_tokens=3) for _ in range(5)]
    for request in requests:
        scheduler.add_request(request)
    finish_order = []
    for _ in range(100):
        if not scheduler.has_unfinished_requests():
            break
        output, results = run_step(scheduler)
        assert len(scheduler.running) <= 2
        finish_order += [r.request_id for r in results if r.finish_reason]
    assert finish_order == [r.request_id for r in requests]


def test_no_starvation_under_memory_pressure() -> None:
    scheduler = make_scheduler(num_pages=12, block_size=4, max_num_batched_tokens=16, max_num_seqs=8)
    requests = [make_request(num_prompt_tokens=5 + 3 * i, max_tokens=10) for i in range(8)]
    for request in requests:
        scheduler.add_request(request)
    drain(scheduler, max_steps=2000)
    assert all(r.num_output_tokens == 10 for r in requests)
    assert scheduler.num_preemptions > 0
    assert scheduler.pool.num_free_pages == 12


def test_eos_and_stop_token_finish() -> None:
    scheduler = make_scheduler()
    request = make_request(num_prompt_tokens=4, max_tokens=10, eos=frozenset({7}))
    scheduler.add_request(request)
    _, results = run_step(scheduler, token_id=7)
    assert results[0].finish_reason == "stop" and results[0].stop_token_id == 7
    assert request.status == RequestStatus.FINISHED_STOPPED


def test_prefix_hit_skips_computed_tokens() -> None:
    scheduler = make_scheduler(block_size=4, max_num_batched_tokens=64)
    prompt = list(range(1, 18))
    first = make_request(prompt=prompt, max_tokens=1)
    scheduler.add_request(first)
    drain(scheduler)
    second = make_request(prompt=prompt, max_tokens=1)
    scheduler.add_request(second)
    output, _ = run_step(scheduler)
    assert output.new_requests[0].num_computed_tokens == 16
    assert output.num_scheduled_tokens[second.request_id] == 1
    assert second.num_cached_tokens == 16


def test_steps_with_decodes_cap_prefill_at_the_mixed_budget() -> None:
    """While requests decode, a step carries at most mixed_step_token_budget tokens (prefill chunks at least
    MIN_PREFILL_TOKENS_WITH_DECODES); a step without decodes still prefills up to max_num_batched_tokens."""
    from omniserve.config import CacheConfig, SchedulerConfig
    from omniserve.core.scheduler import MIN_PREFILL_TOKENS_WITH_DECODES, Scheduler

    scheduler = Scheduler(
        SchedulerConfig(max_num_batched_tokens=512, max_num_seqs=64, mixed_step_token_budget=48),
        CacheConfig(block_size=4),
        1024,
    )
    decoders = [make_request(num_prompt_tokens=3, max_tokens=50) for _ in range(10)]
    for request in decoders:
        scheduler.add_request(request)
    output, _ = run_step(scheduler)  # no decodes yet: all prefills in one step
    assert output.total_num_scheduled_tokens == 30
    late = make_request(prompt=list(range(2000, 2200)), max_tokens=2)
    scheduler.add_request(late)
    output, _ = run_step(scheduler)
    assert output.num_scheduled_tokens[late.request_id] == 48 - 10
    assert output.total_num_scheduled_tokens == 48
    while late.num_computed_tokens < 200:
        output, _ = run_step(scheduler)
        assert output.total_num_scheduled_tokens <= 48
    more = [make_request(num_prompt_tokens=3, max_tokens=60) for _ in range(40)]
    for request in more:
        scheduler.add_request(request)
    while any(r.num_output_tokens == 0 for r in more):
        output, _ = run_step(scheduler)
        decodes = sum(1 for n in output.num_scheduled_tokens.values() if n == 1)
        assert output.total_num_scheduled_tokens <= max(48, decodes + MIN_PREFILL_TOKENS_WITH_DECODES)
    last = make_request(prompt=list(range(1000, 1100)), max_tokens=2)  # no prefix-cache hit
    scheduler.add_request(last)
    output, _ = run_step(scheduler)  # 50 decodes exceed the budget: the prompt still gets its minimum
    assert sum(1 for n in output.num_scheduled_tokens.values() if n == 1) == 50
    assert output.num_scheduled_tokens[last.request_id] == MIN_PREFILL_TOKENS_WITH_DECODES
