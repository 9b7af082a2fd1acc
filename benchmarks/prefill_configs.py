"""Prefill attention TFLOP/s of a few tile configs at both anchor shapes (do_bench medians, checked vs SDPA).

    python benchmarks/prefill_configs.py
"""

import functools

from bench_kernels import PREFILL_SHAPES, Config, PagedBatch, median_ms, per_second, rel_error

CONFIGS = [Config(128, 18, 64, 8, 3, True), Config(128, 18, 128, 8, 3, True), Config(128, 18, 64, 8, 4, True),
           Config(128, 18, 128, 8, 2, False)]

for batch, seq_len in PREFILL_SHAPES:
    data = PagedBatch(batch, seq_len, seq_len)
    reference = data.sdpa()
    tflops = functools.partial(per_second, data.causal_flops(), unit=1e12)
    print(f"{batch}x{seq_len}: sdpa {tflops(median_ms(data.sdpa)):.0f}", flush=True)
    for config in CONFIGS:
        error = rel_error(data.ours(config), reference)
        speed = tflops(median_ms(functools.partial(data.ours, config)))
        print(f"  {config}: {speed:.0f} TFLOP/s, rel err {error:.1e}", flush=True)
