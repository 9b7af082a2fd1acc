"""GPU benchmark of the Triton kernels: paged attention (decode, prefill) against SDPA, plus the small ones.

    python benchmarks/bench_kernels.py [--out benchmarks/results/] [--sweep] [--skip-small]

Shapes are Qwen2.5-7B's attention (Hq 28, Hkv 4, D 128, bf16; see shared/notes/gpu-anchors.md).
- decode: our kernel reads a paged pool (block 16, page ids shuffled, K/V as strided views of one pool
  tensor); SDPA reads contiguous [B, Hkv, S, D] K/V. Bandwidth = K + V bytes of the context / time.
- prefill (causal, no earlier context): useful FLOPs = 4 * B * Hq * D * L (L + 1) / 2 over time.
Every kernel is checked against SDPA (or its torch reference) before it is timed. Decode times are
medians of CUDA-graph replays rotating over copies of the inputs (>= 256 MiB of K+V, beyond the L2), the
way the engine runs decode; the eager column is `triton.testing.do_bench` (CUDA events, L2 flushed),
which also counts host launch cost when it exceeds the kernel. Prefill and the small kernels: do_bench
medians. `--sweep` also times tile configs and split counts. Writes results.json and results.md under
--out; prints the short table last.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

ROOT = Path(__file__).resolve().parents[1]


def kernel_module(name: str) -> ModuleType:
    """`omniserve.kernels.<name>` when installed, else `kernels.<name>` from the repository root."""
    try:
        return importlib.import_module(f"omniserve.kernels.{name}")
    except ModuleNotFoundError:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        return importlib.import_module(f"kernels.{name}")


attention = kernel_module("paged_attention_triton")
Q_HEADS, KV_HEADS, HEAD_DIM, BLOCK_SIZE = 28, 4, 128, 16
DTYPE = torch.bfloat16
DECODE_SHAPES = [(1, 32768), (16, 4096), (64, 4096), (256, 1024), (256, 4096)]
PREFILL_SHAPES = [(1, 8192), (4, 4096)]
Config = attention.AttentionConfig
ROTATE_BYTES = 1 << 28  # decode timing rotates over input copies until K + V reach 256 MiB (L2: 60 MB)
# (block_n, num_warps, num_stages) of decode tiles (16 rows: 7 heads of one token); each runs with the
# split counts of SPLIT_SWEEP (None = the kernel's own choice)
DECODE_SWEEP = [(128, 4, 2), (64, 4, 2), (64, 4, 3), (64, 4, 4), (128, 4, 3), (32, 4, 6), (64, 8, 4)]
SPLIT_SWEEP = {1: [None, 64, 128], 16: [None, 4, 8, 12], 64: [None, 2]}
PREFILL_SWEEP = [Config(256, 36, 64, 16, 3, True), Config(256, 36, 64, 16, 2, True),
                 Config(256, 36, 64, 16, 4, True), Config(128, 18, 64, 8, 3, True),
                 Config(128, 18, 128, 8, 3, True), Config(64, 9, 64, 4, 4), Config(64, 9, 32, 4, 5)]


def median_ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def host_us(fn, calls: int = 100) -> float:
    """Host time per call (launch cost): back-to-back calls without waiting for the GPU."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def per_second(amount: float, ms: float, unit: float) -> float:
    """amount (bytes, FLOPs) done in `ms` milliseconds, per second, in `unit`s (1e12: tera)."""
    return amount / (ms * 1e-3) / unit


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.float(), expected.float()
    if not torch.isfinite(actual).all():
        return float("inf")
    return ((actual - expected).norm() / expected.norm()).item()


