"""apply_rotary_triton vs apply_rotary_torch: 1-D positions and M-RoPE sections, in place on views."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import DEVICE, DTYPES, import_kernel

reference = import_kernel("rotary")
triton_rotary = import_kernel("rotary_triton")


def cos_sin_cache(max_position: int, head_dim: int) -> torch.Tensor:
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.arange(max_position).float()[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)  # [max_position, D]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("head_dim", "mrope_section"), [(64, None), (80, None), (64, [8, 12, 12]),
                                                          (80, [10, 15, 15])])
def test_matches_reference(head_dim: int, mrope_section: list[int] | None, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(head_dim)
    num_tokens, num_q_heads, num_kv_heads = 9, 6, 2
    cache = cos_sin_cache(64, head_dim).to(DEVICE)
    shape = (num_tokens,) if mrope_section is None else (3, num_tokens)
    positions = torch.randint(0, 64, shape, generator=gen).to(DEVICE)
    # q and k as views into one fused qkv projection [T, (Hq + 2 Hkv) * D]
    qkv = torch.randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim, generator=gen).to(dtype)
    qkv = qkv.to(DEVICE)
    expected = qkv.clone()
    views = []
    for tensor in (expected, qkv):
        q = tensor[:, :num_q_heads * head_dim].view(num_tokens, num_q_heads, head_dim)
        k = tensor[:, num_q_heads * head_dim:(num_q_heads + num_kv_heads) * head_dim].view(
            num_tokens, num_kv_heads, head_dim)
        views.append((q, k))
    reference.apply_rotary_torch(*views[0], positions, cache, mrope_section)
    triton_rotary.apply_rotary_triton(*views[1], positions, cache, mrope_section)
    # bit-exact in 16-bit dtypes (same rounding steps); fp32 may contract into FMAs
    tolerance = 1e-5 if dtype == torch.float32 else 0
    torch.testing.assert_close(qkv, expected, atol=tolerance, rtol=tolerance)
