"""What the scheduler hands the model runner each step, and what comes back.

The runner keeps a state per running request; the scheduler sends a request's whole data once
(`NewRequestData`, also when it resumes after preemption) and only diffs afterwards (`CachedRequestData`).
With async scheduling a running request's last token may not be known to the host yet (the step before
sampled it and is still in flight): the scheduler counts it as owed, the runner feeds it from the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omniserve.core.messages import TokenLogprob
from omniserve.multimodal import EncoderInput, MediaPlan
from omniserve.sampling_params import SamplingParams


@dataclass
class NewRequestData:
    request_id: str
    token_ids: list[int]  # prompt + outputs so far (outputs non-empty only when resuming)
    num_prompt_tokens: int  # penalties treat prompt and output tokens differently
    sampling_params: SamplingParams
    eos_token_ids: list[int]  # masked while num_output_tokens < min_tokens
    page_ids: list[int]  # pages held, in token order
    num_computed_tokens: int  # tokens with KV already in the pool (prefix-cache hits)
    mm_spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, num_tokens) per media item
    item_page_ids: dict[int, list[int]] = field(default_factory=dict)  # item index -> its embedding pages
    mrope_positions: np.ndarray | None = None  # [3, num_prompt_tokens] (M-RoPE models)
    mrope_delta: int = 0


@dataclass
class CachedRequestData:
    request_id: str
    new_page_ids: list[int]  # pages appended since the last step
    num_computed_tokens: int  # before this step's tokens
    new_item_page_ids: dict[int, list[int]] = field(default_factory=dict)  # embeddings acquired this step


@dataclass
class EncoderJob:
    """Encode one media item into embedding pages before this step's forward."""

    request_id: str
    item_index: int
    plan: MediaPlan  # where the source lies; the encoder side decodes and preprocesses it
    page_ids: list[int]  # row r goes to page page_ids[r // rows_per_page], row r % rows_per_page
    num_tokens: int  # rows
    encoder_input: EncoderInput | None = None  # in-process: prepared by the scheduler (ready to encode)


@dataclass
class SchedulerOutput:
    new_requests: list[NewRequestData]  # first scheduled (or resumed) this step
    cached_requests: list[CachedRequestData]  # scheduled before, scheduled again now
    num_scheduled_tokens: dict[str, int]  # request id -> tokens to compute this step (>= 1)
    total_num_scheduled_tokens: int  # sum of the above, <= max_num_batched_tokens
    dropped_request_ids: set[str] = field(default_factory=set)  # finished/aborted/preempted: drop state
    encoder_jobs: list[EncoderJob] = field(default_factory=list)  # in-process mode: run before the forward
    step_id: int = 0  # numbers the scheduler's steps: matches a step's results with what it scheduled

    @property
    def is_empty(self) -> bool:
        return self.total_num_scheduled_tokens == 0


@dataclass
class ModelRunnerOutput:
    request_ids: list[str]  # requests that sampled a token this step (their chunk reached the end)
    sampled_token_ids: list[int]  # one per request id
    logprobs: list[TokenLogprob | None]  # one per request id; None unless requested