class PagedBatch:
    """B sequences of `seq_len` tokens in a paged pool [num_pages, 2, block_size, Hkv, D] with shuffled pages
    (`shuffled=False`: each sequence's pages in order, one after another; a diagnostic),
    the same K/V as contiguous [B, Hkv, S, D] for SDPA, and `q_len` queries per sequence (the last ones)."""

    def __init__(
        self, batch: int, seq_len: int, q_len: int, shuffled: bool = True, block_size: int = BLOCK_SIZE
    ) -> None:
        pages_per_seq = triton.cdiv(seq_len, block_size)
        num_pages = batch * pages_per_seq + 7
        self.pool = torch.randn(num_pages, 2, block_size, KV_HEADS, HEAD_DIM, device="cuda", dtype=DTYPE)
        order = (torch.randperm if shuffled else torch.arange)(num_pages, device="cuda")
        page_ids = order[: batch * pages_per_seq]
        self.block_tables = page_ids.view(batch, pages_per_seq).int()
        # [B, pages, 2, block, Hkv, D] -> [B, 2, Hkv, S, D]
        gathered = self.pool[self.block_tables.long()].permute(0, 2, 4, 1, 3, 5)
        contiguous = gathered.reshape(batch, 2, KV_HEADS, pages_per_seq * block_size, HEAD_DIM)
        self.k = contiguous[:, 0, :, :seq_len].contiguous()
        self.v = contiguous[:, 1, :, :seq_len].contiguous()
        del gathered, contiguous
        self.q = torch.randn(batch * q_len, Q_HEADS, HEAD_DIM, device="cuda", dtype=DTYPE)
        self.query_start_loc = torch.arange(0, batch * q_len + 1, q_len, device="cuda", dtype=torch.int32)
        self.seq_lens = torch.full((batch,), seq_len, device="cuda", dtype=torch.int32)
        self.out = torch.empty_like(self.q)
        self.batch, self.seq_len, self.q_len = batch, seq_len, q_len
        self.scale = HEAD_DIM**-0.5

    def ours(self, config: Config | None = None, num_splits: int | None = None) -> torch.Tensor:
        return attention.paged_attention_launch(
            self.q, self.pool[:, 0], self.pool[:, 1], self.query_start_loc, self.seq_lens, self.block_tables,
            self.scale, self.q_len, self.seq_len, out=self.out, num_splits=num_splits, config=config,
        )

    def sdpa(self) -> torch.Tensor:
        q = self.q.view(self.batch, self.q_len, Q_HEADS, HEAD_DIM).transpose(1, 2)
        causal = self.q_len > 1  # prefill here has no earlier context: plain causal
        out = F.scaled_dot_product_attention(q, self.k, self.v, scale=self.scale, is_causal=causal,
                                             enable_gqa=True)
        return out.transpose(1, 2).reshape(-1, Q_HEADS, HEAD_DIM)

    def kv_bytes(self) -> int:
        return 2 * self.batch * self.seq_len * KV_HEADS * HEAD_DIM * self.pool.element_size()

    def causal_flops(self) -> float:
        return 4.0 * self.batch * Q_HEADS * HEAD_DIM * self.seq_len * (self.seq_len + 1) / 2


def capture_rotation(fns: list, rounds: int = 10) -> torch.cuda.CUDAGraph:
    """One CUDA graph of `rounds` passes over `fns` (one call per input copy), replayed once."""
    for fn in fns:
        fn()  # compile, plan, allocate scratch before capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(rounds):
            for fn in fns:
                fn()
    graph.replay()
    return graph


def graph_ms(fns: list, rounds: int = 10, replays: int = 10) -> float:
    """Median GPU time per call of `fns` (one call per input copy, rotating so that the working set
    exceeds the L2) replayed from one CUDA graph: no host launch overhead, as the engine's decode runs."""
    graph = capture_rotation(fns, rounds)
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / (rounds * len(fns)))
    return statistics.median(times)


