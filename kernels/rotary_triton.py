"""Triton rotary embedding (NeoX / rotate-half), 1-D and M-RoPE, in place: same contract as
`apply_rotary_torch` (kernels/rotary.py).

    q: [T, Hq, D], k: [T, Hkv, D]   (any strides; rotated in place)
    cos_sin_cache: [max_position, D] fp32, columns [0, D/2) cos, [D/2, D) sin
    positions: [T] (1-D) or [3, T] (M-RoPE: temporal, height, width ids)
    mrope_section [s_t, s_h, s_w]: frequency j < s_t uses the temporal id, j < s_t + s_h the height id,
        the rest the width id.

One program per token rotates all its q and k heads. `token_cos_sin` and `rotated_heads` are shared with
the fused rotary + KV write kernel (kernels/rotary_kv_triton.py). Rounding follows the reference step by step:
cos/sin are rounded to x's dtype, each product is rounded, then the sum:
    first half:  x1 * cos - x2 * sin        second half:  x2 * cos + x1 * sin
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def token_cos_sin(positions_ptr, cos_sin_ptr, token, section_1, section_2, stride_pos_axis, stride_pos_token,
                   stride_cache_pos, stride_cache_col,
                   MROPE: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr):
    """cos, sin: [HALF_PAD] fp32 of one token (0 past HALF)."""
    freqs = tl.arange(0, HALF_PAD)
    freq_valid = freqs < HALF
    if MROPE:
        # axis of frequency j: 0 (temporal) below section_1, 1 (height) below section_2, else 2 (width)
        axis = (freqs >= section_1).to(tl.int64) + (freqs >= section_2).to(tl.int64)
        pos = tl.load(positions_ptr + axis * stride_pos_axis + token * stride_pos_token, mask=freq_valid,
                      other=0)
    else:
        pos = tl.load(positions_ptr + token * stride_pos_token)
    row = cos_sin_ptr + pos.to(tl.int64) * stride_cache_pos
    cos = tl.load(row + freqs * stride_cache_col, mask=freq_valid, other=0.0)
    sin = tl.load(row + (HALF + freqs) * stride_cache_col, mask=freq_valid, other=0.0)
    return cos, sin


@triton.jit
def rotated_heads(x_ptr, stride_head, stride_dim, cos, sin, num_heads,
                   HEADS_PAD: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr):
    """One token's heads rotated, in x's dtype: (first halves, second halves), each [HEADS_PAD, HALF_PAD]
    (padding rows and columns hold 0)."""
    heads = tl.arange(0, HEADS_PAD)[:, None]
    freqs = tl.arange(0, HALF_PAD)[None, :]
    mask = (heads < num_heads) & (freqs < HALF)
    first_ptrs = x_ptr + heads * stride_head + freqs * stride_dim
    x1 = tl.load(first_ptrs, mask=mask, other=0.0)
    x2 = tl.load(first_ptrs + HALF * stride_dim, mask=mask, other=0.0)
    dtype = x1.dtype
    c = cos.to(dtype).to(tl.float32)[None, :]
    s = sin.to(dtype).to(tl.float32)[None, :]
    x1f = x1.to(tl.float32)
    x2f = x2.to(tl.float32)
    out1 = (x1f * c).to(dtype).to(tl.float32) + (-x2f * s).to(dtype).to(tl.float32)
    out2 = (x2f * c).to(dtype).to(tl.float32) + (x1f * s).to(dtype).to(tl.float32)
    return out1.to(dtype), out2.to(dtype)


@triton.jit
def rotate_heads(x_ptr, stride_head, stride_dim, cos, sin, num_heads,
                  HEADS_PAD: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr):
    """Rotate one token's heads in place."""
    out1, out2 = rotated_heads(x_ptr, stride_head, stride_dim, cos, sin, num_heads, HEADS_PAD, HALF, HALF_PAD)
    heads = tl.arange(0, HEADS_PAD)[:, None]
    freqs = tl.arange(0, HALF_PAD)[None, :]
    mask = (heads < num_heads) & (freqs < HALF)
    first_ptrs = x_ptr + heads * stride_head + freqs * stride_dim
    tl.store(first_ptrs, out1, mask=mask)
    tl.store(first_ptrs + HALF * stride_dim, out2, mask=mask)


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr, positions_ptr, cos_sin_ptr, num_q_heads, num_kv_heads, section_1, section_2,
    stride_q_token, stride_q_head, stride_q_dim, stride_k_token, stride_k_head, stride_k_dim,
    stride_pos_axis, stride_pos_token, stride_cache_pos, stride_cache_col,
    MROPE: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
    Q_HEADS_PAD: tl.constexpr, KV_HEADS_PAD: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    cos, sin = token_cos_sin(positions_ptr, cos_sin_ptr, token, section_1, section_2, stride_pos_axis,
                              stride_pos_token, stride_cache_pos, stride_cache_col, MROPE, HALF, HALF_PAD)
    rotate_heads(q_ptr + token * stride_q_token, stride_q_head, stride_q_dim, cos, sin, num_q_heads,
                  Q_HEADS_PAD, HALF, HALF_PAD)
    rotate_heads(k_ptr + token * stride_k_token, stride_k_head, stride_k_dim, cos, sin, num_kv_heads,
                  KV_HEADS_PAD, HALF, HALF_PAD)


def position_strides(
    positions: torch.Tensor, half: int, mrope_section: list[int] | None
) -> tuple[bool, int, int, int, int]:
    """(mrope, section_1, section_2, stride_pos_axis, stride_pos_token) of the kernels' positions arguments
    (1-D positions: sections at D/2, so every frequency reads axis 0)."""
    if positions.dim() == 2:
        assert mrope_section is not None and sum(mrope_section) == half, "mrope_section must sum to D/2"
        return (True, mrope_section[0], mrope_section[0] + mrope_section[1], *positions.stride())
    return False, half, half, 0, positions.stride(0)


def apply_rotary_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    mrope_section: list[int] | None = None,
) -> None:
    num_tokens, num_q_heads, _ = q.shape
    num_kv_heads = k.shape[1]
    half = cos_sin_cache.shape[1] // 2
    if num_tokens == 0:
        return
    mrope, section_1, section_2, stride_pos_axis, stride_pos_token = position_strides(
        positions, half, mrope_section
    )
    _rotary_kernel[(num_tokens,)](
        q, k, positions, cos_sin_cache, num_q_heads, num_kv_heads, section_1, section_2,
        *q.stride(), *k.stride(), stride_pos_axis, stride_pos_token, *cos_sin_cache.stride(),
        MROPE=mrope, HALF=half, HALF_PAD=triton.next_power_of_2(half),
        Q_HEADS_PAD=triton.next_power_of_2(num_q_heads), KV_HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        num_warps=4,
        enable_fp_fusion=False,  # keep the reference's separate roundings (no FMA)
    )
