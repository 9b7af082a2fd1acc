"""write_kv_triton vs write_kv_torch: slot-mapped writes into strided views of a pool."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import DEVICE, DTYPES, import_kernel

reference = import_kernel("kv_write")
triton_write = import_kernel("kv_write_triton")


@pytest.mark.parametrize("cache_dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("block_size", "num_kv_heads", "head_dim"), [(1, 2, 64), (4, 3, 80), (16, 2, 64)])
def test_matches_reference(
    block_size: int, num_kv_heads: int, head_dim: int, cache_dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(block_size)
    num_pages, num_tokens = 12, 11
    # pool [num_pages, num_layers, 2, block_size, Hkv, D]; this layer's caches are strided views
    pool = torch.randn(num_pages, 2, 2, block_size, num_kv_heads, head_dim, generator=gen).to(cache_dtype)
    slots = torch.randperm(num_pages * block_size, generator=gen)[:num_tokens]
    slots[[2, 7]] = -1  # padding tokens: not written
    # k and v as strided views too (slices of a fused qkv projection), in fp32: cast on write
    qkv = torch.randn(num_tokens, 3, num_kv_heads, head_dim, generator=gen)
    pool, slots, qkv = pool.to(DEVICE), slots.to(DEVICE), qkv.to(DEVICE)
    expected = pool.clone()
    reference.write_kv_torch(qkv[:, 1], qkv[:, 2], expected[:, 1, 0], expected[:, 1, 1], slots)
    triton_write.write_kv_triton(qkv[:, 1], qkv[:, 2], pool[:, 1, 0], pool[:, 1, 1], slots)
    torch.testing.assert_close(pool, expected, atol=0, rtol=0)
