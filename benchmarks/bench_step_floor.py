"""What a big decode step's GEMMs and attention cost at sustained clocks, without the engine (H200).

    python benchmarks/bench_step_floor.py [--batch 256] [--context 576] [--seconds 4]

At batch 256 a qwen2.5-7b decode step's GEMMs are compute-bound (256 FLOP per weight byte, above the
H200's ~180), and the board runs at its 700 W power cap (benchmarks/results/decode.md), so the bandwidth
floor (weights + KV bytes over copy bandwidth) understates what a step can cost. This times the step's
two big parts on their own, each as one CUDA graph of a whole step replayed back to back for `--seconds`
after a warm-up of the same length (a 128-step decode at batch 256 runs about 1.2 s, after a 2.8 s
prefill, both at the cap):
- gemms: per layer qkv (with bias), o_proj, gate|up, down, then the lm_head: cuBLAS through torch, as the
  engine runs them above 64 rows. Weights uniform in +-0.02 (the engine's dummy init), inputs N(0, 1).
- attention: our paged decode attention over 28 layers of `batch` sequences of `context` keys (the
  decode run's mean context: prompt 512 + 64), pages shuffled, the engine's pool layout
  [pages, layers, 2, block 16, Hkv, D].
- skeleton: both in the step's order (layer by layer): what a step costs before norms, rotary, KV writes,
  sampling and launch gaps.
- ceiling: an 8192^3 bf16 matmul (gpu-anchors.md: 765 TFLOP/s).
SM clock and board power are sampled with nvidia-smi during each phase. Prints ms per step, TFLOP/s or
TB/s, and the decode tok/s the skeleton alone allows, against the bandwidth floor.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time

import torch
import torch.nn.functional as F
from bench_decode import QWEN25_7B, copy_bandwidth, model_bytes
from bench_kernels import kernel_module

attention = kernel_module("paged_attention_triton")
HIDDEN, LAYERS, INTER, VOCAB = (QWEN25_7B[k] for k in ("hidden_size", "num_hidden_layers",
                                                        "intermediate_size", "vocab_size"))
Q_HEADS, KV_HEADS = QWEN25_7B["num_attention_heads"], QWEN25_7B["num_key_value_heads"]
HEAD_DIM, BLOCK = HIDDEN // Q_HEADS, 16
QKV = (Q_HEADS + 2 * KV_HEADS) * HEAD_DIM
DTYPE = torch.bfloat16


class PowerSampler:
    """nvidia-smi samples of (SM MHz, board W) every 100 ms, each tagged with the host time it arrived."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits",
             "-lms", "100"],
            stdout=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                mhz, watts = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.samples.append((time.monotonic(), mhz, watts))

    def window(self, start: float, end: float) -> tuple[float, float]:
        """Median SM clock and power between two host times (nan if nvidia-smi gave nothing)."""
        inside = [(mhz, watts) for t, mhz, watts in self.samples if start <= t <= end]
        if not inside:
            return float("nan"), float("nan")
        return statistics.median(m for m, _ in inside), statistics.median(w for _, w in inside)

    def stop(self) -> None:
        self.proc.terminate()


