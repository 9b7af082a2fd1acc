"""Rotary embedding fused with the KV write: rotate q in place, write rotated k and v into the page pool.

    q: [T, Hq, D], k/v: [T, Hkv, D]          (any strides, e.g. `.split()` views of a fused qkv output)
    positions: [T] (1-D) or [3, T] (M-RoPE), cos_sin_cache: [max_position, D] fp32 (cos half | sin half),
        mrope_section: as in kernels/rotary.py
    k_cache/v_cache: [num_pages, block_size, Hkv, D]  (strided views of the pool)
    slot_mapping: [T], slot = page * block_size + offset; negative = padding, not written

After the call q holds rotated q (every row, padding rows too), the cache slots hold rotated k and v cast to
the cache dtype, and k and v are unchanged: attention reads K/V only from the cache. The result equals
`apply_rotary_torch` followed by `write_kv_torch`, which is what this reference does (on a copy of k).
"""

from __future__ import annotations

import torch

from .kv_write import write_kv_torch
from .rotary import apply_rotary_torch


def rotary_write_kv_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    mrope_section: list[int] | None,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    k_rotated = k.clone()
    apply_rotary_torch(q, k_rotated, positions, cos_sin_cache, mrope_section)
    write_kv_torch(k_rotated, v, k_cache, v_cache, slot_mapping)
