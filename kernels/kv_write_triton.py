"""Triton KV write by slot mapping: same contract as `write_kv_torch` (kernels/kv_write.py).

    k, v:            [T, Hkv, D]
    k_cache/v_cache: [num_pages, block_size, Hkv, D]  (any strides, e.g. views of one pool)
    slot_mapping:    [T], slot = page * block_size + offset; negative = padding, not written

One program per token copies its [Hkv, D] K and V rows into (page, offset), cast to the cache dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _write_kv_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr, block_size,
    stride_k_token, stride_k_head, stride_k_dim,
    stride_v_token, stride_v_head, stride_v_dim,
    stride_kc_page, stride_kc_slot, stride_kc_head, stride_kc_dim,
    stride_vc_page, stride_vc_slot, stride_vc_head, stride_vc_dim,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HEADS_PAD: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    page = slot // block_size
    offset = slot % block_size
    heads = tl.arange(0, HEADS_PAD)[:, None]
    dims = tl.arange(0, HEAD_DIM_PAD)[None, :]
    mask = (heads < NUM_KV_HEADS) & (dims < HEAD_DIM)
    k = tl.load(k_ptr + token * stride_k_token + heads * stride_k_head + dims * stride_k_dim, mask=mask)
    v = tl.load(v_ptr + token * stride_v_token + heads * stride_v_head + dims * stride_v_dim, mask=mask)
    k_dst = k_cache_ptr + page * stride_kc_page + offset * stride_kc_slot + heads * stride_kc_head
    v_dst = v_cache_ptr + page * stride_vc_page + offset * stride_vc_slot + heads * stride_vc_head
    tl.store(k_dst + dims * stride_kc_dim, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_dst + dims * stride_vc_dim, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def write_kv_triton(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    num_tokens, num_kv_heads, head_dim = k.shape
    if num_tokens == 0:
        return
    block_size = k_cache.shape[1]
    heads_pad = triton.next_power_of_2(num_kv_heads)
    dim_pad = triton.next_power_of_2(head_dim)
    _write_kv_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping, block_size,
        *k.stride(), *v.stride(), *k_cache.stride(), *v_cache.stride(),
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, HEADS_PAD=heads_pad, HEAD_DIM_PAD=dim_pad,
        num_warps=4 if heads_pad * dim_pad >= 1024 else 1,
    )
