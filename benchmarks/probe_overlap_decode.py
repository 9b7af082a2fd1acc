"""Probe: decode attention with the KV loop software-pipelined by hand (`AttentionConfig.overlap`:
iteration i computes tile i's scores before it folds tile i - 1, FlashAttention-3's consumer order),
against SDPA and our default kernel on the same inputs (H200).

    python benchmarks/probe_overlap_decode.py

Each shape runs the default tile config with and without the overlap (both orders: SCORES_FIRST,
FOLD_FIRST), plus neighbouring tiles with SCORES_FIRST (the overlap carries a tile's scores and V across
iterations: more registers, so narrower tiles may pay; `inspect_attention_compile.py` reports them).
TB/s of K+V from CUDA-graph replays over input copies; each variant is checked against SDPA first.
"""

from __future__ import annotations

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
               ("default + overlap, fold first", overlap(base, overlap=attention.FOLD_FIRST))]
    if base.pages_ahead:  # split-K decodes: 64-key tiles, ids ahead
        configs += [("n64 s2 ahead + overlap", overlap(base, num_stages=2)),
                    ("n32 s3 ahead + overlap", overlap(base, block_n=32))]
    else:
        configs += [(f"n{n} s{s} + overlap", overlap(base, block_n=n, num_stages=s))
                    for n, s in ((64, 2), (128, 2), (64, 3)) if (n, s) != (base.block_n, base.num_stages)]
        configs += [("n64 s3 ahead + overlap", overlap(base, block_n=64, num_stages=3, pages_ahead=True))]
    return [(label, lambda data, config=config: data.ours(config)) for label, config in configs]


if __name__ == "__main__":
    compare_decode_variants(SHAPES, variants)
