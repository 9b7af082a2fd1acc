"""Probe: decode attention with the KV loop software-pipelined by hand (`AttentionConfig.overlap`: tile
i's scores and tile i - 1's softmax and P V in one iteration), against SDPA and our default kernel on the
same inputs (H200).

    python benchmarks/probe_overlap_decode.py [--shapes 64x4096 256x4096 ...]

Each shape runs the default tile config with each order (SCORES_FIRST, FOLD_FIRST, V_BEHIND), plus
neighbouring tiles with SCORES_FIRST and with V_BEHIND. The first two carry a tile's scores and V across
iterations (more registers, no shared-memory ring: narrower tiles may pay); V_BEHIND carries only the
scores. `inspect_attention_compile.py` reports registers and pipelining of each. TB/s of K+V from
CUDA-graph replays over input copies; each variant is checked against SDPA first.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools

import torch
from bench_kernels import HEAD_DIM, KV_HEADS, Q_HEADS, Config, attention
from decode_probe import compare_decode_variants

SHAPES = [(1, 32768), (16, 4096), (64, 4096), (256, 1024), (256, 4096), (256, 1000), (48, 4096)]


def default_config(batch: int) -> Config:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return attention.pick_config(1, Q_HEADS // KV_HEADS, HEAD_DIM, 2, batch * KV_HEADS / sms, True)


def variants(batch: int, seq_len: int) -> list:
    base = default_config(batch)
    overlap = functools.partial(dataclasses.replace, overlap=attention.SCORES_FIRST, one_loop=True)
    configs = [("default + overlap, scores first", overlap(base)),
               ("default + overlap, fold first", overlap(base, overlap=attention.FOLD_FIRST)),
               ("default + overlap, V behind", overlap(base, overlap=attention.V_BEHIND))]
    if base.pages_ahead:  # split-K decodes: 64-key tiles, ids ahead
        configs += [("n64 s2 ahead + overlap", overlap(base, num_stages=2)),
                    ("n32 s3 ahead + overlap", overlap(base, block_n=32)),
                    ("n64 s4 ahead + V behind", overlap(base, num_stages=4, overlap=attention.V_BEHIND))]
    else:
        configs += [(f"n{n} s{s} + overlap", overlap(base, block_n=n, num_stages=s))
                    for n, s in ((64, 2), (128, 2), (64, 3)) if (n, s) != (base.block_n, base.num_stages)]
        configs += [("n64 s3 ahead + overlap", overlap(base, block_n=64, num_stages=3, pages_ahead=True))]
        configs += [(f"n{n} s{s}{' ahead' if ahead else ''} + V behind",
                     overlap(base, block_n=n, num_stages=s, pages_ahead=ahead, overlap=attention.V_BEHIND))
                    for n, s, ahead in ((64, 2, False), (128, 2, False), (64, 3, True), (128, 3, True))]
    unique = {}
    for label, config in configs:  # a neighbour that is the default tile: timed once, under its first label
        unique.setdefault(config, label)
    return [(label, lambda data, config=config: data.ours(config)) for config, label in unique.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="+", default=[f"{b}x{s}" for b, s in SHAPES],
                        help="batch x context, e.g. 64x4096 (default: the anchors, 256x1000 and 48x4096)")
    args = parser.parse_args()
    compare_decode_variants([tuple(int(n) for n in shape.split("x")) for shape in args.shapes], variants)


if __name__ == "__main__":
    main()
