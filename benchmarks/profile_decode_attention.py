"""GPU time per kernel of decode attention, ours (attention + split-K merge) against SDPA's kernels.

    python benchmarks/profile_decode_attention.py [--shapes 1x32768 16x4096] [--splits 16 32 64]

For each decode shape of bench_kernels.py (Hq 28 / Hkv 4, D 128, bf16, paged block 16 with shuffled pages),
each split count and tile width: one CUDA graph of calls rotating over input copies (beyond the L2, as
bench_kernels.py times them), replayed under torch.profiler; prints the mean GPU time per call of every
kernel, and the graph time per call. This separates the attention kernel from the merge and from the
launch gaps between them, which the end-to-end figure of bench_kernels.py cannot.
"""

from __future__ import annotations

import argparse
import collections

import torch
import triton
from bench_kernels import (
    DTYPE,
    HEAD_DIM,
    KV_HEADS,
    ROTATE_BYTES,
    Config,
    PagedBatch,
    capture_rotation,
    graph_ms,
)


def kernel_times(fns: list, rounds: int = 10) -> dict[str, float]:
    """Mean us per call of each kernel of `fns` (one call per input copy) replayed from a CUDA graph."""
    from torch.profiler import ProfilerActivity, profile

    graph = capture_rotation(fns, rounds)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
    calls = 3 * rounds * len(fns)
    times: dict[str, float] = collections.defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            times[event.name[:60]] += event.device_time_total / calls
    return dict(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="+", default=["1x32768", "16x4096", "64x4096"])
    parser.add_argument("--splits", type=int, nargs="*", default=[])
    parser.add_argument("--block-n", type=int, nargs="*", default=[])
    parser.add_argument("--stages", type=int, default=2)
    args = parser.parse_args()
    lines = ["| shape | variant | graph us/call | TB/s | kernels (us per call) |",
             "| --- | --- | --- | --- | --- |"]
    for shape in args.shapes:
        batch, seq_len = map(int, shape.split("x"))
        kv_bytes = 2 * batch * seq_len * KV_HEADS * HEAD_DIM * DTYPE.itemsize
        copies = [PagedBatch(batch, seq_len, 1) for _ in range(max(1, triton.cdiv(ROTATE_BYTES, kv_bytes)))]
        variants = {"ours (default)": [c.ours for c in copies], "sdpa": [c.sdpa for c in copies]}
        for block_n in args.block_n:
            for splits in args.splits or [None]:
                config = Config(16, 1, block_n, 4, args.stages)
                variants[f"block_n {block_n} splits {splits}"] = [
                    (lambda c=c, config=config, splits=splits: c.ours(config, splits)) for c in copies
                ]
        for label, fns in variants.items():
            ms = graph_ms(fns)
            kernels = kernel_times(fns)
            ranked = sorted(kernels.items(), key=lambda kv: -kv[1])
            text = ", ".join(f"{name} {us:.1f}" for name, us in ranked)
            tbps = kv_bytes / (ms * 1e-3) / 1e12
            lines.append(f"| {shape} | {label} | {ms * 1e3:.1f} | {tbps:.2f} | {text} |")
            print(lines[-1], flush=True)
        del copies
        torch.cuda.empty_cache()
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
