"""Paged attention kernel variants at the anchor shapes, against SDPA in the same run (H200).

    python benchmarks/sweep_attention_variants.py [--prefill-only | --decode-only]

Variants of `AttentionConfig` (split counts, tile widths, stages, page ids ahead), at the anchor shapes and
at 33 to 56 sequences of 4096 keys (1 to 2 programs per SM, where the split decision turns). Decode: TB/s
of K+V from CUDA-graph replays over input copies, plus a 1000-key context (the last tile partly masked, as
in the engine), and the GPU time per call of each kernel (attention, merge; SDPA's kernels) from
torch.profiler over the same graph; prefill: causal TFLOP/s (do_bench medians). Every variant is checked
against SDPA first.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools

import torch
import triton
from bench_kernels import (
    DECODE_SHAPES,
    DTYPE,
    HEAD_DIM,
    KV_HEADS,
    PREFILL_SHAPES,
    ROTATE_BYTES,
    Config,
    PagedBatch,
    _time_variant,
    graph_ms,
    median_ms,
    per_second,
    rel_error,
)
from profile_decode_attention import kernel_times

SPLIT = Config(16, 1, 64, 4, 3, True)
BIG = Config(16, 1, 64, 4, 2)
BIG128 = Config(16, 1, 128, 4, 2)


def one_loop(config: Config) -> Config:
    return dataclasses.replace(config, one_loop=True)


def ahead(config: Config) -> Config:
    return dataclasses.replace(config, pages_ahead=True)


# (batch, context) -> [(label, config, num_splits)]
AHEAD_BIG = [("n128 s2 ahead", ahead(one_loop(BIG128)), None), ("n64 s2 ahead", ahead(one_loop(BIG)), None)]
DECODE = {
    (1, 32768): [(f"x{n}", one_loop(SPLIT), n) for n in (48, 96)],
    (16, 4096): [(f"x{n}", one_loop(SPLIT), n) for n in (5, 6)],
    (16, 1000): [],
    # 1 to 2 programs per SM: two splits below 1.5 (SPLIT_BELOW_PROGRAMS_PER_SM), none from there on
    **{(batch, 4096): [("unsplit n128 s2", one_loop(BIG128), 1), ("x2", one_loop(SPLIT), 2),
                       ("x3", one_loop(SPLIT), 3)] for batch in (33, 40, 48, 56)},
    (64, 4096): [("n128 s2 ahead", ahead(one_loop(BIG128)), None), ("n64 s3 ahead", one_loop(SPLIT), None)],
    (256, 1024): AHEAD_BIG,
    (256, 4096): AHEAD_BIG,
}
PREFILL_BASE = Config(256, 36, 64, 16, 3, True)
PREFILL = [
    ("m256 n64 w16 s3 ahead (default)", PREFILL_BASE),
    ("s2", dataclasses.replace(PREFILL_BASE, num_stages=2)),
    ("s4", dataclasses.replace(PREFILL_BASE, num_stages=4)),
    ("ids in-iteration", dataclasses.replace(PREFILL_BASE, pages_ahead=False)),
    ("m128 n64 w8 s3 ahead (before)", Config(128, 18, 64, 8, 3, True)),
]


def page_layouts(table: list, layouts: list[tuple[str, dict]]) -> None:
    """The default kernel on other pool layouts (label, `PagedBatch` options) at the anchor shapes, against
    SDPA on contiguous KV. Diagnostics:
    - page order: shuffled (the benchmark's) against each sequence's pages in order; a gap that closes in
      order is DRAM locality, not the kernel's streaming;
    - page size: shuffled pages of each block size (a page of one KV head is block_size rows of D values,
      Hkv rows apart)."""
    for batch, seq_len in DECODE_SHAPES:
        kv_bytes = 2 * batch * seq_len * KV_HEADS * HEAD_DIM * DTYPE.itemsize
        tbps = functools.partial(per_second, kv_bytes, unit=1e12)
        shape = f"decode {batch}x{seq_len}"
        num_copies = max(1, triton.cdiv(ROTATE_BYTES, kv_bytes))
        for index, (label, options) in enumerate(layouts):
            copies = [PagedBatch(batch, seq_len, 1, **options) for _ in range(num_copies)]
            if index == 0:
                table.append((shape, "sdpa", tbps(graph_ms([c.sdpa for c in copies])), 0.0))
            error = rel_error(copies[0].ours(), copies[0].sdpa())
            table.append((shape, f"default, {label}", tbps(graph_ms([c.ours for c in copies])), error))
            del copies
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefill-only", action="store_true")
    parser.add_argument("--decode-only", action="store_true")
    parser.add_argument("--ordered-pages", action="store_true",
                        help="only the default config at the anchor shapes, on shuffled and in-order pages")
    parser.add_argument("--block-sizes", type=int, nargs="+",
                        help="only the default config at the anchor shapes, on shuffled pages of these sizes")
    args = parser.parse_args()
    table, kernel_lines = [], []
    if args.ordered_pages:
        page_layouts(table, [("shuffled pages", {}), ("pages in order", {"shuffled": False})])
    if args.block_sizes:
        page_layouts(table, [(f"block {size}", {"block_size": size}) for size in args.block_sizes])
    if args.ordered_pages or args.block_sizes:
        args.prefill_only = args.decode_only = True  # nothing else
    for (batch, seq_len), variants in ({} if args.prefill_only else DECODE).items():
        kv_bytes = 2 * batch * seq_len * KV_HEADS * HEAD_DIM * DTYPE.itemsize
        copies = [PagedBatch(batch, seq_len, 1) for _ in range(max(1, triton.cdiv(ROTATE_BYTES, kv_bytes)))]
        reference = copies[0].sdpa()
        tbps = functools.partial(per_second, kv_bytes, unit=1e12)
        shape = f"decode {batch}x{seq_len}"
        table.append((shape, "sdpa", tbps(graph_ms([c.sdpa for c in copies])), 0.0))
        error = rel_error(copies[0].ours(), reference)
        table.append((shape, "default", tbps(graph_ms([c.ours for c in copies])), error))
        kernels = {"sdpa": kernel_times([c.sdpa for c in copies])}
        for label, config, splits in variants:
            row = _time_variant("decode", copies, config, splits, reference, tbps)
            table.append((shape, label, row.get("metric", float("nan")), row.get("rel_error", float("nan"))))
            if "metric" in row:
                kernels[label] = kernel_times([functools.partial(c.ours, config, splits) for c in copies])
        for label, times in kernels.items():  # GPU us per call of each kernel (attention, merge / combine)
            spans = ", ".join(f"{name[:28]} {us:.1f}" for name, us in times.items() if us >= 0.05)
            kernel_lines.append(f"| {shape} | {label} | {spans} |")
        del copies, reference
        torch.cuda.empty_cache()
    for batch, seq_len in [] if args.decode_only else PREFILL_SHAPES:
        data = PagedBatch(batch, seq_len, seq_len)
        reference = data.sdpa()
        tflops = functools.partial(per_second, data.causal_flops(), unit=1e12)
        shape = f"prefill {batch}x{seq_len}"
        table.append((shape, "sdpa", tflops(median_ms(data.sdpa)), 0.0))
        for label, config in PREFILL:
            row = _time_variant("prefill", [data], config, None, reference, tflops)
            table.append((shape, label, row.get("metric", float("nan")), row.get("rel_error", float("nan"))))
        del data, reference
        torch.cuda.empty_cache()
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    if kernel_lines:
        print("| shape | variant | kernels, GPU us per call |\n| --- | --- | --- |")
        print("\n".join(kernel_lines))
    print("| shape | variant | TB/s or TFLOP/s | rel err |\n| --- | --- | --- | --- |")
    for shape, label, value, error in table:
        print(f"| {shape} | {label} | {value:.2f} | {error:.1e} |")


if __name__ == "__main__":
    main()
