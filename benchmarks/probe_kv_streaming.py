"""How fast can a Triton program stream paged K/V, by how many KV heads one program reads? (H200 probe)

    python benchmarks/probe_kv_streaming.py

No attention math: each program reads its sequence's K and V through the block table, 64 keys per
iteration, and sums them (so the loads cannot be dropped). The pool is the benchmark's
[num_pages, 2, block 16, Hkv 4, D 128] bf16. In NHD one key's heads are adjacent, so a program that reads
h heads reads rows of h x 256 B, 1 KB apart. With h = 4 it reads whole 16 KB pages.
- heads_per_program 1: our decode kernel's access pattern (one program per (sequence, KV head));
- 2 / 4: rows of 512 B / 1 KB.
Pages shuffled (as bench_kernels.py) and in order. TB/s = K+V bytes / time (CUDA-graph replays over input
copies >= 256 MiB). If wider rows stream much faster than one head's, a decode kernel that serves all
heads of a sequence per program has room to beat SDPA (benchmarks/results/kernels_sweep.md, page order).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from bench_kernels import BLOCK_SIZE, DTYPE, HEAD_DIM, KV_HEADS, ROTATE_BYTES, graph_ms, per_second


@triton.jit
def _stream_kernel(pool_ptr, block_tables_ptr, out_ptr, seq_len, max_blocks, stride_page, stride_kv,
                   stride_slot, num_splits, HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, NUM_KV_HEADS: tl.constexpr,
                   NUM_STAGES: tl.constexpr):
    pid = tl.program_id(0)
    groups = NUM_KV_HEADS // HEADS
    seq = pid // groups
    group = pid % groups
    split = tl.program_id(1)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, HEADS * HEAD_DIM)  # the group's heads, adjacent in memory
    base = pool_ptr + group * HEADS * HEAD_DIM
    acc = tl.zeros([HEADS * HEAD_DIM], dtype=tl.float32)
    tiles = tl.cdiv(seq_len, BLOCK_N)
    for tile in tl.range(split, tiles, num_splits, num_stages=NUM_STAGES):
        keys = tile * BLOCK_N + offs_n
        pages = tl.load(block_tables_ptr + seq * max_blocks + keys // BLOCK_SIZE)
        ptrs = (base + pages.to(tl.int64)[:, None] * stride_page + (keys % BLOCK_SIZE)[:, None] * stride_slot
                + offs_c[None, :])
        k = tl.load(ptrs)
        v = tl.load(ptrs + stride_kv)
        acc += tl.sum(k.to(tl.float32) + v.to(tl.float32), 0)
    tl.store(out_ptr + (pid * num_splits + split) * HEADS * HEAD_DIM + offs_c, acc)


class Pool:
    def __init__(self, batch: int, seq_len: int, shuffled: bool) -> None:
        pages_per_seq = triton.cdiv(seq_len, BLOCK_SIZE)
        num_pages = batch * pages_per_seq + 7
        self.pool = torch.randn(num_pages, 2, BLOCK_SIZE, KV_HEADS, HEAD_DIM, device="cuda", dtype=DTYPE)
        order = (torch.randperm if shuffled else torch.arange)(num_pages, device="cuda")
        self.block_tables = order[: batch * pages_per_seq].view(batch, pages_per_seq).int().contiguous()
        self.batch, self.seq_len = batch, seq_len
        self.out = torch.empty(batch * KV_HEADS * 64 * HEAD_DIM, device="cuda", dtype=torch.float32)

    def stream(self, heads: int, block_n: int, warps: int, stages: int, splits: int) -> None:
        grid = (self.batch * (KV_HEADS // heads), splits)
        _stream_kernel[grid](
            self.pool, self.block_tables, self.out, self.seq_len, self.block_tables.shape[1],
            self.pool.stride(0), self.pool.stride(1), self.pool.stride(2), splits,
            HEADS=heads, HEAD_DIM=HEAD_DIM, BLOCK_N=block_n, BLOCK_SIZE=BLOCK_SIZE, NUM_KV_HEADS=KV_HEADS,
            NUM_STAGES=stages, num_warps=warps,
        )


VARIANTS = [  # (heads per program, keys per tile, warps, stages)
    (1, 64, 4, 2), (1, 128, 4, 2), (1, 64, 4, 3),
    (2, 64, 4, 2), (2, 32, 4, 3), (2, 64, 8, 3),
    (4, 32, 4, 2), (4, 32, 8, 3), (4, 64, 8, 2), (4, 16, 4, 4),
]


def main() -> None:
    rows = []
    for batch, seq_len in [(64, 4096), (256, 1024), (256, 4096), (16, 4096)]:
        kv_bytes = 2 * batch * seq_len * KV_HEADS * HEAD_DIM * DTYPE.itemsize
        tbps = functools.partial(per_second, kv_bytes, unit=1e12)
        for shuffled in (True, False):
            copies = max(1, triton.cdiv(ROTATE_BYTES, kv_bytes))
            pools = [Pool(batch, seq_len, shuffled) for _ in range(copies)]
            for heads, block_n, warps, stages in VARIANTS:
                programs = batch * KV_HEADS // heads
                splits = max(1, min(16, (2 * 132) // programs))  # about two programs per SM at least
                fns = [functools.partial(p.stream, heads, block_n, warps, stages, splits) for p in pools]
                value = tbps(graph_ms(fns, rounds=5, replays=5))
                rows.append((f"{batch}x{seq_len}", "shuffled" if shuffled else "in order",
                             f"h{heads} n{block_n} w{warps} s{stages} x{splits}", value))
                print(rows[-1], flush=True)
            del pools
            torch.cuda.empty_cache()
    print("\n| shape | pages | variant | TB/s |\n| --- | --- | --- | --- |")
    for shape, pages, variant, value in rows:
        print(f"| {shape} | {pages} | {variant} | {value:.2f} |")


if __name__ == "__main__":
    main()
