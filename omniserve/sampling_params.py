"""Per-request sampling parameters, validated at construction.

Flows in from the user (offline API, CLI, HTTP layer); flows out to the scheduler (stop conditions,
`max_tokens`) and the model runner's sampler (everything that changes the distribution).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Sentinel: temperature below this is treated as greedy (argmax), like vLLM and the OpenAI API.
_GREEDY_EPS = 1e-5


@dataclass
class SamplingParams:
    """How to pick each next token and when to stop.

    Defaults follow the OpenAI API: temperature 1, top_p 1, no penalties, 16 new tokens at most.
    """

    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus mass kept, in (0, 1]
    top_k: int = 0  # 0 or -1 = off; else keep the k most likely tokens
    min_p: float = 0.0  # drop tokens with prob < min_p * max prob, in [0, 1]
    seed: int | None = None  # per-request RNG: same seed, same tokens, whatever else runs
    max_tokens: int | None = 16  # new tokens at most; None = up to the model's context
    min_tokens: int = 0  # EOS / stop ids are masked until this many tokens exist
    stop: list[str] = field(default_factory=list)  # stop strings, not included in the text
    stop_token_ids: list[int] = field(default_factory=list)  # extra ids that end generation
    ignore_eos: bool = False  # keep going past the model's EOS ids
    repetition_penalty: float = 1.0  # HF-style, over prompt + output; 1 = off
    presence_penalty: float = 0.0  # OpenAI-style, over output tokens; in [-2, 2]
    frequency_penalty: float = 0.0  # OpenAI-style, over output tokens; in [-2, 2]
    logprobs: int | None = None  # return the sampled token's logprob and this many top ones
    skip_special_tokens: bool = True  # detokenizer setting

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"invalid sampling parameter {name}={getattr(self, name)!r}: {why}")

        if not 0.0 <= self.temperature <= 100.0:
            raise bad("temperature", "must be in [0, 100]")
        if not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "must be in (0, 1]")
        if self.top_k < 0:
            raise bad("top_k", "must be 0 or -1 (off) or a positive integer")
        if not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", "must be in [0, 1]")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise bad("max_tokens", "must be at least 1")
        if self.min_tokens < 0 or (self.max_tokens is not None and self.min_tokens > self.max_tokens):
            raise bad("min_tokens", "must be in [0, max_tokens]")
        if self.repetition_penalty <= 0.0:
            raise bad("repetition_penalty", "must be > 0")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise bad(name, "must be in [-2, 2]")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise bad("logprobs", "must be in [0, 20]")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise bad("stop", "stop strings must be non-empty strings")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise bad("stop_token_ids", "must be non-negative integers")
        if self.seed is not None and not isinstance(self.seed, int):
            raise bad("seed", "must be an integer")

    @property
    def greedy(self) -> bool:
        return self.temperature < _GREEDY_EPS

    @property
    def needs_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
