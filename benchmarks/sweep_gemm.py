"""GPU sweep of the decoder projections at mid-sized batches (decode steps of 17-256 rows): Triton tiled GEMM
(kernels/gemm_triton.py) tile configs against cuBLAS.

    python benchmarks/sweep_gemm.py [--rows 256 128 64] [--shapes qkv o_proj gate_up+silu down] [--top 6]

qwen2.5-7b shapes, bf16. cuBLAS: `F.linear` as the engine calls it (gate_up: GEMM + our silu_and_mul kernel,
since the engine's MLP at these sizes runs both), and `torch.mm` on a pre-transposed [K, N] weight (another
cuBLAS layout, other heuristics). Each timing replays one CUDA graph that cycles over weight copies
(>= 512 MiB together, nothing stays in the 60 MB L2), as consecutive layers do. Floor per projection:
max(FLOPs / 765 TFLOP/s, weight bytes / 4.23 TB/s) (../shared/notes/gpu-anchors.md). Prints a table per
shape, best first.
"""

from __future__ import annotations

import argparse

import torch
from bench_kernels import graph_ms, kernel_module

gemm = kernel_module("gemm_triton")
activation = kernel_module("activation_triton")
Config = gemm.GemmConfig
ROTATE_BYTES = 1 << 29
PEAK_TFLOPS, COPY_TBPS = 765.0, 4.23
HIDDEN, INTER, QKV = 3584, 18944, 4608
SHAPES = {  # name: (N, K, bias, fused silu-mul)
    "qkv": (QKV, HIDDEN, True, False),
    "o_proj": (HIDDEN, HIDDEN, False, False),
    "gate_up+silu": (2 * INTER, HIDDEN, False, True),
    "down": (HIDDEN, INTER, False, False),
}


def configs(rows: int, silu_mul: bool) -> list:
    out = []
    for bm in (64, 128) if rows >= 128 else (32, 64):
        for bn in (64, 128, 256):
            for bk in (64, 128) if bn <= 64 else (64,):
                for warps, stages in ((4, 4), (8, 3), (8, 4)):
                    tile_bytes = (bm + bn * (2 if silu_mul else 1)) * bk * 2
                    acc_regs = bm * bn * (2 if silu_mul else 1) // (32 * warps)
                    if tile_bytes * stages > 200 * 1024 or acc_regs > 128:
                        continue
                    out.append(Config(bm, bn, bk, warps, stages))
    return out


class Projection:
    def __init__(self, name: str, rows: int) -> None:
        n, k, has_bias, self.silu_mul = SHAPES[name]
        self.name, self.rows, self.n, self.k = name, rows, n, k
        self.weight_bytes = n * k * 2
        copies = max(2, -(-ROTATE_BYTES // self.weight_bytes))
        self.weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
                        for _ in range(copies)]
        self.weights_t = [w.t().contiguous() for w in self.weights[:2]] if not self.silu_mul else []
        self.bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) if has_bias else None
        self.x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        flops = 2 * rows * n * k
        self.floor_ms = max(flops / (PEAK_TFLOPS * 1e12), self.weight_bytes / (COPY_TBPS * 1e12)) * 1e3
        self.flops = flops

    def triton_fns(self, config) -> list:
        if self.silu_mul:
            return [lambda w=w: gemm.gemm_silu_mul_triton(self.x, w, config) for w in self.weights]
        return [lambda w=w: gemm.gemm_triton(self.x, w, self.bias, config) for w in self.weights]

    def cublas_fns(self) -> list:
        if self.silu_mul:
            return [lambda w=w: activation.silu_and_mul_triton(torch.nn.functional.linear(self.x, w))
                    for w in self.weights]
        return [lambda w=w: torch.nn.functional.linear(self.x, w, self.bias) for w in self.weights]

    def cublas_t_fns(self) -> list:
        copies = self.weights_t * max(1, len(self.weights) // 2)
        if self.bias is not None:
            return [lambda w=w: torch.addmm(self.bias, self.x, w) for w in copies]
        return [lambda w=w: torch.mm(self.x, w) for w in copies]

    def rel_error(self, config) -> float:
        ours = self.triton_fns(config)[0]().float()
        ref = self.cublas_fns()[0]().float()
        return ((ours - ref).norm() / ref.norm().clamp_min(1e-12)).item()

    def tflops(self, ms: float) -> float:
        return self.flops / (ms * 1e-3) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[256, 128, 64])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--top", type=int, default=6)
    args = parser.parse_args()
    summary = []
    for rows in args.rows:
        for name in args.shapes:
            proj = Projection(name, rows)
            cublas_ms = graph_ms(proj.cublas_fns(), rounds=5, replays=5)
            cublas_t_ms = graph_ms(proj.cublas_t_fns(), rounds=5, replays=5) if not proj.silu_mul else None
            results = []
            for config in configs(rows, proj.silu_mul):
                try:
                    ms = graph_ms(proj.triton_fns(config), rounds=5, replays=5)
                except Exception as error:  # noqa: BLE001 - a config over the shared-memory limit
                    print(f"  {name} M={rows} {config} failed: {type(error).__name__}"[:300], flush=True)
                    continue
                results.append((ms, config))
            results.sort(key=lambda r: r[0])
            best_ms, best = results[0]
            error = proj.rel_error(best)
            print(f"== {name} M={rows} N={proj.n} K={proj.k}: floor {proj.floor_ms * 1e3:.1f} us; cuBLAS "
                  f"{cublas_ms * 1e3:.1f} us ({proj.tflops(cublas_ms):.0f} TFLOP/s)"
                  + (f", cuBLAS [K,N] {cublas_t_ms * 1e3:.1f} us" if cublas_t_ms else "")
                  + f"; rel err of best {error:.1e}", flush=True)
            for ms, config in results[: args.top]:
                print(f"  {ms * 1e3:7.1f} us {proj.tflops(ms):5.0f} TFLOP/s  {config}", flush=True)
            summary.append((name, rows, proj.floor_ms, cublas_ms, cublas_t_ms, best_ms, best))
            del proj
            torch.cuda.empty_cache()
    print("\n| projection | M | floor us | cuBLAS us | cuBLAS [K,N] us | Triton best us | x cuBLAS | best |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rows, floor, cub, cub_t, best_ms, best in summary:
        cub_t_cell = f"{cub_t * 1e3:.1f}" if cub_t else "-"
        print(f"| {name} | {rows} | {floor * 1e3:.1f} | {cub * 1e3:.1f} | {cub_t_cell} | "
              f"{best_ms * 1e3:.1f} | {cub / best_ms:.2f} | {best} |")


if __name__ == "__main__":
    main()