def bench_decode(sweep: bool) -> tuple[list[dict], list[dict]]:
    """Per shape: graph-replayed time (GPU only) and eager do_bench time (host launch cost included
    wherever it exceeds the kernel), ours and SDPA's."""
    rows, sweep_rows = [], []
    for batch, seq_len in DECODE_SHAPES:
        kv_bytes = 2 * batch * seq_len * KV_HEADS * HEAD_DIM * DTYPE.itemsize
        copies = [PagedBatch(batch, seq_len, 1) for _ in range(max(1, triton.cdiv(ROTATE_BYTES, kv_bytes)))]
        data = copies[0]
        reference = data.sdpa()
        error = rel_error(data.ours(), reference)
        ours_ms = graph_ms([c.ours for c in copies])
        sdpa_ms = graph_ms([c.sdpa for c in copies])
        ours_eager_ms, sdpa_eager_ms = median_ms(data.ours), median_ms(data.sdpa)
        ours_host_us = host_us(data.ours)
        tbps = functools.partial(per_second, kv_bytes, unit=1e12)
        rows.append(dict(shape=f"{batch}x{seq_len}", ours_ms=ours_ms, sdpa_ms=sdpa_ms,
                         ours_tbps=tbps(ours_ms), sdpa_tbps=tbps(sdpa_ms),
                         ours_eager_tbps=tbps(ours_eager_ms), sdpa_eager_tbps=tbps(sdpa_eager_ms),
                         ours_host_us=ours_host_us, rel_error=error))
        print(f"decode {batch}x{seq_len}: graph: ours {tbps(ours_ms):.2f} TB/s ({ours_ms * 1e3:.1f} us), "
              f"sdpa {tbps(sdpa_ms):.2f}; eager: ours {tbps(ours_eager_ms):.2f}, "
              f"sdpa {tbps(sdpa_eager_ms):.2f}; host {ours_host_us:.0f} us/call; rel err {error:.1e}",
              flush=True)
        if sweep:
            configs = [Config(16, 1, n, w, s) for n, w, s in DECODE_SWEEP]
            for config in configs:
                for num_splits in SPLIT_SWEEP.get(batch, [None]):
                    sweep_rows.append(_time_variant("decode", copies, config, num_splits, reference, tbps))
        del data, copies, reference
        torch.cuda.empty_cache()
    return rows, sweep_rows


def _time_variant(kind: str, copies: list[PagedBatch], config: Config, num_splits: int | None, reference,
                  metric) -> dict:
    data = copies[0]
    row = dict(kind=kind, shape=f"{data.batch}x{data.seq_len}", config=config.__dict__, num_splits=num_splits)
    try:
        row["rel_error"] = rel_error(data.ours(config, num_splits), reference)
        if kind == "decode":
            row["ms"] = graph_ms([functools.partial(c.ours, config, num_splits) for c in copies])
        else:
            row["ms"] = median_ms(lambda: data.ours(config, num_splits))
        row["metric"] = metric(row["ms"])
    except Exception as error:  # e.g. out of shared memory for this tile shape
        row["error"] = f"{type(error).__name__}: {str(error)[:120]}"
    print("  sweep", row, flush=True)
    return row


def bench_prefill(sweep: bool) -> tuple[list[dict], list[dict]]:
    rows, sweep_rows = [], []
    for batch, seq_len in PREFILL_SHAPES:
        data = PagedBatch(batch, seq_len, seq_len)
        reference = data.sdpa()
        error = rel_error(data.ours(), reference)
        ours_ms, sdpa_ms = median_ms(data.ours), median_ms(data.sdpa)
        tflops = functools.partial(per_second, data.causal_flops(), unit=1e12)
        rows.append(dict(shape=f"{batch}x{seq_len}", ours_ms=ours_ms, sdpa_ms=sdpa_ms,
                         ours_tflops=tflops(ours_ms), sdpa_tflops=tflops(sdpa_ms), rel_error=error))
        print(f"prefill {batch}x{seq_len}: ours {tflops(ours_ms):.0f} TFLOP/s ({ours_ms:.3f} ms), "
              f"sdpa {tflops(sdpa_ms):.0f} TFLOP/s, rel err {error:.1e}", flush=True)
        if sweep and (batch, seq_len) == PREFILL_SHAPES[0]:
            for config in PREFILL_SWEEP:
                sweep_rows.append(_time_variant("prefill", [data], config, None, reference, tflops))
        del data, reference
        torch.cuda.empty_cache()
    return rows, sweep_rows


