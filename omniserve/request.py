"""`Request`: the engine core's one object per request, from admission to finish.

The scheduler never thinks in phases. A request owns `num_tokens` known tokens (prompt + sampled
outputs) and `num_computed_tokens` of them have KV in the page pool; each step the scheduler gives it
some tokens so that `num_computed_tokens` catches up with `num_tokens`. Prefill, chunked prefill,
prefix-cache hits, preemption (reset `num_computed_tokens` to 0) and decode all follow from that.

    all_token_ids:  [ p0 p1 ... p(P-1) | o0 o1 ... o(O-1) ] (+ pending)
                      num_prompt_tokens   num_output_tokens
                    [<-- num_computed_tokens -->|<- owed ->]

With async scheduling a step is scheduled before the previous step's sampled tokens reach the host: a token
that a scheduled step will sample, and that is not appended yet, counts in `num_pending_tokens`. It is owed
like a known token (the runner feeds it from the device), so a request owes
`num_tokens + num_pending_tokens - num_computed_tokens`.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import numpy as np

from omniserve.multimodal import MediaItem
from omniserve.sampling_params import SamplingParams


class RequestStatus(enum.IntEnum):
    WAITING = 0  # not admitted yet, or preempted and waiting to resume
    RUNNING = 1  # holds pages, scheduled every step it fits
    FINISHED_STOPPED = 2  # EOS, a stop token id, or a stop string (frontend)
    FINISHED_LENGTH = 3  # max_tokens or the model's context
    FINISHED_ABORTED = 4  # user abort or disconnect
    FINISHED_ERROR = 5  # the engine could not serve it (e.g. its media failed to encode)

    @property
    def finished(self) -> bool:
        return self >= RequestStatus.FINISHED_STOPPED

    @property
    def finish_reason(self) -> str | None:
        return {
            RequestStatus.FINISHED_STOPPED: "stop",
            RequestStatus.FINISHED_LENGTH: "length",
            RequestStatus.FINISHED_ABORTED: "abort",
            RequestStatus.FINISHED_ERROR: "error",
        }.get(self)


@dataclass
class Request:
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_ids: frozenset[int]  # the model's EOS ids (ignored with ignore_eos)
    max_tokens: int  # resolved: min(sampling max_tokens, room left in the model's context)
    arrival_time: float = field(default_factory=time.monotonic)

    status: RequestStatus = RequestStatus.WAITING
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose KV is in the pool (or scheduled this step)
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache on admission
    num_preemptions: int = 0
    num_pending_tokens: int = 0  # sampled by scheduled steps, not appended yet (async scheduling: 0 to 2)
    stop_token_id: int | None = None  # the id that stopped it, if any
    # Chained content hashes of this request's full blocks, filled lazily by the page pool.
    block_hashes: list[bytes] = field(default_factory=list)
    mm_items: list[MediaItem] = field(default_factory=list)  # media placeholders, in prompt order
    mrope_positions: np.ndarray | None = None  # [3, num_prompt_tokens] (M-RoPE models)
    mrope_delta: int = 0  # output token i (sequence index) sits at position i + mrope_delta

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def num_owed_tokens(self) -> int:
        """Tokens to compute before this request's next token: known ones and those still in flight."""
        return self.num_tokens + self.num_pending_tokens - self.num_computed_tokens

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_id_at(self, index: int) -> int:
        num_prompt = self.num_prompt_tokens
        return (
            self.prompt_token_ids[index] if index < num_prompt else self.output_token_ids[index - num_prompt]
        )

    def token_ids_slice(self, start: int, end: int) -> list[int]:
        num_prompt = self.num_prompt_tokens
        if end <= num_prompt:
            return self.prompt_token_ids[start:end]
        if start >= num_prompt:
            return self.output_token_ids[start - num_prompt : end - num_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - num_prompt]

    @property
    def is_finished(self) -> bool:
        return self.status.finished

    def append_output_token(self, token_id: int) -> RequestStatus | None:
        """Record a sampled token; return the finished status it causes, if any."""
        self.output_token_ids.append(token_id)
        params = self.sampling_params
        if self.num_output_tokens >= params.min_tokens:
            if (
                not params.ignore_eos and token_id in self.eos_token_ids
            ) or token_id in params.stop_token_ids:
                self.stop_token_id = token_id
                return RequestStatus.FINISHED_STOPPED
        if self.num_output_tokens >= self.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        return None
