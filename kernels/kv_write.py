"""Write this step's K and V into the page pool by slot mapping.

k, v:            [T, Hkv, D]
k_cache/v_cache: [num_pages, block_size, Hkv, D]  (strided views)
slot_mapping:    [T] int64, slot = page * block_size + offset; negative = padding, not written
"""

from __future__ import annotations

import torch


def write_kv_torch(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    block_size = k_cache.shape[1]
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    pages, offsets = slots // block_size, slots % block_size
    k_cache[pages, offsets] = k[valid].to(k_cache.dtype)
    v_cache[pages, offsets] = v[valid].to(v_cache.dtype)
