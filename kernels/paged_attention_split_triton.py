"""Split-K support for paged attention: the fp32 scratch for partial results and the merge kernel.

With split-K, program (tile, KV head, split s) of `_paged_attention_kernel` writes for each of its rows

    partial_out[s, token, head, :]  its output over the split's keys, already divided by its softmax sum
    partial_lse[s, token, head]     log2 of that sum plus its running max (log2 units; -inf: no key,
                                    and then no partial_out is written)

and `merge_splits_kernel` combines the splits of each (token, head) with weights 2^(lse_s - max_s lse).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def merge_splits_kernel(
    out_ptr, partial_out_ptr, partial_lse_ptr, query_start_loc_ptr, num_seqs, num_splits,
    stride_o_token, stride_o_head, stride_o_dim,
    stride_po_split, stride_po_token, stride_po_head, stride_pl_split, stride_pl_token,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, SPLITS_PAD: tl.constexpr, QUERY_FILTER: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    """out[token, head] = sum_s 2^(lse_s - max) * partial_s / sum_s 2^(lse_s - max). With PDL
    (kernels/pdl.py) its programs are scheduled while the attention kernel runs and wait for it here."""
    if USE_PDL:
        gdc_wait()
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    # the partials load alongside their lse and the token checks below (one memory round trip, not two;
    # the scratch has a row for every token, scheduled or not)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    split_valid = offs_s < num_splits
    lse = tl.load(partial_lse_ptr + offs_s.to(tl.int64) * stride_pl_split + token * stride_pl_token + head,
                  mask=split_valid, other=float("-inf"))
    split_offsets = offs_s.to(tl.int64)[:, None] * stride_po_split
    partial = tl.load(partial_out_ptr + split_offsets + token * stride_po_token + head * stride_po_head
                      + offs_d[None, :], mask=split_valid[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if token >= tl.load(query_start_loc_ptr + num_seqs):
        return  # not a scheduled token: left untouched, as the reference does
    if QUERY_FILTER != 0:  # the launch covered decodes only (1) or prefill chunks only (2)
        count = tl.zeros([], dtype=tl.int32)  # sequences starting at or before this token
        for first in range(0, num_seqs, 128):
            idx = first + tl.arange(0, 128)
            starts = tl.load(query_start_loc_ptr + idx, mask=idx < num_seqs, other=0)
            count += tl.sum(((starts <= token) & (idx < num_seqs)).to(tl.int32), 0)
        q_len = tl.load(query_start_loc_ptr + count) - tl.load(query_start_loc_ptr + count - 1)
        if (q_len == 1) != (QUERY_FILTER == 1):
            return
    has_keys = lse > float("-inf")  # an empty split wrote no partial (its scratch holds stale values)
    weights = tl.where(has_keys, tl.exp2(lse - tl.max(lse, 0)), 0.0)
    weights = weights / tl.sum(weights, 0)
    partial = tl.where(has_keys[:, None], partial, 0.0)  # stale values (even NaN) get no weight
    result = tl.sum(partial * weights[:, None], 0)
    if USE_PDL:
        gdc_launch_dependents()
    tl.store(out_ptr + token * stride_o_token + head * stride_o_head + offs_d * stride_o_dim,
             result.to(out_ptr.dtype.element_ty), mask=offs_d < HEAD_DIM)


# Split-K scratch, per device: a flat fp32 buffer that only grows. Buffers are never freed, because a
# captured CUDA graph keeps using the one it saw at capture (replacing it would hand its memory back).
_WORKSPACES: dict[torch.device, list[torch.Tensor]] = {}
# (device, splits, T, Hq, D) -> (partial_out, partial_lse) views of the current buffer: saves the host
# a few tensor ops per call; cleared whenever the buffer grows
_SPLIT_VIEWS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def split_k_workspace(device: torch.device, num_elements: int) -> torch.Tensor:
    """An fp32 scratch of at least `num_elements` on `device` (reused across calls; allocate it before
    CUDA-graph capture by running each captured shape once, or by calling this with the largest size)."""
    buffers = _WORKSPACES.setdefault(torch.device(device), [])
    if not buffers or buffers[-1].numel() < num_elements:
        capacity = max(num_elements, 2 * buffers[-1].numel() if buffers else 0)
        buffers.append(torch.empty(capacity, dtype=torch.float32, device=device))
        _SPLIT_VIEWS.clear()
    return buffers[-1]


def split_k_views(
    device: torch.device, num_splits: int, num_tokens: int, num_q_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """partial_out [S, T, Hq, D] and partial_lse [S, T, Hq] (log2 units), both fp32, in the workspace."""
    key = (device, num_splits, num_tokens, num_q_heads, head_dim)
    views = _SPLIT_VIEWS.get(key)
    if views is None:
        if len(_SPLIT_VIEWS) >= 1024:  # eager batches of ever new sizes: keep the lookup small
            _SPLIT_VIEWS.clear()
        out_size = num_splits * num_tokens * num_q_heads * head_dim
        lse_size = num_splits * num_tokens * num_q_heads
        scratch = split_k_workspace(device, out_size + lse_size)
        views = (scratch[:out_size].view(num_splits, num_tokens, num_q_heads, head_dim),
                 scratch[out_size:out_size + lse_size].view(num_splits, num_tokens, num_q_heads))
        _SPLIT_VIEWS[key] = views
    return views
