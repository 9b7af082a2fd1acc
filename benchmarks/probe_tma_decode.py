"""Does decode attention stream paged K/V faster with TMA copies than with pointer loads? (H200 probe)

    python benchmarks/probe_tma_decode.py

A prototype decode kernel (one query token per sequence, no split-K), against our kernel and SDPA in the
same run at the big anchor shapes, where our pointer-load kernel trails SDPA by 0.5-2%
(benchmarks/results/kernels_sweep.md). One program per (sequence, KV head), the head group's query
rows padded to 16. K/V pages come in through one 2-D TMA descriptor over the whole pool
[num_pages * 2 * block, Hkv * D]: page p's K is the box of rows (2p) * block.., V the box at (2p + 1) * block,
columns kv_head * D.. . Each iteration copies PAGES pages of K and of V (one box each) and folds them
into the online softmax one page at a time; the page ids are read one iteration ahead so that the copies
of `num_stages - 1` iterations are in flight. Keys past the sequence's end are masked in the scores and
their V rows zeroed (a pool's unwritten slots may hold anything).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from bench_kernels import (
    BLOCK_SIZE,
    HEAD_DIM,
    KV_HEADS,
    Q_HEADS,
    PagedBatch,
)
from decode_probe import compare_decode_variants
from triton.tools.tensor_descriptor import TensorDescriptor

_LOG2E = 1.4426950408889634


@triton.jit
def _page_id(block_table_row, index, num_pages):
    return tl.load(block_table_row + index, mask=index < num_pages, other=0)


@triton.jit
def _fold_page(acc, l_i, m_i, q, k, v, first_key, seq_len, scale_log2, BLOCK_SIZE: tl.constexpr):
    keys = first_key + tl.arange(0, BLOCK_SIZE)
    valid = keys < seq_len
    scores = tl.dot(q, tl.trans(k))  # [M, BS]
    scores = tl.where(valid[None, :], scores * scale_log2, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    p = tl.exp2(scores - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.where(valid[:, None], v, 0.0)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, l_i, m_new


@triton.jit
def _tma_decode_kernel(
    q_ptr, kv_desc, out_ptr, seq_lens_ptr, block_tables_ptr, scale_log2, stride_bt_seq,
    NUM_KV_HEADS: tl.constexpr, QUERIES_PER_KV: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_SIZE: tl.constexpr, PAGES: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    pid = tl.program_id(0)
    kv_head = pid % NUM_KV_HEADS
    seq = pid // NUM_KV_HEADS
    seq_len = tl.load(seq_lens_ptr + seq)
    block_table_row = block_tables_ptr + seq.to(tl.int64) * stride_bt_seq
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_valid = offs_m < QUERIES_PER_KV
    head = kv_head * QUERIES_PER_KV + offs_m % QUERIES_PER_KV
    q = tl.load(q_ptr + seq * (NUM_KV_HEADS * QUERIES_PER_KV * HEAD_DIM) + head[:, None] * HEAD_DIM
                + offs_d[None, :], mask=row_valid[:, None], other=0.0)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    num_pages = tl.cdiv(seq_len, BLOCK_SIZE)
    col = kv_head * HEAD_DIM
    page0 = _page_id(block_table_row, 0, num_pages)
    page1 = _page_id(block_table_row, 1, num_pages)
    for first in tl.range(0, num_pages, PAGES, num_stages=NUM_STAGES):
        k0 = kv_desc.load([page0 * (2 * BLOCK_SIZE), col])  # [BS, D]
        v0 = kv_desc.load([page0 * (2 * BLOCK_SIZE) + BLOCK_SIZE, col])
        if PAGES == 2:
            k1 = kv_desc.load([page1 * (2 * BLOCK_SIZE), col])
            v1 = kv_desc.load([page1 * (2 * BLOCK_SIZE) + BLOCK_SIZE, col])
        page0 = _page_id(block_table_row, first + PAGES, num_pages)  # the next iteration's, read ahead
        page1 = _page_id(block_table_row, first + PAGES + 1, num_pages)
        acc, l_i, m_i = _fold_page(acc, l_i, m_i, q, k0, v0, first * BLOCK_SIZE, seq_len, scale_log2,
                                   BLOCK_SIZE)
        if PAGES == 2:
            acc, l_i, m_i = _fold_page(acc, l_i, m_i, q, k1, v1, (first + 1) * BLOCK_SIZE, seq_len,
                                       scale_log2, BLOCK_SIZE)
    out = acc / l_i[:, None]
    tl.store(out_ptr + seq * (NUM_KV_HEADS * QUERIES_PER_KV * HEAD_DIM) + head[:, None] * HEAD_DIM
             + offs_d[None, :], out.to(out_ptr.dtype.element_ty), mask=row_valid[:, None])


def tma_decode(data: PagedBatch, pages: int, warps: int, stages: int) -> torch.Tensor:
    pool = data.pool  # [num_pages, 2, BS, Hkv, D]
    rows = pool.shape[0] * 2 * BLOCK_SIZE
    kv_desc = TensorDescriptor(pool, [rows, KV_HEADS * HEAD_DIM], [KV_HEADS * HEAD_DIM, 1],
                               [BLOCK_SIZE, HEAD_DIM])
    _tma_decode_kernel[(data.batch * KV_HEADS,)](
        data.q, kv_desc, data.out, data.seq_lens, data.block_tables, data.scale * _LOG2E,
        data.block_tables.stride(0),
        NUM_KV_HEADS=KV_HEADS, QUERIES_PER_KV=Q_HEADS // KV_HEADS, HEAD_DIM=HEAD_DIM, BLOCK_M=16,
        BLOCK_SIZE=BLOCK_SIZE, PAGES=pages, NUM_STAGES=stages, num_warps=warps,
    )
    return data.out


SHAPES = [(64, 4096), (256, 1024), (256, 4096), (16, 4096), (256, 1000)]
VARIANTS = [(1, 4, 3), (1, 4, 4), (1, 4, 6), (1, 4, 8), (2, 4, 3), (2, 4, 4), (2, 8, 4), (1, 8, 6)]


def main() -> None:
    compare_decode_variants(SHAPES, lambda batch, seq_len: [
        (f"tma pages {pages} w{warps} s{stages}",
         functools.partial(tma_decode, pages=pages, warps=warps, stages=stages))
        for pages, warps, stages in VARIANTS
    ])


if __name__ == "__main__":
    main()