class Step:
    """Weights, activations and KV of one decode step of `batch` sequences."""

    def __init__(self, batch: int, context: int) -> None:
        def weight(*shape: int) -> torch.Tensor:
            return torch.empty(*shape, device="cuda", dtype=DTYPE).uniform_(-0.02, 0.02)

        self.layers = [(weight(QKV, HIDDEN), weight(QKV), weight(HIDDEN, HIDDEN), weight(2 * INTER, HIDDEN),
                        weight(HIDDEN, INTER)) for _ in range(LAYERS)]
        self.lm_head = weight(VOCAB, HIDDEN)
        self.x = torch.randn(batch, HIDDEN, device="cuda", dtype=DTYPE)
        self.h = torch.randn(batch, INTER, device="cuda", dtype=DTYPE)
        pages_per_seq = -(-context // BLOCK)
        num_pages = batch * pages_per_seq + 8
        # [pages, layers, 2, block, Hkv, D], as the engine's pool
        self.pool = torch.randn(num_pages, LAYERS, 2, BLOCK, KV_HEADS, HEAD_DIM, device="cuda", dtype=DTYPE)
        self.block_tables = torch.randperm(num_pages, device="cuda")[: batch * pages_per_seq].view(
            batch, pages_per_seq).int()
        self.q = torch.randn(batch, Q_HEADS, HEAD_DIM, device="cuda", dtype=DTYPE)
        self.attn_out = torch.empty_like(self.q)
        self.query_start_loc = torch.arange(batch + 1, device="cuda", dtype=torch.int32)
        self.seq_lens = torch.full((batch,), context, device="cuda", dtype=torch.int32)
        self.batch, self.context = batch, context

    def gemm_flops(self) -> float:
        per_layer = HIDDEN * QKV + HIDDEN * HIDDEN + HIDDEN * 2 * INTER + INTER * HIDDEN
        return 2.0 * self.batch * (LAYERS * per_layer + HIDDEN * VOCAB)

    def kv_bytes(self) -> int:
        return self.batch * self.context * model_bytes()[1]

    def attend(self, layer: int) -> None:
        attention.paged_attention_triton(
            self.q, self.pool[:, layer, 0], self.pool[:, layer, 1], self.query_start_loc, self.seq_lens,
            self.block_tables, HEAD_DIM**-0.5, 1, self.context, out=self.attn_out,
        )

    def run(self, gemms: bool, attend: bool) -> None:
        for layer, (w_qkv, b_qkv, w_o, w_gate_up, w_down) in enumerate(self.layers):
            if gemms:
                F.linear(self.x, w_qkv, b_qkv)
            if attend:
                self.attend(layer)
            if gemms:
                F.linear(self.x, w_o)
                F.linear(self.x, w_gate_up)
                F.linear(self.h, w_down)
        if gemms:
            F.linear(self.x, self.lm_head)


def sustained_ms(fn, seconds: float, sampler: PowerSampler) -> tuple[float, float, float]:
    """GPU ms per call of `fn` captured in a CUDA graph and replayed back to back: `seconds` of warm-up,
    then `seconds` timed; with the median SM clock and power of the timed part."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    graph.replay()
    torch.cuda.synchronize()
    replays = max(3, int(seconds / max(time.perf_counter() - start, 1e-4)))
    for _ in range(replays):  # warm-up: the board settles at its power state
        graph.replay()
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    host_start = time.monotonic()
    begin.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    mhz, watts = sampler.window(host_start, time.monotonic())
    return begin.elapsed_time(end) / replays, mhz, watts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--context", type=int, default=576)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    bandwidth = copy_bandwidth()
    sampler = PowerSampler()
    step = Step(args.batch, args.context)
    a = torch.randn(8192, 8192, device="cuda", dtype=DTYPE)
    b = torch.randn(8192, 8192, device="cuda", dtype=DTYPE)
    c = torch.empty_like(a)
    rows = []
    ceiling_ms, mhz, watts = sustained_ms(lambda: torch.matmul(a, b, out=c), args.seconds, sampler)
    ceiling_rate = f"{2 * 8192**3 / ceiling_ms / 1e9:.0f} TFLOP/s"
    rows.append(("ceiling: 8192^3 matmul", ceiling_ms, ceiling_rate, mhz, watts))
    gemm_ms, mhz, watts = sustained_ms(lambda: step.run(True, False), args.seconds, sampler)
    rows.append(("gemms", gemm_ms, f"{step.gemm_flops() / gemm_ms / 1e9:.0f} TFLOP/s", mhz, watts))
    attn_ms, mhz, watts = sustained_ms(lambda: step.run(False, True), args.seconds, sampler)
    rows.append(("attention", attn_ms, f"{step.kv_bytes() / attn_ms / 1e9:.2f} TB/s", mhz, watts))
    skeleton_ms, mhz, watts = sustained_ms(lambda: step.run(True, True), args.seconds, sampler)
    rows.append(("skeleton (gemms + attention)", skeleton_ms, "", mhz, watts))
    sampler.stop()

    floor_ms = (model_bytes()[0] + step.kv_bytes()) / bandwidth * 1e3  # bench_decode's floor, this context
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}; batch {args.batch}, context "
          f"{args.context}; copy bandwidth {bandwidth / 1e12:.2f} TB/s; "
          f"bandwidth floor {floor_ms:.2f} ms/step "
          f"({args.batch / floor_ms * 1e3:.0f} tok/s); 75% of it: {floor_ms / 0.75:.2f} ms/step")
    print("| phase | ms per step | rate | SM MHz | W |\n| --- | --- | --- | --- | --- |")
    for label, ms, rate, mhz, watts in rows:
        print(f"| {label} | {ms:.3f} | {rate} | {mhz:.0f} | {watts:.0f} |")
    print(f"skeleton alone allows {args.batch / skeleton_ms * 1e3:.0f} tok/s = "
          f"{floor_ms / skeleton_ms:.0%} of the bandwidth floor")


if __name__ == "__main__":
    main()
