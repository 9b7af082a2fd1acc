"""GPU benchmark of the decoder projections at decode-sized batches: Triton skinny GEMM vs cuBLAS.

    python benchmarks/bench_linear.py [--out DIR] [--sweep [--sweep-rows 1 16]] [--rows 1 4 16]

qwen2.5-7b shapes (bf16): qkv (with bias), o_proj, gate_up (Triton: fused SiLU-and-mul; cuBLAS: GEMM +
our silu_and_mul kernel, as the engine ran before), down, lm_head. A projection at M <= 16 is a pass over
its weight bytes, so the floor is weight bytes / copy bandwidth (4.23 TB/s on the H200,
../shared/notes/gpu-anchors.md); TB/s = weight bytes / time. Each timing replays one CUDA graph that cycles
over weight copies (>= 512 MiB together, so nothing stays in the 60 MB L2), as consecutive layers do.
`--sweep` times tile configs at the `--sweep-rows` row counts (default M = 1; block_n x block_k x warps x
stages). `--pdl` times a decode-like chain
(RMSNorm -> projection, per weight copy) with programmatic dependent launch off and on (kernels/pdl.py).
Writes linear.json / linear.md.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from bench_kernels import ROOT, environment, git_commit, graph_ms, kernel_module

linear = kernel_module("linear_triton")
rms_norm = kernel_module("rms_norm_triton")
activation = kernel_module("activation_triton")
Config = linear.LinearConfig
COPY_TBPS = 4.23
ROTATE_BYTES = 1 << 29
HIDDEN, INTER, VOCAB, QKV = 3584, 18944, 152064, 4608
SHAPES = {  # name: (N, K, bias, fused silu-mul)
    "qkv": (QKV, HIDDEN, True, False),
    "o_proj": (HIDDEN, HIDDEN, False, False),
    "gate_up+silu": (2 * INTER, HIDDEN, False, True),
    "down": (HIDDEN, INTER, False, False),
    "lm_head": (VOCAB, HIDDEN, False, False),
}
SWEEP = [Config(bn, bk, w, s) for bn in (16, 32, 64) for bk in (128, 256, 512) for w, s in
         ((4, 3), (4, 4), (4, 6), (8, 4))]


class Projection:
    def __init__(self, name: str, rows: int) -> None:
        n, k, has_bias, self.silu_mul = SHAPES[name]
        self.name, self.rows = name, rows
        self.weight_bytes = n * k * 2
        copies = max(2, -(-ROTATE_BYTES // self.weight_bytes))
        self.weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
                        for _ in range(copies)]
        self.bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) if has_bias else None
        self.x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        self.config = linear.pick_linear_config(n // 2 if self.silu_mul else n, k,
                                               linear.num_sms(self.x.device), self.silu_mul, num_rows=rows)

    def triton_fns(self, config=None) -> list:
        if self.silu_mul:
            return [lambda w=w: linear.linear_silu_mul_triton(self.x, w, config=config) for w in self.weights]
        return [lambda w=w: linear.linear_triton(self.x, w, self.bias, config=config) for w in self.weights]

    def cublas_fns(self) -> list:
        if self.silu_mul:
            return [lambda w=w: activation.silu_and_mul_triton(torch.nn.functional.linear(self.x, w))
                    for w in self.weights]
        return [lambda w=w: torch.nn.functional.linear(self.x, w, self.bias) for w in self.weights]

    def rel_error(self) -> float:
        ours = self.triton_fns()[0]().float()
        ref = self.cublas_fns()[0]().float()
        return ((ours - ref).norm() / ref.norm().clamp_min(1e-12)).item()

    def tbps(self, ms: float) -> float:
        return self.weight_bytes / (ms * 1e-3) / 1e12


def bench(rows_list: list[int], sweep_rows_list: list[int], shapes: list[str]) -> tuple[list, list]:
    results, sweep_rows = [], []
    for name in shapes:
        for rows in rows_list:
            proj = Projection(name, rows)
            error = proj.rel_error()
            ours_ms, cublas_ms = graph_ms(proj.triton_fns()), graph_ms(proj.cublas_fns())
            floor_ms = proj.weight_bytes / (COPY_TBPS * 1e12) * 1e3
            row = dict(shape=name, rows=rows, weight_mb=proj.weight_bytes / 1e6, ours_us=ours_ms * 1e3,
                       cublas_us=cublas_ms * 1e3, floor_us=floor_ms * 1e3, ours_tbps=proj.tbps(ours_ms),
                       cublas_tbps=proj.tbps(cublas_ms), rel_error=error,
                       engine="Triton" if linear.serves(rows, SHAPES[name][0] // (2 if proj.silu_mul else 1),
                                                         linear.num_sms(proj.x.device)) else "cuBLAS",
                       config=str(proj.config))
            results.append(row)
            print(row, flush=True)
            if rows in sweep_rows_list:
                for config in SWEEP:
                    try:
                        ms = graph_ms(proj.triton_fns(config), rounds=5, replays=5)
                    except Exception as error:  # noqa: BLE001 - a config over the shared-memory limit
                        print("  sweep", name, config, "failed:", type(error).__name__, flush=True)
                        continue
                    sweep_rows.append(dict(shape=name, rows=rows, config=str(config), us=ms * 1e3,
                                           tbps=proj.tbps(ms)))
                    print("  sweep", sweep_rows[-1], flush=True)
            del proj
            torch.cuda.empty_cache()
    return results, sweep_rows


def _norm_then_project(proj: Projection, weight: torch.Tensor, norm_weight: torch.Tensor):
    def step() -> torch.Tensor:
        normed = rms_norm.rms_norm_triton(proj.x, norm_weight, 1e-6)[0]
        if proj.silu_mul:
            return linear.linear_silu_mul_triton(normed, weight)
        return linear.linear_triton(normed, weight, proj.bias)

    return step


def bench_pdl() -> list[dict]:
    """Per projection at M = 1: GPU time per (RMSNorm + projection) pair of a captured chain, PDL off / on."""
    rows = []
    for name in ("qkv", "o_proj", "gate_up+silu", "down"):
        proj = Projection(name, 1)
        norm_weight = torch.ones(proj.x.shape[1], device="cuda", dtype=torch.bfloat16)
        times = {}
        for mode in ("0", "1"):
            os.environ["OMNISERVE_PDL"] = mode
            times[mode] = graph_ms([_norm_then_project(proj, w, norm_weight) for w in proj.weights]) * 1e3
        os.environ.pop("OMNISERVE_PDL")
        rows.append(dict(shape=name, off_us=times["0"], on_us=times["1"]))
        print("pdl", rows[-1], flush=True)
        del proj
        torch.cuda.empty_cache()
    return rows


def markdown(env: dict, results: list[dict], sweep_rows: list[dict], pdl_rows: list[dict]) -> str:
    lines = [f"# Decode projections, {env['date']}",
             f"{env['gpu']}, torch {env['torch']}, triton {env['triton']}, commit {env['commit']}; "
             "qwen2.5-7b shapes, bf16; CUDA-graph replays over weight copies (>= 512 MiB); "
             f"floor = weight bytes / {COPY_TBPS} TB/s.", "",
             "| projection | M | MB | Triton us | cuBLAS us | floor us | Triton TB/s | cuBLAS TB/s | "
             "Triton / floor | engine uses | rel err |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['shape']} | {r['rows']} | {r['weight_mb']:.1f} | {r['ours_us']:.1f} | "
              f"{r['cublas_us']:.1f} | {r['floor_us']:.1f} | {r['ours_tbps']:.2f} | {r['cublas_tbps']:.2f} | "
              f"{r['floor_us'] / r['ours_us']:.0%} | {r['engine']} | {r['rel_error']:.1e} |" for r in results]
    if sweep_rows:
        best: dict[tuple[str, int], dict] = {}
        for r in sweep_rows:
            key = (r["shape"], r["rows"])
            if key not in best or r["us"] < best[key]["us"]:
                best[key] = r
        lines += ["", "| projection | M | best sweep config | us | TB/s |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['shape']} | {r['rows']} | {r['config']} | {r['us']:.1f} | {r['tbps']:.2f} |"
                  for r in best.values()]
    if pdl_rows:
        lines += ["", "| chain RMSNorm + projection (M = 1), us per pair | PDL off | PDL on |",
                  "| --- | --- | --- |"]
        lines += [f"| {r['shape']} | {r['off_us']:.1f} | {r['on_us']:.1f} |" for r in pdl_rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--sweep", action="store_true", help="also time tile configs (at --sweep-rows)")
    parser.add_argument("--sweep-rows", type=int, nargs="+", default=[1])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--pdl", action="store_true", help="time RMSNorm -> projection chains, PDL off/on")
    parser.add_argument("--commit", default=None, help="commit to record (default: git describe here)")
    args = parser.parse_args()
    torch.manual_seed(0)
    env = environment(args.commit or git_commit())
    results, sweep_rows = bench(args.rows, args.sweep_rows if args.sweep else [], args.shapes)
    pdl_rows = bench_pdl() if args.pdl else []
    args.out.mkdir(parents=True, exist_ok=True)
    record = dict(environment=env, results=results, sweep=sweep_rows, pdl=pdl_rows)
    (args.out / "linear.json").write_text(json.dumps(record, indent=1))
    table = markdown(env, results, sweep_rows, pdl_rows)
    (args.out / "linear.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
