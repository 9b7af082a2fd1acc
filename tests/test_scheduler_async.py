"""Scheduler under async scheduling (no model): step N+1 is scheduled before step N's results are applied.
Pending tokens are owed and decoded, max_tokens is exact, a token in flight for a request that finished or
was aborted is dropped, a preempted request resumes with its pending token, a reused id takes nothing."""

from __future__ import annotations

from factories import make_request, make_scheduler

from omniserve.core.scheduler import Scheduler
from omniserve.core.scheduler_output import ModelRunnerOutput, SchedulerOutput
from omniserve.request import RequestStatus


def launch(scheduler: Scheduler) -> tuple[SchedulerOutput, list[str]]:
    """Schedule a step and note which requests sample in it (their chunk reaches their last token, pending
    ones included), as the model runner would."""
    output = scheduler.schedule()
    sampling = [
        request_id
        for request_id in output.num_scheduled_tokens
        if (r := scheduler.requests[request_id]).num_computed_tokens
        == r.num_tokens + r.num_pending_tokens - 1
    ]
    return output, sampling


def resolve(scheduler: Scheduler, step: tuple[SchedulerOutput, list[str]], token_id: int = 7) -> list:
    output, sampling = step
    return scheduler.update_from_output(
        output, ModelRunnerOutput(sampling, [token_id] * len(sampling), [None] * len(sampling))
    )


def drain_async(scheduler: Scheduler, token_id: int = 7, max_steps: int = 1000, on_schedule=None) -> list:
    """The engine's async loop: schedule N+1, then apply N; a step that schedules nothing applies the one in
    flight and itself. Returns every `EngineCoreOutput`."""
    outputs, in_flight = [], None
    for _ in range(max_steps):
        if not scheduler.has_unfinished_requests() and in_flight is None:
            return outputs
        step = launch(scheduler)
        if on_schedule is not None:
            on_schedule(scheduler, step[0])
        assert step[0].total_num_scheduled_tokens <= scheduler.config.max_num_batched_tokens
        if not step[0].is_empty:
            step, in_flight = in_flight, step
        elif in_flight is not None:
            outputs += resolve(scheduler, in_flight, token_id)
            in_flight = None
        if step is not None:
            outputs += resolve(scheduler, step, token_id)
    raise AssertionError("requests did not finish")


def test_a_pending_token_is_owed_and_decoded_before_it_is_known() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=32)
    request = make_request(num_prompt_tokens=8, max_tokens=3)
    scheduler.add_request(request)
    first = launch(scheduler)
    assert first[0].num_scheduled_tokens == {request.request_id: 8} and first[1] == [request.request_id]
    assert request.num_pending_tokens == 1 and request.num_output_tokens == 0
    second = launch(scheduler)  # before the first step's token is known
    assert second[0].num_scheduled_tokens == {request.request_id: 1} and second[1] == [request.request_id]
    assert second[0].cached_requests[0].num_computed_tokens == 8  # it computes token 8, the pending one
    assert request.num_pending_tokens == 2
    resolve(scheduler, first)
    assert request.num_pending_tokens == 1 and request.num_output_tokens == 1
    third = launch(scheduler)  # outputs 1 + pending 1 < 3: one more
    assert third[0].num_scheduled_tokens == {request.request_id: 1}
    resolve(scheduler, second)
    assert launch(scheduler)[0].is_empty  # outputs 2 + pending 1 = max_tokens: its last token is on its way
    outputs = resolve(scheduler, third)
    assert outputs[0].finish_reason == "length" and request.num_output_tokens == 3
    assert scheduler.pool.num_free_pages == scheduler.pool.num_pages


def test_max_tokens_and_budget_are_exact_for_many_requests() -> None:
    scheduler = make_scheduler(num_pages=200, max_num_batched_tokens=16)
    requests = [
        make_request(num_prompt_tokens=n, max_tokens=m) for n, m in ((3, 1), (30, 5), (7, 2), (12, 9))
    ]
    for request in requests:
        scheduler.add_request(request)
    outputs = drain_async(scheduler)
    for request in requests:
        mine = [o for o in outputs if o.request_id == request.request_id]
        assert len(mine) == request.max_tokens == request.num_output_tokens
        assert mine[-1].finish_reason == "length" and all(o.finish_reason is None for o in mine[:-1])
        assert request.num_pending_tokens == 0
    assert scheduler.pool.num_free_pages == 200


