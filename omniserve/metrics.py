"""Serving metrics measured in the API process: latency histograms, token counters, request counts.

In: request arrivals, the `StreamDelta`s the frontend routes, aborts (all on the event loop thread).
Out: plain numbers that `omniserve.api.metrics` renders in the Prometheus text format, and that
benchmarks read. Engine-side numbers (pages, queue lengths) come from `EngineStats`, not from here.

Timing rules: time to first token runs from the frontend's arrival (before tokenization) to the first delta
that carries a token; inter-token latency is the gap between two deltas of one request divided by the tokens
the later one carries.
"""

from __future__ import annotations

import bisect
import collections
import time
from dataclasses import dataclass, field

from omniserve.outputs import StreamDelta

TTFT_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
ITL_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
)
E2E_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
_TOKEN_RATE_WINDOW_S = 10.0


@dataclass
class Histogram:
    """Cumulative-bucket histogram in the Prometheus sense: `counts[i]` observations <= `buckets[i]`."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last = +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for count in self.counts:
            running += count
            out.append(running)
        return out


@dataclass
class _Timing:
    arrival: float
    last_token: float | None = None  # None until the first token


class ServingMetrics:
    def __init__(self) -> None:
        self.time_to_first_token = Histogram(TTFT_BUCKETS_S)
        self.inter_token_latency = Histogram(ITL_BUCKETS_S)
        self.e2e_latency = Histogram(E2E_BUCKETS_S)
        self.num_requests_received = 0
        self.num_requests_finished: collections.Counter[str] = collections.Counter()  # by finish reason
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self._timings: dict[str, _Timing] = {}
        self._recent_tokens: collections.deque[tuple[float, int]] = collections.deque()  # (time, tokens)

    @property
    def num_requests_in_flight(self) -> int:
        return len(self._timings)

    def on_arrival(self, request_id: str, num_prompt_tokens: int, arrival: float) -> None:
        """`arrival`: time.monotonic() when the frontend got the request, before tokenization."""
        self.num_requests_received += 1
        self.prompt_tokens_total += num_prompt_tokens
        self._timings[request_id] = _Timing(arrival)

    def on_delta(self, delta: StreamDelta, now: float) -> None:
        timing = self._timings.get(delta.request_id)
        if timing is None:
            return
        num_tokens = len(delta.token_ids)
        if num_tokens:
            if timing.last_token is None:
                self.time_to_first_token.observe(now - timing.arrival)
            else:
                gap = (now - timing.last_token) / num_tokens
                for _ in range(num_tokens):
                    self.inter_token_latency.observe(gap)
            timing.last_token = now
            self.generation_tokens_total += num_tokens
            self._recent_tokens.append((now, num_tokens))
        if delta.finish_reason is not None:
            self._finish(delta.request_id, delta.finish_reason, now)

    def on_abort(self, request_id: str, now: float | None = None) -> None:
        if request_id in self._timings:
            self._finish(request_id, "abort", time.monotonic() if now is None else now)

    def _finish(self, request_id: str, reason: str, now: float) -> None:
        timing = self._timings.pop(request_id)
        self.num_requests_finished[reason] += 1
        self.e2e_latency.observe(now - timing.arrival)

    def generation_tokens_per_second(self, now: float | None = None) -> float:
        """Output tokens per second over the last few seconds."""
        now = time.monotonic() if now is None else now
        while self._recent_tokens and self._recent_tokens[0][0] < now - _TOKEN_RATE_WINDOW_S:
            self._recent_tokens.popleft()
        return sum(count for _, count in self._recent_tokens) / _TOKEN_RATE_WINDOW_S
