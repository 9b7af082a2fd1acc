"""Messages across the frontend <-> engine core boundary.

The frontend (offline `Omni`, or the async API frontend) tokenizes and validates, then sends an
`EngineCoreRequest`; the engine core answers each step with one `EngineCoreOutput` per request that
produced something. Both are plain picklable dataclasses so the boundary can be a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omniserve.multimodal import MediaItem
from omniserve.sampling_params import SamplingParams


@dataclass
class EngineCoreRequest:
    request_id: str  # unique among live requests
    prompt_token_ids: list[int]  # already validated: non-empty, fits the context
    sampling_params: SamplingParams
    eos_token_ids: list[int]  # the model's EOS ids (generation_config)
    max_tokens: int  # resolved against the context length by the frontend
    arrival_time: float  # time.monotonic() at the frontend
    mm_items: list[MediaItem] = field(default_factory=list)  # media placeholders, in prompt order
    mrope_positions: np.ndarray | None = None  # [3, num_prompt_tokens] (M-RoPE models)
    mrope_delta: int = 0


@dataclass
class TokenLogprob:
    token_id: int  # the sampled token
    logprob: float  # its log-probability under the model's raw distribution
    top: list[tuple[int, float]] = field(default_factory=list)  # the top-k (id, logprob), best first


@dataclass
class EngineCoreOutput:
    request_id: str
    new_token_ids: list[int]  # sampled this step (one today; several with speculative decoding)
    new_logprobs: list[TokenLogprob] | None = None  # one per new token when requested
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error" once finished
    stop_token_id: int | None = None  # the EOS / stop id that finished it
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    error: str | None = None  # with finish_reason "error": why this request failed (the engine serves on)
    invalid_input: bool = False  # with an error: the request's media is unusable (the client's fault)


@dataclass
class EngineStats:
    """A snapshot for metrics and benchmarks."""

    num_running: int
    num_waiting: int
    num_kv_blocks_total: int
    num_kv_blocks_free: int  # free or evictable (cached but unreferenced)
    num_kv_blocks_used_peak: int  # most blocks referenced at once since start
    num_preemptions: int
    prefix_cache_queries: int  # tokens looked up in the prefix cache
    prefix_cache_hits: int  # tokens served from it
    encoder_cache_queries: int = 0  # media items looked up in the encoder cache
    encoder_cache_hits: int = 0  # media items whose embedding was already in the pool