def bench_small() -> list[dict]:
    """The elementwise kernels at a prefill-sized step (4096 tokens), each checked against its torch
    reference first: GB/s of bytes read + written."""
    tokens, hidden, inter = 4096, Q_HEADS * HEAD_DIM, 18944
    x = torch.randn(tokens, hidden, device="cuda", dtype=DTYPE)
    residual, weight = torch.randn_like(x), torch.randn(hidden, device="cuda", dtype=DTYPE)
    gate_up = torch.randn(tokens, 2 * inter, device="cuda", dtype=DTYPE)
    qkv = torch.randn(tokens, (Q_HEADS + 2 * KV_HEADS) * HEAD_DIM, device="cuda", dtype=DTYPE)
    inv_freq = 1.0 / 1e6 ** (torch.arange(0, HEAD_DIM, 2, device="cuda").float() / HEAD_DIM)
    angles = torch.arange(32768, device="cuda").float()[:, None] * inv_freq
    cos_sin = torch.cat([angles.cos(), angles.sin()], -1)
    positions = torch.randint(0, 32768, (3, tokens), device="cuda")
    num_pages = tokens // BLOCK_SIZE + 4
    pool = torch.randn(num_pages, 2, BLOCK_SIZE, KV_HEADS, HEAD_DIM, device="cuda", dtype=DTYPE)
    slots = torch.randperm(pool.shape[0] * BLOCK_SIZE, device="cuda")[:tokens]

    def split_qkv(fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = fused.split([Q_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        return (q.view(tokens, Q_HEADS, HEAD_DIM), k.view(tokens, KV_HEADS, HEAD_DIM),
                v.view(tokens, KV_HEADS, HEAD_DIM))

    q, k, v = split_qkv(qkv)
    mrope = [16, 24, 24]
    e = x.element_size()
    norm, act = kernel_module("rms_norm_triton"), kernel_module("activation_triton")
    rope, kv_write = kernel_module("rotary_triton"), kernel_module("kv_write_triton")
    rope_kv = kernel_module("rotary_kv_triton")
    # name: (ours, torch reference or None (in-place: checked below), bytes read + written)
    cases = {
        "rms_norm+residual": (lambda: norm.rms_norm_triton(x, weight, 1e-6, residual),
                              lambda: kernel_module("rms_norm").rms_norm_torch(x, weight, 1e-6, residual),
                              5 * tokens * hidden * e),
        "silu_and_mul": (lambda: act.silu_and_mul_triton(gate_up),
                         lambda: kernel_module("activation").silu_and_mul_torch(gate_up),
                         3 * tokens * inter * e),
        "rotary (M-RoPE)": (lambda: rope.apply_rotary_triton(q, k, positions, cos_sin, mrope),
                            None, 2 * tokens * (Q_HEADS + KV_HEADS) * HEAD_DIM * e),
        "write_kv": (lambda: kv_write.write_kv_triton(k, v, pool[:, 0], pool[:, 1], slots),
                     None, 4 * tokens * KV_HEADS * HEAD_DIM * e),
        # q read + written, k and v read and written into the pool (k itself is not written back)
        "rotary+write_kv (M-RoPE)": (
            lambda: rope_kv.rotary_write_kv_triton(q, k, v, positions, cos_sin, mrope, pool[:, 0], pool[:, 1],
                                                   slots),
            None, 2 * tokens * (Q_HEADS + 2 * KV_HEADS) * HEAD_DIM * e),
    }
    # in-place kernels: compare on copies
    fused_ref = qkv.clone()
    q_ref, k_ref, _ = split_qkv(fused_ref)
    kernel_module("rotary").apply_rotary_torch(q_ref, k_ref, positions, cos_sin, mrope)
    fused_ours = qkv.clone()
    q_ours, k_ours, _ = split_qkv(fused_ours)
    rope.apply_rotary_triton(q_ours, k_ours, positions, cos_sin, mrope)
    errors = {"rotary (M-RoPE)": rel_error(fused_ours, fused_ref)}
    pool_ref, pool_ours = pool.clone(), pool.clone()
    kernel_module("kv_write").write_kv_torch(k, v, pool_ref[:, 0], pool_ref[:, 1], slots)
    kv_write.write_kv_triton(k, v, pool_ours[:, 0], pool_ours[:, 1], slots)
    errors["write_kv"] = rel_error(pool_ours, pool_ref)
    fused_ref, fused_ours = qkv.clone(), qkv.clone()
    pool_ref, pool_ours = pool.clone(), pool.clone()
    kernel_module("rotary_kv").rotary_write_kv_torch(*split_qkv(fused_ref), positions, cos_sin, mrope,
                                                     pool_ref[:, 0], pool_ref[:, 1], slots)
    rope_kv.rotary_write_kv_triton(*split_qkv(fused_ours), positions, cos_sin, mrope, pool_ours[:, 0],
                                   pool_ours[:, 1], slots)
    errors["rotary+write_kv (M-RoPE)"] = rel_error(torch.cat([fused_ours.flatten(), pool_ours.flatten()]),
                                                   torch.cat([fused_ref.flatten(), pool_ref.flatten()]))
    rows = []
    for name, (fn, reference, num_bytes) in cases.items():
        if reference is not None:
            result, expected = fn(), reference()
            result = torch.cat([t.flatten() for t in result]) if isinstance(result, tuple) else result
            expected = torch.cat([t.flatten() for t in expected]) if isinstance(expected, tuple) else expected
            errors[name] = rel_error(result, expected)
        ms, launch_us = median_ms(fn), host_us(fn)
        gbps = num_bytes / ms / 1e6
        rows.append(dict(kernel=name, tokens=tokens, ms=ms, gbps=gbps, host_us=launch_us,
                         rel_error=errors[name]))
        print(f"{name}: {ms * 1e3:.1f} us, {gbps:.0f} GB/s, host {launch_us:.0f} us/call, "
              f"rel err {errors[name]:.1e}", flush=True)
    return rows


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                              text=True)
    except OSError:  # no git on the machine
        return "unknown"
    return done.stdout.strip() or "unknown"


def environment(commit: str) -> dict:
    return dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                commit=commit,
                num_sms=torch.cuda.get_device_properties(0).multi_processor_count)


def markdown(env: dict, decode: list[dict], prefill: list[dict], small: list[dict]) -> str:
    lines = [f"# Kernel benchmark, {env['date']}",
             f"{env['gpu']}, torch {env['torch']}, triton {env['triton']}, commit {env['commit']}; "
             f"Hq {Q_HEADS} / Hkv {KV_HEADS}, D {HEAD_DIM}, bf16, paged block {BLOCK_SIZE} (shuffled pages). "
             "Decode: median of CUDA-graph replays over input copies (>= 256 MiB of K+V); eager = "
             "do_bench with L2 flush, host launch cost included. Prefill: do_bench medians.",
             "", "| decode B x context | ours TB/s | SDPA (contiguous) TB/s | ours us "
             "| eager ours / SDPA TB/s | host us/call | rel err |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['shape']} | {r['ours_tbps']:.2f} | {r['sdpa_tbps']:.2f} | {r['ours_ms'] * 1e3:.1f} | "
              f"{r['ours_eager_tbps']:.2f} / {r['sdpa_eager_tbps']:.2f} | {r['ours_host_us']:.0f} | "
              f"{r['rel_error']:.1e} |" for r in decode]
    lines += ["", "| prefill B x L (causal) | ours TFLOP/s | SDPA TFLOP/s | ours ms | rel err |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['shape']} | {r['ours_tflops']:.0f} | {r['sdpa_tflops']:.0f} | {r['ours_ms']:.3f} | "
              f"{r['rel_error']:.1e} |" for r in prefill]
    if small:
        lines += ["", "| kernel (4096 tokens, eager) | us | GB/s | host us/call | rel err |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['kernel']} | {r['ms'] * 1e3:.1f} | {r['gbps']:.0f} | {r['host_us']:.0f} | "
                  f"{r['rel_error']:.1e} |" for r in small]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--sweep", action="store_true", help="also time tile configs and split counts")
    parser.add_argument("--skip-small", action="store_true", help="skip the elementwise kernels")
    parser.add_argument("--only", choices=["decode", "prefill"], help="one attention table only")
    parser.add_argument("--commit", default=None, help="commit to record (default: git describe here)")
    args = parser.parse_args()
    torch.manual_seed(0)
    env = environment(args.commit or git_commit())
    decode, decode_sweep = bench_decode(args.sweep) if args.only != "prefill" else ([], [])
    prefill, prefill_sweep = bench_prefill(args.sweep) if args.only != "decode" else ([], [])
    small = [] if args.skip_small else bench_small()
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(env, decode, prefill, small)
    results = dict(environment=env, decode=decode, prefill=prefill, small=small,
                   sweep=decode_sweep + prefill_sweep)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
