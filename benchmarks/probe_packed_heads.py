"""Decode attention with all KV heads of a sequence in one program, as extra key rows (H200 probe)

    python benchmarks/probe_packed_heads.py

Our decode kernel runs one program per (sequence, KV head). In the NHD pool a key's KV heads are
adjacent, so that program reads rows of D values that lie Hkv * D apart, and the other heads' programs
read the rows in between. Here one program takes G KV heads (G = Hkv: whole pages, 16 KB at block 16)
by packing them into the key axis of its tile: row r of a [G * N, D] K/V tile is key r // G of head
r % G, so consecutive rows are consecutive in memory. The tile's G * Hq / Hkv query rows (28 -> 32
padded) score against all G * N rows, `tl.dot` as usual, and a mask keeps each query head to its own KV
head's columns. The tensor cores do G times the needed products, which a memory-bound decode can afford
(about 16 FLOP per byte of K/V at G = 4). Split-K and the merge are the engine's
(`merge_splits_kernel`).
"""

from __future__ import annotations

import functools

import triton
import triton.language as tl
from bench_kernels import (
    BLOCK_SIZE,
    HEAD_DIM,
    KV_HEADS,
    Q_HEADS,
    PagedBatch,
    kernel_module,
)
from decode_probe import compare_decode_variants

split_module = kernel_module("paged_attention_split_triton")
merge_num_warps = kernel_module("paged_attention_config").merge_num_warps
_LOG2E = 1.4426950408889634


@triton.jit
def _packed_decode_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, partial_out_ptr, partial_lse_ptr, seq_lens_ptr, block_tables_ptr,
    scale_log2, num_splits, stride_k_page, stride_k_slot, stride_v_page, stride_v_slot, stride_bt_seq,
    stride_po_split, stride_pl_split,
    NUM_KV_HEADS: tl.constexpr, GROUP: tl.constexpr, QUERIES_PER_KV: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, SPLIT_K: tl.constexpr,
):
    pid = tl.program_id(0)
    groups = NUM_KV_HEADS // GROUP
    seq = pid // groups
    first_kv = (pid % groups) * GROUP
    split = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    block_table_row = block_tables_ptr + seq.to(tl.int64) * stride_bt_seq

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_valid = offs_m < GROUP * QUERIES_PER_KV
    q_head = first_kv * QUERIES_PER_KV + offs_m  # [M]: the group's query heads are adjacent
    row_kv = offs_m // QUERIES_PER_KV  # [M] local KV head of each row (>= GROUP: padding)
    num_q_heads = NUM_KV_HEADS * QUERIES_PER_KV
    token = seq.to(tl.int64)
    q = tl.load(q_ptr + (token * num_q_heads + q_head)[:, None] * HEAD_DIM + offs_d[None, :],
                mask=row_valid[:, None], other=0.0)

    offs_r = tl.arange(0, GROUP * BLOCK_N)
    key_in_tile = offs_r // GROUP
    col_kv = offs_r % GROUP  # [G * N] local KV head of each K/V row
    same_head = row_kv[:, None] == col_kv[None, :]  # [M, G * N]
    head_offset = ((first_kv + col_kv) * HEAD_DIM)[:, None] + offs_d[None, :]
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    for tile in range(split, tl.cdiv(seq_len, BLOCK_N), num_splits):
        keys = tile * BLOCK_N + key_in_tile
        valid = keys < seq_len
        pages = tl.load(block_table_row + keys // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        slots = keys % BLOCK_SIZE
        k = tl.load(k_ptr + (pages * stride_k_page + slots * stride_k_slot)[:, None] + head_offset,
                    mask=valid[:, None], other=0.0)
        v = tl.load(v_ptr + (pages * stride_v_page + slots * stride_v_slot)[:, None] + head_offset,
                    mask=valid[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k))  # [M, G * N]
        scores = tl.where(same_head & valid[None, :], scores * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # padding rows: no column ever
        p = tl.exp2(scores - m_ref[:, None])
        alpha = tl.exp2(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    if SPLIT_K:
        has_keys = l_i > 0.0
        lse = tl.where(has_keys, m_i + tl.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
        partial = acc / tl.where(has_keys, l_i, 1.0)[:, None]
        split_offset = split.to(tl.int64)
        tl.store(partial_out_ptr + split_offset * stride_po_split
                 + (token * num_q_heads + q_head)[:, None] * HEAD_DIM + offs_d[None, :], partial,
                 mask=row_valid[:, None])
        tl.store(partial_lse_ptr + split_offset * stride_pl_split + token * num_q_heads + q_head, lse,
                 mask=row_valid)
    else:
        out = acc / l_i[:, None]
        tl.store(out_ptr + (token * num_q_heads + q_head)[:, None] * HEAD_DIM + offs_d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_valid[:, None])


def packed_decode(data: PagedBatch, group: int, block_n: int, warps: int, stages: int, splits: int):
    k_cache, v_cache = data.pool[:, 0], data.pool[:, 1]  # [num_pages, BS, Hkv, D]
    num_tokens = data.batch
    if splits > 1:
        partial_out, partial_lse = split_module.split_k_views(data.q.device, splits, num_tokens, Q_HEADS,
                                                              HEAD_DIM)
    else:
        partial_out = partial_lse = data.out
    queries_per_kv = Q_HEADS // KV_HEADS
    block_m = max(16, triton.next_power_of_2(group * queries_per_kv))
    _packed_decode_kernel[(data.batch * (KV_HEADS // group), splits)](
        data.q, k_cache, v_cache, data.out, partial_out, partial_lse, data.seq_lens, data.block_tables,
        data.scale * _LOG2E, splits, k_cache.stride(0), k_cache.stride(1), v_cache.stride(0),
        v_cache.stride(1), data.block_tables.stride(0),
        partial_out.stride(0) if splits > 1 else 0, partial_lse.stride(0) if splits > 1 else 0,
        NUM_KV_HEADS=KV_HEADS, GROUP=group, QUERIES_PER_KV=queries_per_kv, HEAD_DIM=HEAD_DIM,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_SIZE=BLOCK_SIZE, SPLIT_K=splits > 1,
        num_warps=warps, num_stages=stages,
    )
    if splits > 1:
        split_module.merge_splits_kernel[(num_tokens, Q_HEADS)](
            data.out, partial_out, partial_lse, data.query_start_loc, data.batch, splits,
            *data.out.stride(), *partial_out.stride()[:3], *partial_lse.stride()[:2],
            HEAD_DIM=HEAD_DIM, HEAD_DIM_PAD=HEAD_DIM, SPLITS_PAD=triton.next_power_of_2(splits),
            QUERY_FILTER=0, USE_PDL=False, num_warps=merge_num_warps(splits, HEAD_DIM),
        )
    return data.out


# (batch, context) -> split counts to try (1 = none)
SHAPES = {(64, 4096): [1, 2, 4], (256, 1024): [1], (256, 4096): [1], (16, 4096): [8, 16],
          (1, 32768): [64, 128], (256, 1000): [1]}
TILES = [(4, 16, 4, 2), (4, 16, 4, 3), (4, 16, 8, 2), (4, 32, 8, 2), (4, 32, 4, 2), (2, 32, 4, 2)]


def main() -> None:
    compare_decode_variants(list(SHAPES), lambda batch, seq_len: [
        (f"G{group} n{block_n} w{warps} s{stages} x{splits}",
         functools.partial(packed_decode, group=group, block_n=block_n, warps=warps, stages=stages,
                           splits=splits))
        for group, block_n, warps, stages in TILES for splits in SHAPES[(batch, seq_len)]
    ])


if __name__ == "__main__":
    main()
