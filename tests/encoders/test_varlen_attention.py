"""varlen_attention against a dense reference: full [N, N] scores with a block-diagonal mask."""

from __future__ import annotations

import omniserve.encoders.varlen_attention as varlen
import pytest
import torch
from omniserve.encoders.varlen_attention import plan_varlen, varlen_attention

LENGTHS = [5, 0, 1, 17, 5, 64, 3, 17]  # repeated lengths, an empty and a one-token sequence


def dense_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: list[int], scale: float
) -> torch.Tensor:
    """q, k, v: [N, H, D] -> [N, H, D], in float64."""
    sequence_of_row = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))  # [N]
    same = sequence_of_row[:, None] == sequence_of_row[None, :]  # [N, N] block diagonal
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * scale  # [H, N, N]
    weights = scores.masked_fill(~same, float("-inf")).softmax(-1)
    return torch.einsum("hqk,khd->qhd", weights, v.double())


def random_qkv(num_tokens: int, heads: int = 3, head_dim: int = 8) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(num_tokens, heads, head_dim, generator=generator) * 2 for _ in range(3))


def cu_seqlens_of(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([0] + lengths).cumsum(0).to(torch.int32)


def test_matches_dense_block_diagonal_reference() -> None:
    q, k, v = random_qkv(sum(LENGTHS))
    out = varlen_attention(q, k, v, cu_seqlens_of(LENGTHS))
    error = (out.double() - dense_reference(q, k, v, LENGTHS, 8**-0.5)).abs().max().item()
    print(f"varlen attention vs dense masked reference: max abs error {error:.2e}")
    assert error <= 1e-5


def test_plan_is_reusable_and_scale_is_applied() -> None:
    q, k, v = random_qkv(sum(LENGTHS))
    plan = plan_varlen(cu_seqlens_of(LENGTHS))
    assert plan.max_seqlen == 64 and plan.num_tokens == sum(LENGTHS)
    assert [length for length, _ in plan.groups] == [1, 3, 5, 17, 64]  # the empty sequence has no group
    expected = dense_reference(q, k, v, LENGTHS, 0.3)
    for _ in range(2):
        assert torch.allclose(varlen_attention(q, k, v, plan, scale=0.3).double(), expected, atol=1e-5)


def test_large_groups_are_split_without_changing_results(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths = [16] * 10 + [40]
    q, k, v = random_qkv(sum(lengths))
    whole = varlen_attention(q, k, v, cu_seqlens_of(lengths))
    monkeypatch.setattr(varlen, "MAX_SCORES_PER_CALL", 3 * 16 * 16 * 3)  # three sequences of 16 per call
    split = varlen_attention(q, k, v, cu_seqlens_of(lengths))
    assert torch.allclose(whole, split, atol=1e-6)
    assert torch.allclose(split.double(), dense_reference(q, k, v, lengths, 8**-0.5), atol=1e-5)


def test_bad_cu_seqlens_are_refused() -> None:
    q, k, v = random_qkv(10)
    with pytest.raises(ValueError, match="start at 0"):
        varlen_attention(q, k, v, [2, 10])
    with pytest.raises(ValueError, match="non-decreasing"):
        varlen_attention(q, k, v, [0, 6, 4, 10])
    with pytest.raises(ValueError, match="covers 8 tokens but q has 10"):
        varlen_attention(q, k, v, [0, 4, 8])
