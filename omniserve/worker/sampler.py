"""`Sampler`: logits of the rows that produce a token this step -> token ids (+ logprobs), on device.

Logits come in the model's dtype. A batch of greedy rows (no logprobs, no penalties) takes its argmax
there (exact: bf16 and fp16 widen to fp32 losslessly, ties still go to the lowest id), which saves writing
and re-reading an fp32 copy of [N, V] (batch 256 of a 152k vocab: 156 MB, about 0.15 ms on an H200);
anything else first upcasts to fp32.

Order of operations per row (N rows, V vocab):
  raw logprobs (if asked)  <- log_softmax of the model's logits, before any processing
  penalties                <- repetition (prompt + output), presence and frequency (output only)
  min_tokens               <- EOS / stop ids masked until the row has min_tokens outputs
  greedy rows              <- argmax
  random rows              <- / temperature, top-k, top-p, min-p, then one draw by the exponential race
                              (argmax p / E with E ~ Exp(1) samples from p)
A row with a seed draws its noise from a generator re-seeded from (seed, output index), so its tokens
depend only on its own history: not on the batch, not on preemption.

`sample` never makes the host wait for the device (small inputs go up through pinned memory, nothing comes
back): its `SampledTokens` stay on the device until the caller copies them (`InFlightStep`, async
scheduling). Only penalties read token values, from `SamplingRow.token_ids`, which must then be all known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from omniserve.core.messages import TokenLogprob
from omniserve.sampling_params import SamplingParams
from omniserve.worker.transfer import to_device


@dataclass
class SamplingRow:
    """What the sampler needs of one request."""

    params: SamplingParams
    token_ids: list[int]  # prompt + outputs so far
    num_prompt_tokens: int
    eos_token_ids: list[int]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens


@dataclass
class SampledTokens:
    """One step's sampled tokens (+ logprobs): on the device as `Sampler.sample` returns them."""

    token_ids: torch.Tensor  # [N] int64
    num_logprobs: list[int | None]  # per row: top logprobs asked (0: only the sampled token's), None: none
    chosen_logprobs: torch.Tensor | None = None  # [N] fp32, raw logprob of each sampled token
    top_logprobs: torch.Tensor | None = None  # [N, K] fp32, K = the most asked by a row (None when 0)
    top_token_ids: torch.Tensor | None = None  # [N, K] int64

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> SampledTokens:
        """The same with every tensor replaced by fn(tensor) (e.g. a copy to the host)."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "num_logprobs"}
        return replace(self, **{name: fn(t) for name, t in tensors.items() if t is not None})

    def to_lists(self) -> tuple[list[int], list[TokenLogprob | None]]:
        """(token ids, logprobs per row) on the host; waits for the device unless the tensors are there."""
        token_ids = self.token_ids.tolist()
        if self.chosen_logprobs is None:
            return token_ids, [None] * len(token_ids)
        chosen = self.chosen_logprobs.tolist()
        top_ids = self.top_token_ids.tolist() if self.top_token_ids is not None else None
        top_values = self.top_logprobs.tolist() if self.top_logprobs is not None else None
        result: list[TokenLogprob | None] = []
        for i, k in enumerate(self.num_logprobs):
            if k is None:
                result.append(None)
                continue
            top = list(zip(top_ids[i][:k], top_values[i][:k], strict=True)) if k > 0 else []
            result.append(TokenLogprob(token_ids[i], chosen[i], top))
        return token_ids, result


class Sampler:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._seeded = torch.Generator(device=device)

    def __call__(
        self, logits: torch.Tensor, rows: list[SamplingRow]
    ) -> tuple[list[int], list[TokenLogprob | None]]:
        """logits: [N, V] (any float dtype) -> (token ids, logprobs per row), on the host (waits for the
        device)."""
        return self.sample(logits, rows).to_lists()

    def sample(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SampledTokens:
        """logits: [N, V] (any float dtype) -> the sampled tokens on the device (no host sync)."""
        num_logprobs = [row.params.logprobs for row in rows]
        wants_logprobs = any(k is not None for k in num_logprobs)
        if wants_logprobs or not all(row.params.greedy and not row.params.needs_penalties for row in rows):
            logits = logits.float()  # only a plain greedy batch takes its argmax in the model's dtype
        raw_logprobs = torch.log_softmax(logits, dim=-1) if wants_logprobs else None

        if any(row.params.needs_penalties for row in rows):
            logits = self._apply_penalties(logits, rows)
        masked = [(i, t) for i, row in enumerate(rows) if row.num_output_tokens < row.params.min_tokens
                  for t in row.eos_token_ids + row.params.stop_token_ids if t < logits.shape[1]]  # fmt: skip
        if masked:
            logits = logits.clone()
            mask_rows, mask_ids = zip(*masked, strict=True)
            logits[self._tensor(mask_rows), self._tensor(mask_ids)] = float("-inf")

        greedy_flags = [row.params.greedy for row in rows]
        sampled = logits.argmax(dim=-1)
        if not all(greedy_flags):
            greedy = self._tensor(greedy_flags, torch.bool)
            sampled = torch.where(greedy, sampled, self._sample_random(logits, rows))
        result = SampledTokens(sampled, num_logprobs)
        if raw_logprobs is not None:
            result.chosen_logprobs = raw_logprobs.gather(1, sampled[:, None])[:, 0]
            max_k = max(k or 0 for k in num_logprobs)
            if max_k > 0:
                result.top_logprobs, result.top_token_ids = raw_logprobs.topk(max_k, dim=-1)
        return result

    def _tensor(self, values, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        return to_device(values, self.device, dtype)

    def _apply_penalties(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        num_rows, vocab = logits.shape
        logits = logits.clone()
        for i, row in enumerate(rows):
            p = row.params
            if not p.needs_penalties:
                continue
            if p.repetition_penalty != 1.0:
                seen = self._tensor(sorted({t for t in row.token_ids if t < vocab}))
                values = logits[i, seen]
                logits[i, seen] = torch.where(
                    values > 0, values / p.repetition_penalty, values * p.repetition_penalty
                )
            if p.presence_penalty or p.frequency_penalty:
                outputs = self._tensor(row.token_ids[row.num_prompt_tokens :])
                counts = torch.zeros(vocab, device=self.device).scatter_add_(
                    0, outputs.clamp(max=vocab - 1), torch.ones_like(outputs, dtype=torch.float32)
                )
                logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).float()
        del num_rows
        return logits

    def _sample_random(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        temperature = self._tensor([max(row.params.temperature, 1e-5) for row in rows], torch.float32)
        logits = logits / temperature[:, None]
        top_k = [row.params.top_k for row in rows]
        top_p = [row.params.top_p for row in rows]
        if any(k > 0 for k in top_k) or any(p < 1.0 for p in top_p):
            logits = self._top_k_top_p(logits, top_k, top_p)
        probs = torch.softmax(logits, dim=-1)
        if any(row.params.min_p > 0 for row in rows):
            min_p = self._tensor([row.params.min_p for row in rows], torch.float32)
            probs = probs.masked_fill(probs < min_p[:, None] * probs.max(dim=-1, keepdim=True).values, 0.0)

        noise = torch.empty_like(probs).exponential_()
        for i, row in enumerate(rows):
            if row.params.seed is not None and not row.params.greedy:
                self._seeded.manual_seed(_mix_seed(row.params.seed, row.num_output_tokens))
                noise[i].exponential_(generator=self._seeded)
        return (probs / noise).argmax(dim=-1)

    def _top_k_top_p(self, logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
        vocab = logits.shape[1]
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # [N, V]
        ranks = torch.arange(vocab, device=logits.device)[None, :]
        k = self._tensor([kk if kk > 0 else vocab for kk in top_k])
        drop = ranks >= k[:, None]
        probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
        p = self._tensor(top_p, torch.float32)
        drop |= mass_before >= p[:, None]
        drop[:, 0] = False  # always keep the best token
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def _mix_seed(seed: int, index: int) -> int:
    """A 63-bit seed for (request seed, output index), well mixed (splitmix64 finalizer)."""
    x = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF
