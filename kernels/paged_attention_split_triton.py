"""Split-K support for paged attention: the scratch for partial results, the arrival counters, and the
merge that the last split of each query tile runs inside `_paged_attention_kernel` (no second launch).

With split-K, program (tile, KV head, split s) of `_paged_attention_kernel` writes for each of its rows

    partial_out[s, token, head, :]  its output over the split's keys, already divided by its softmax sum
    partial_lse[s, token, head]     log2 of that sum plus its running max (log2 units; -inf: the split
                                    holds keys for the tile but none that this row may see)

(a split with no key at all for its tile writes nothing), then counts itself in counters[pid], one int32
per program of grid axis 0. The program that counts last merges the splits of its rows with weights
2^(lse_s - max_s lse) into `out` and sets its counter back to 0, so every counter is 0 between launches
(a CUDA graph replays with the same counters; the decode and prefill launches of a step share them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl


@triton.jit
def tile_rows(q_start, q_len, local_tile, kv_head, ROWS: tl.constexpr, BLOCK_Q: tl.constexpr,
              QUERIES_PER_KV: tl.constexpr):
    """The rows of a query tile (the attention kernel's and the merge's): row m is query
    local_tile * BLOCK_Q + m // QUERIES_PER_KV of the sequence's chunk and head
    kv_head * QUERIES_PER_KV + m % QUERIES_PER_KV; rows past BLOCK_Q * QUERIES_PER_KV or q_len are
    padding. Returns [ROWS] query offsets within the chunk, tokens (int64), heads and validity."""
    offs_m = tl.arange(0, ROWS)
    q_offset = local_tile * BLOCK_Q + offs_m // QUERIES_PER_KV
    row_valid = (offs_m < BLOCK_Q * QUERIES_PER_KV) & (q_offset < q_len)
    q_head = kv_head * QUERIES_PER_KV + offs_m % QUERIES_PER_KV
    token = (q_start + q_offset).to(tl.int64)
    return q_offset, token, q_head, row_valid


@triton.jit
def merge_if_last_split(
    out_ptr, partial_out_ptr, partial_lse_ptr, counter_ptr, num_splits, num_used_splits,
    q_start, q_len, local_tile, kv_head,
    stride_o_token, stride_o_head, stride_o_dim,
    stride_po_split, stride_po_token, stride_po_head, stride_pl_split, stride_pl_token,
    BLOCK_Q: tl.constexpr, QUERIES_PER_KV: tl.constexpr, MERGE_ROWS: tl.constexpr,
    SPLIT_CHUNK: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
):
    """Count this program's split in `counter_ptr`; in the last of the `num_splits` programs to arrive,
    write out[token, head] = sum_s 2^(lse_s - max) * partial_s / sum_s 2^(lse_s - max) over the splits
    [0, num_used_splits) that hold keys, for the tile's rows (MERGE_ROWS: BLOCK_Q * QUERIES_PER_KV
    rounded up to a power of two, without the padding rows of a decode tile).

    The merge is one program's serial tail after all the splits, so its loads must not wait on each
    other: each step of the loop takes SPLIT_CHUNK splits, unrolled (sm_90 SASS: all their loads are
    issued before any of the math, one L2 round trip per step instead of per split), and folds them in
    with a running max. All tensors share the [rows, D] layout of the accumulator: no layout conversion
    (shared memory and barriers) per split.

    Memory ordering on the GPU (the interpreter runs programs one after another, in grid order, and
    cannot show it). Compiled by Triton 3.6 for sm_90 this is, per program:

        bar.sync                                      all warps' partial / lse stores are done (CTA)
        @thread0 atom.global.gpu.acq_rel.add [counter]
        @thread0 st.shared; bar.sync; ld.shared       the count handed to every thread
        last only: bar.sync; ld.global.cg partials ...; st.global out; @thread0 st.global [counter] = 0

    - release: the barrier puts every warp's stores before thread 0's atomic in causality order, and a
      release at GPU scope is cumulative (the pattern of cooperative groups' grid sync: barrier, then one
      thread's fence + atomic);
    - acquire: the atomics of one counter are acq_rel RMWs reading each other in a chain, so each split's
      release synchronizes with every later arrival, the last one included; its acquire is followed by
      barriers before any thread's loads. Those loads are `.cg` (from L2, never from the SM's L1, which
      is not coherent across SMs: the lse of one token's heads share cache lines across KV heads, so an
      L1 line filled by an earlier program on this SM could hold values another split has since replaced);
    - reset: only the last program stores 0, from the thread of its atomic, once all the others have
      added (it read num_splits - 1); nothing reads the counter again in this launch, and the next
      launch starts after this one ends (stream order), with all counters 0."""
    tl.debug_barrier()
    arrived = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")  # splits counted before this one
    if arrived == num_splits - 1:
        tl.debug_barrier()
        _, token, q_head, row_valid = tile_rows(q_start, q_len, local_tile, kv_head, MERGE_ROWS, BLOCK_Q,
                                                QUERIES_PER_KV)
        offs_d = tl.arange(0, HEAD_DIM_PAD)
        row_mask = row_valid[:, None] & (offs_d < HEAD_DIM)[None, :]  # [R, Dp]
        lse_rows = token * stride_pl_token + q_head
        partial_rows = (token * stride_po_token + q_head * stride_po_head)[:, None] + offs_d[None, :]
        max_lse = tl.full([MERGE_ROWS], float("-inf"), dtype=tl.float32)  # running max over the splits
        weight_sum = tl.zeros([MERGE_ROWS], dtype=tl.float32)
        acc = tl.zeros([MERGE_ROWS, HEAD_DIM_PAD], dtype=tl.float32)
        split_lse_ptr = partial_lse_ptr  # of split `first + j` below (pointer steps: 64-bit offsets)
        split_partial_ptr = partial_out_ptr
        for first in range(0, num_used_splits, SPLIT_CHUNK):
            for j in tl.static_range(SPLIT_CHUNK):
                split_valid = first + j < num_used_splits
                lse = tl.load(split_lse_ptr + lse_rows, mask=split_valid & row_valid, other=float("-inf"),
                              cache_modifier=".cg")
                partial = tl.load(split_partial_ptr + partial_rows, mask=split_valid & row_mask, other=0.0,
                                  cache_modifier=".cg")
                new_max = tl.maximum(max_lse, lse)
                new_ref = tl.where(new_max == float("-inf"), 0.0, new_max)
                rescale = tl.exp2(max_lse - new_ref)
                weight = tl.exp2(lse - new_ref)
                acc = acc * rescale[:, None] + weight[:, None] * partial
                weight_sum = weight_sum * rescale + weight
                max_lse = new_max
                split_lse_ptr += stride_pl_split
                split_partial_ptr += stride_po_split
        result = acc / tl.where(weight_sum > 0.0, weight_sum, 1.0)[:, None]
        tl.store(out_ptr + token[:, None] * stride_o_token + q_head[:, None] * stride_o_head
                 + offs_d[None, :] * stride_o_dim, result.to(out_ptr.dtype.element_ty), mask=row_mask)
        tl.store(counter_ptr, 0)


def merge_layout(block_q: int, queries_per_kv: int, head_dim_pad: int, num_warps: int) -> tuple[int, int]:
    """(MERGE_ROWS, SPLIT_CHUNK) of `merge_if_last_split`: the tile's rows without a decode tile's
    padding, and as many splits per step as keep their [rows, D] fp32 partials within ~64 registers a
    thread (8 for a decode tile of 8 rows x 128, 1 for a 128-row prefill tile: bandwidth-bound anyway)."""
    merge_rows = triton.next_power_of_2(block_q * queries_per_kv)
    elements_per_split = merge_rows * head_dim_pad
    chunk = max(1, min(16, 64 * 32 * num_warps // elements_per_split))
    return merge_rows, 1 << (chunk.bit_length() - 1)


# Split-K scratch and counters, per device: buffers that only grow. They are never freed, because a
# captured CUDA graph keeps using the ones it saw at capture (replacing them would hand their memory back).
_WORKSPACES: dict[torch.device, list[torch.Tensor]] = {}
_COUNTERS: dict[torch.device, list[torch.Tensor]] = {}
# (device, splits, T, Hq, D) -> (partial_out, partial_lse) views of the current buffer: saves the host
# a few tensor ops per call; cleared whenever the buffer grows
_SPLIT_VIEWS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _grown(buffers: list[torch.Tensor], num_elements: int, make: Callable[[int], torch.Tensor]) -> bool:
    """Append a buffer of at least `num_elements` (at least twice the last) made by `make(size)` if the
    last one is too small; True if it did."""
    if buffers and buffers[-1].numel() >= num_elements:
        return False
    buffers.append(make(max(num_elements, 2 * buffers[-1].numel() if buffers else 0)))
    return True


def split_k_workspace(device: torch.device, num_elements: int) -> torch.Tensor:
    """An fp32 scratch of at least `num_elements` on `device` (reused across calls; allocate it before
    CUDA-graph capture by running each captured shape once, or by calling this with the largest size)."""
    buffers = _WORKSPACES.setdefault(torch.device(device), [])
    if _grown(buffers, num_elements, lambda size: torch.empty(size, dtype=torch.float32, device=device)):
        _SPLIT_VIEWS.clear()
    return buffers[-1]


def split_k_counters(device: torch.device, num_programs: int) -> torch.Tensor:
    """int32 arrival counters, at least `num_programs`, all 0 between launches (allocated zeroed; each
    launch's last split resets the counters it used). Allocate before capture, as the workspace."""
    buffers = _COUNTERS.setdefault(torch.device(device), [])
    _grown(buffers, num_programs, lambda size: torch.zeros(size, dtype=torch.int32, device=device))
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
