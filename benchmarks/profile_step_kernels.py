"""GPU time per kernel inside engine steps: where a decode (or mixed) step's forward time goes.

    python benchmarks/profile_step_kernels.py --batches 1 256 [--mixed 256]

Same model and prompts as bench_decode.py (`qwen2.5-7b` shapes, dummy bf16). For each batch, after the
prefill, runs STEPS decode steps under torch.profiler and sums CUDA kernel time per kernel family (GEMMs,
attention, norms, ...), next to the wall time per step and the step's GPU busy time. `--mixed N` also
profiles steps of the running batch plus an N-token prefill chunk of a new request (a step under media load).
Also times each projection GEMM of the model alone at M = batch (bytes over time, FLOPs over time).
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from bench_decode import NEW_TOKENS, PROMPT_LEN, QWEN25_7B, make_checkpoint_dir

FAMILIES = [  # (family, substrings of kernel names), first match wins
    ("attention", ["paged_attention", "merge_splits"]),
    ("rotary+kv_write", ["rotary_write_kv"]),  # the fused kernel (kernels/rotary_kv_triton.py)
    ("kv_write", ["write_kv", "kv_write"]),
    ("rotary", ["rotary"]),
    ("rms_norm", ["rms_norm"]),
    ("silu_mul", ["silu"]),
    ("gemm", ["gemm", "gemv", "sm90", "cutlass", "nvjet", "xmma", "splitKreduce", "Kernel2"]),
    ("sampling", ["argmax", "reduce", "softmax", "topk", "sort"]),
    ("copy/index", ["copy", "index", "gather", "scatter", "fill", "elementwise", "embedding"]),
]


def family(name: str) -> str:
    lower = name.lower()
    for fam, keys in FAMILIES:
        if any(k.lower() in lower for k in keys):
            return fam
    return "other"


def profile_steps(engine, steps: int) -> tuple[dict[str, float], dict[str, float], float]:
    """Kernel microseconds per step by family and by name, and wall ms per step."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
    by_family: dict[str, float] = collections.defaultdict(float)
    by_name: dict[str, float] = collections.defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            us = event.device_time_total if hasattr(event, "device_time_total") else event.cuda_time_total
            by_family[family(event.name)] += us / steps
            by_name[event.name[:90]] += us / steps
    return by_family, by_name, wall_ms


def gemm_table(batch: int) -> list[str]:
    h, i, v = QWEN25_7B["hidden_size"], QWEN25_7B["intermediate_size"], QWEN25_7B["vocab_size"]
    q = h
    kv = QWEN25_7B["num_key_value_heads"] * (h // QWEN25_7B["num_attention_heads"])
    shapes = {
        "qkv": (h, q + 2 * kv),
        "o_proj": (q, h),
        "gate_up": (h, 2 * i),
        "down": (i, h),
        "lm_head": (h, v),
    }
    lines = []
    for name, (k, n) in shapes.items():
        weight = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
        bias = torch.randn(n, dtype=torch.bfloat16, device="cuda") if name == "qkv" else None
        x = torch.randn(batch, k, dtype=torch.bfloat16, device="cuda")
        graph = torch.cuda.CUDAGraph()
        torch.nn.functional.linear(x, weight, bias)
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            for _ in range(20):
                torch.nn.functional.linear(x, weight, bias)
        graph.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            graph.replay()
        end.record()
        end.synchronize()
        us = start.elapsed_time(end) * 1e3 / 100
        tbps = weight.numel() * 2 / (us * 1e-6) / 1e12
        tflops = 2 * batch * k * n / (us * 1e-6) / 1e12
        lines.append(f"| {batch} | {name} | {k}x{n} | {us:.1f} | {tbps:.2f} | {tflops:.0f} |")
        del weight, x
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--mixed", type=int, nargs="*", default=[256])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    from omniserve.config import EngineConfig
    from omniserve.core.engine_core import EngineCore
    from omniserve.core.messages import EngineCoreRequest
    from omniserve.sampling_params import SamplingParams

    start = time.perf_counter()
    config = EngineConfig.from_kwargs(
        model=make_checkpoint_dir(),
        load_format="dummy",
        dtype="bfloat16",
        num_kv_blocks=12288,
        max_num_seqs=max(args.batches) + 1,
        max_num_batched_tokens=16384,
        mixed_step_token_budget=0,  # the batch prefills at once, as in bench_decode.py
    )
    engine = EngineCore(config)
    print(f"engine start {time.perf_counter() - start:.1f} s", flush=True)
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    summary = []
    for batch in args.batches:
        for index in range(batch):
            ids = torch.randint(0, 150000, (PROMPT_LEN,)).tolist()
            engine.add_request(
                EngineCoreRequest(f"{batch}-{index}", ids, params, [], NEW_TOKENS, time.monotonic())
            )
        while any(r.num_output_tokens == 0 for r in engine.scheduler.requests.values()):
            engine.step()
        for _ in range(3):
            engine.step()
        fam, names, wall = profile_steps(engine, args.steps)
        summary.append((f"decode {batch}", fam, wall))
        print(f"\n== decode batch {batch}: wall {wall:.2f} ms/step; top kernels (us/step):")
        for name, us in sorted(names.items(), key=lambda kv: -kv[1])[:14]:
            print(f"  {us:9.1f}  {name}")
        for chunk in args.mixed:
            mixed = []
            for index in range(args.steps):
                ids = torch.randint(0, 150000, (chunk,)).tolist()
                mixed.append(
                    EngineCoreRequest(f"m{batch}-{chunk}-{index}", ids, params, [], 1, time.monotonic())
                )
            # one new chunk-sized prompt per step: every profiled step is decodes + one prefill chunk
            from torch.profiler import ProfilerActivity, profile

            engine.add_request(mixed[0])
            engine.step()  # warm-up of this shape
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                t0 = time.perf_counter()
                for request in mixed[1:]:
                    engine.add_request(request)
                    engine.step()
                torch.cuda.synchronize()
                wall = (time.perf_counter() - t0) * 1e3 / (len(mixed) - 1)
            fam_m: dict[str, float] = collections.defaultdict(float)
            for event in prof.events():
                if event.device_type == torch.autograd.DeviceType.CUDA:
                    fam_m[family(event.name)] += event.device_time_total / (len(mixed) - 1)
            summary.append((f"mixed {batch}+{chunk}", fam_m, wall))
        engine.abort_requests(list(engine.scheduler.requests))
        engine.step()
    families = [f for f, _ in FAMILIES] + ["other"]
    gemm_lines = ["| M | gemm | KxN | us | TB/s | TFLOP/s |", "| --- | --- | --- | --- | --- | --- |"]
    for batch in args.batches:
        gemm_lines += gemm_table(batch)
    print("\n" + "\n".join(gemm_lines))
    print("\n| step | wall ms | GPU busy ms | " + " | ".join(families) + " |")
    print("| --- | --- | --- |" + " --- |" * len(families))
    for label, fam, wall in summary:
        busy = sum(fam.values()) / 1e3
        print(
            f"| {label} | {wall:.2f} | {busy:.2f} | "
            + " | ".join(f"{fam.get(f, 0) / 1e3:.2f}" for f in families)
            + " |"
        )


if __name__ == "__main__":
    with torch.inference_mode():
        main()
