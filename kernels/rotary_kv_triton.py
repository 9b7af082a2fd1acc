"""Triton rotary embedding fused with the KV write: same contract as `rotary_write_kv_torch`
(kernels/rotary_kv.py), one launch instead of `apply_rotary_triton` + `write_kv_triton`.

    q: [T, Hq, D] rotated in place; k, v: [T, Hkv, D] read only
    k_cache/v_cache: [num_pages, block_size, Hkv, D]; slot_mapping: [T] (negative = not written)

One program per token: it loads the token's cos/sin once (1-D or M-RoPE, see kernels/rotary_triton.py),
rotates and stores its q heads, then, unless its slot is negative, rotates its k heads and stores them with
its v heads at (page, offset) = divmod(slot, block_size) of the caches. Each head is handled as two halves
of [HALF_PAD] lanes (head_dim 80: 2 x 64 lanes, the last 24 of each masked):

    head row:  | x1 = dims [0, HALF) | x2 = dims [HALF, D) |
    rotated:   | x1 cos - x2 sin     | x2 cos + x1 sin     |   (rounded step by step as the reference)

The grid is T programs and nothing is read back to the host, so it is safe inside CUDA graphs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from .pdl import pdl_enabled
from .rotary_triton import position_strides, rotate_heads, rotated_heads, token_cos_sin


@triton.jit
def _rotary_write_kv_kernel(
    q_ptr, k_ptr, v_ptr, positions_ptr, cos_sin_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
    num_q_heads, num_kv_heads, section_1, section_2, block_size,
    stride_q_token, stride_q_head, stride_q_dim,
    stride_k_token, stride_k_head, stride_k_dim,
    stride_v_token, stride_v_head, stride_v_dim,
    stride_pos_axis, stride_pos_token, stride_cache_pos, stride_cache_col,
    stride_kc_page, stride_kc_slot, stride_kc_head, stride_kc_dim,
    stride_vc_page, stride_vc_slot, stride_vc_head, stride_vc_dim,
    MROPE: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
    Q_HEADS_PAD: tl.constexpr, KV_HEADS_PAD: tl.constexpr, USE_PDL: tl.constexpr,
):
    if USE_PDL:  # kernels/pdl.py
        gdc_wait()
    token = tl.program_id(0).to(tl.int64)
    cos, sin = token_cos_sin(positions_ptr, cos_sin_ptr, token, section_1, section_2, stride_pos_axis,
                              stride_pos_token, stride_cache_pos, stride_cache_col, MROPE, HALF, HALF_PAD)
    rotate_heads(q_ptr + token * stride_q_token, stride_q_head, stride_q_dim, cos, sin, num_q_heads,
                  Q_HEADS_PAD, HALF, HALF_PAD)
    if USE_PDL:  # q is done; the K/V rows remain: let the next kernel's programs be scheduled now
        gdc_launch_dependents()
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    page = slot // block_size
    offset = slot % block_size
    k1, k2 = rotated_heads(k_ptr + token * stride_k_token, stride_k_head, stride_k_dim, cos, sin,
                            num_kv_heads, KV_HEADS_PAD, HALF, HALF_PAD)
    heads = tl.arange(0, KV_HEADS_PAD)[:, None]
    freqs = tl.arange(0, HALF_PAD)[None, :]
    mask = (heads < num_kv_heads) & (freqs < HALF)
    k_dst = k_cache_ptr + page * stride_kc_page + offset * stride_kc_slot + heads * stride_kc_head
    k_dst += freqs * stride_kc_dim
    tl.store(k_dst, k1.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(k_dst + HALF * stride_kc_dim, k2.to(k_cache_ptr.dtype.element_ty), mask=mask)
    v_src = v_ptr + token * stride_v_token + heads * stride_v_head + freqs * stride_v_dim
    v1 = tl.load(v_src, mask=mask)
    v2 = tl.load(v_src + HALF * stride_v_dim, mask=mask)
    v_dst = v_cache_ptr + page * stride_vc_page + offset * stride_vc_slot + heads * stride_vc_head
    v_dst += freqs * stride_vc_dim
    tl.store(v_dst, v1.to(v_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_dst + HALF * stride_vc_dim, v2.to(v_cache_ptr.dtype.element_ty), mask=mask)


def rotary_write_kv_triton(
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
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    half = cos_sin_cache.shape[1] // 2
    assert head_dim == 2 * half, "cos_sin_cache must have head_dim columns (partial rotary is not supported)"
    if num_tokens == 0:
        return
    mrope, section_1, section_2, stride_pos_axis, stride_pos_token = position_strides(
        positions, half, mrope_section
    )
    use_pdl = pdl_enabled(q.device, num_tokens)
    _rotary_write_kv_kernel[(num_tokens,)](
        q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping,
        num_q_heads, num_kv_heads, section_1, section_2, k_cache.shape[1],
        *q.stride(), *k.stride(), *v.stride(), stride_pos_axis, stride_pos_token, *cos_sin_cache.stride(),
        *k_cache.stride(), *v_cache.stride(),
        MROPE=mrope, HALF=half, HALF_PAD=triton.next_power_of_2(half),
        Q_HEADS_PAD=triton.next_power_of_2(num_q_heads), KV_HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        USE_PDL=use_pdl, num_warps=4, launch_pdl=use_pdl,
        enable_fp_fusion=False,  # keep the reference's separate roundings (no FMA)
    )