def test_a_stop_token_drops_the_token_already_in_flight() -> None:
    scheduler = make_scheduler()
    request = make_request(num_prompt_tokens=6, max_tokens=10, eos=frozenset({7}))
    scheduler.add_request(request)
    first = launch(scheduler)
    second = launch(scheduler)  # scheduled before the EOS of the first step is seen
    assert second[1] == [request.request_id]
    outputs = resolve(scheduler, first, token_id=7)
    assert [o.finish_reason for o in outputs] == ["stop"] and request.status == RequestStatus.FINISHED_STOPPED
    assert scheduler.pool.num_free_pages == scheduler.pool.num_pages  # freed at once
    assert resolve(scheduler, second, token_id=3) == []  # the extra token never reaches the frontend
    assert request.output_token_ids == [7]
    assert request.request_id in scheduler.schedule().dropped_request_ids


def test_abort_while_a_step_is_in_flight_frees_pages_and_drops_its_token() -> None:
    scheduler = make_scheduler(num_pages=20)
    request, other = make_request(num_prompt_tokens=10, max_tokens=50), make_request(num_prompt_tokens=5)
    scheduler.add_request(request)
    scheduler.add_request(other)
    first = launch(scheduler)
    scheduler.abort_requests([request.request_id])
    assert scheduler.pool.num_free_pages == 20 - scheduler.pool.num_request_pages(other.request_id)
    outputs = resolve(scheduler, first)
    assert [o.request_id for o in outputs] == [other.request_id]
    assert request.num_output_tokens == 0 and request.status == RequestStatus.FINISHED_ABORTED


def test_a_preempted_request_keeps_its_pending_token_and_resumes_with_it() -> None:
    scheduler = make_scheduler(num_pages=6, block_size=4, max_num_batched_tokens=32, prefix_caching=False)
    first, second = (
        make_request(num_prompt_tokens=8, max_tokens=12),
        make_request(num_prompt_tokens=8, max_tokens=12),
    )
    scheduler.add_request(first)
    scheduler.add_request(second)
    seen = {"preempted_with_pending": 0, "resumed": 0}

    def check(scheduler: Scheduler, output: SchedulerOutput) -> None:
        for request in scheduler.waiting:
            if request.num_preemptions and request.num_pending_tokens:
                seen["preempted_with_pending"] += 1
        for new in output.new_requests:
            request = scheduler.requests[new.request_id]
            if request.num_preemptions:
                seen["resumed"] += 1
                assert new.token_ids == request.prompt_token_ids + request.output_token_ids
                assert len(new.token_ids) > 8 and request.num_pending_tokens == 1  # the one it samples now

    outputs = drain_async(scheduler, on_schedule=check)
    assert seen["preempted_with_pending"] > 0 and seen["resumed"] > 0
    assert first.num_output_tokens == second.num_output_tokens == 12
    assert len([o for o in outputs if o.request_id == second.request_id]) == 12
    assert scheduler.pool.num_free_pages == 6


def test_a_reused_request_id_never_takes_the_token_of_the_finished_one() -> None:
    scheduler = make_scheduler()
    old = make_request(num_prompt_tokens=5, max_tokens=10, request_id="same", eos=frozenset({7}))
    scheduler.add_request(old)
    first = launch(scheduler)
    second = launch(scheduler)
    resolve(scheduler, first, token_id=7)  # finishes: the second step's token for it is in flight
    new = make_request(num_prompt_tokens=5, max_tokens=10, request_id="same")
    scheduler.add_request(new)
    third = launch(scheduler)
    assert third[0].new_requests[0].request_id == "same" and new.num_pending_tokens == 1
    assert resolve(scheduler, second, token_id=3) == []
    assert new.num_output_tokens == 0 and new.num_pending_tokens == 1
    outputs = resolve(scheduler, third, token_id=4)
    assert [(o.request_id, o.new_token_ids) for o in outputs] == [("same", [4])]
