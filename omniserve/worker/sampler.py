"""`Sampler`: logits of the rows that produce a token this step -> token ids (+ logprobs), on device.

Order of operations per row (N rows, V vocab):
  raw logprobs (if asked)  <- log_softmax of the model's logits, before any processing
  penalties                <- repetition (prompt + output), presence and frequency (output only)
  min_tokens               <- EOS / stop ids masked until the row has min_tokens outputs
  greedy rows              <- argmax
  random rows              <- / temperature, top-k, top-p, min-p, then one draw by the exponential race
                              (argmax p / E with E ~ Exp(1) samples from p)
A row with a seed draws its noise from a generator re-seeded from (seed, output index), so its tokens
depend only on its own history: not on the batch, not on preemption.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from omniserve.core.messages import TokenLogprob
from omniserve.sampling_params import SamplingParams


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


class Sampler:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._seeded = torch.Generator(device=device)

    def __call__(
        self, logits: torch.Tensor, rows: list[SamplingRow]
    ) -> tuple[list[int], list[TokenLogprob | None]]:
        """logits: [N, V] fp32 -> (token ids, logprobs per row)."""
        logprobs_k = [row.params.logprobs for row in rows]
        raw_logprobs = torch.log_softmax(logits, dim=-1) if any(k is not None for k in logprobs_k) else None

        if any(row.params.needs_penalties for row in rows):
            logits = self._apply_penalties(logits, rows)
        masked = [(i, row) for i, row in enumerate(rows) if row.num_output_tokens < row.params.min_tokens]
        if masked:
            logits = logits.clone()
            for i, row in masked:
                ids = [t for t in row.eos_token_ids + row.params.stop_token_ids if t < logits.shape[1]]
                logits[i, ids] = float("-inf")

        greedy_flags = [row.params.greedy for row in rows]
        sampled = logits.argmax(dim=-1)
        if not all(greedy_flags):
            greedy = torch.tensor(greedy_flags, device=self.device)
            sampled = torch.where(greedy, sampled, self._sample_random(logits, rows))

        token_ids = sampled.tolist()
        logprobs: list[TokenLogprob | None] = [None] * len(rows)
        if raw_logprobs is not None:
            logprobs = self._gather_logprobs(raw_logprobs, token_ids, logprobs_k)
        return token_ids, logprobs

    def _apply_penalties(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        num_rows, vocab = logits.shape
        logits = logits.clone()
        for i, row in enumerate(rows):
            p = row.params
            if not p.needs_penalties:
                continue
            if p.repetition_penalty != 1.0:
                seen = torch.tensor(
                    sorted({t for t in row.token_ids if t < vocab}), device=self.device, dtype=torch.long
                )
                values = logits[i, seen]
                logits[i, seen] = torch.where(
                    values > 0, values / p.repetition_penalty, values * p.repetition_penalty
                )
            if p.presence_penalty or p.frequency_penalty:
                outputs = torch.tensor(
                    row.token_ids[row.num_prompt_tokens :], device=self.device, dtype=torch.long
                )
                counts = torch.zeros(vocab, device=self.device).scatter_add_(
                    0, outputs.clamp(max=vocab - 1), torch.ones_like(outputs, dtype=torch.float32)
                )
                logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).float()
        del num_rows
        return logits

    def _sample_random(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        temperature = torch.tensor([max(row.params.temperature, 1e-5) for row in rows], device=self.device)
        logits = logits / temperature[:, None]
        top_k = [row.params.top_k for row in rows]
        top_p = [row.params.top_p for row in rows]
        if any(k > 0 for k in top_k) or any(p < 1.0 for p in top_p):
            logits = self._top_k_top_p(logits, top_k, top_p)
        probs = torch.softmax(logits, dim=-1)
        if any(row.params.min_p > 0 for row in rows):
            min_p = torch.tensor([row.params.min_p for row in rows], device=self.device)
            probs = probs.masked_fill(probs < min_p[:, None] * probs.max(dim=-1, keepdim=True).values, 0.0)

        noise = torch.empty_like(probs).exponential_()
        for i, row in enumerate(rows):
            if row.params.seed is not None and not row.params.greedy:
                self._seeded.manual_seed(_mix_seed(row.params.seed, row.num_output_tokens))
                noise[i].exponential_(generator=self._seeded)
        return (probs / noise).argmax(dim=-1)

    @staticmethod
    def _top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
        vocab = logits.shape[1]
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # [N, V]
        ranks = torch.arange(vocab, device=logits.device)[None, :]
        k = torch.tensor([kk if kk > 0 else vocab for kk in top_k], device=logits.device)
        drop = ranks >= k[:, None]
        probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
        p = torch.tensor(top_p, device=logits.device)
        drop |= mass_before >= p[:, None]
        drop[:, 0] = False  # always keep the best token
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        return torch.empty_like(logits).scatter_(1, order, sorted_logits)

    @staticmethod
    def _gather_logprobs(
        raw: torch.Tensor, token_ids: list[int], ks: list[int | None]
    ) -> list[TokenLogprob | None]:
        max_k = max(k or 0 for k in ks)
        ids = torch.tensor(token_ids, device=raw.device)
        chosen = raw.gather(1, ids[:, None])[:, 0].tolist()
        top_values, top_ids = raw.topk(max_k, dim=-1) if max_k > 0 else (None, None)
        top_values = top_values.tolist() if top_values is not None else None
        top_ids = top_ids.tolist() if top_ids is not None else None
        result: list[TokenLogprob | None] = []
        for i, k in enumerate(ks):
            if k is None:
                result.append(None)
                continue
            top = list(zip(top_ids[i][:k], top_values[i][:k], strict=True)) if k > 0 else []
            result.append(TokenLogprob(token_ids[i], chosen[i], top))
        return result


def _mix_seed(seed: int, index: int) -> int:
    """A 63-bit seed for (request seed, output index), well mixed (splitmix64 finalizer)."""
    x = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF
