"""Small factories for CPU unit tests of the bookkeeping (no model, no tensors)."""

from __future__ import annotations

import itertools

from omniserve.config import CacheConfig, SchedulerConfig
from omniserve.core.scheduler import Scheduler
from omniserve.core.scheduler_output import ModelRunnerOutput, SchedulerOutput
from omniserve.request import Request
from omniserve.sampling_params import SamplingParams

_ids = itertools.count()


def make_request(
    num_prompt_tokens: int = 8,
    max_tokens: int = 4,
    prompt: list[int] | None = None,
    request_id: str | None = None,
    eos: frozenset[int] = frozenset(),
) -> Request:
    prompt = prompt if prompt is not None else [100 + (i % 50) for i in range(num_prompt_tokens)]
    return Request(
        request_id=request_id or f"r{next(_ids)}",
        prompt_token_ids=list(prompt),
        sampling_params=SamplingParams(temperature=0.0, max_tokens=max_tokens),
        eos_token_ids=eos,
        max_tokens=max_tokens,
    )


def make_scheduler(
    num_pages: int = 64,
    block_size: int = 4,
    max_num_batched_tokens: int = 32,
    max_num_seqs: int = 16,
    prefix_caching: bool = True,
) -> Scheduler:
    return Scheduler(
        SchedulerConfig(max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs),
        CacheConfig(block_size=block_size, enable_prefix_caching=prefix_caching),
        num_pages,
    )


def fake_runner_output(scheduler: Scheduler, output: SchedulerOutput, token_id: int = 7) -> ModelRunnerOutput:
    """What a model runner would report: a token for each request whose chunk reached its last token."""
    ids = [
        rid
        for rid in output.num_scheduled_tokens
        if rid in scheduler.requests
        and scheduler.requests[rid].num_computed_tokens == scheduler.requests[rid].num_tokens
    ]
    return ModelRunnerOutput(ids, [token_id] * len(ids), [None] * len(ids))


def run_step(scheduler: Scheduler, token_id: int = 7) -> tuple[SchedulerOutput, list]:
    output = scheduler.schedule()
    return output, scheduler.update_from_output(output, fake_runner_output(scheduler, output, token_id))
