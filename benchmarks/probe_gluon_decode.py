"""Can a Gluon decode kernel with explicit TMA page copies into a shared-memory ring stream paged K/V faster
than our Triton kernel and SDPA? (H200 probe)

    python benchmarks/probe_gluon_decode.py [--all]          # on the H200: timed against SDPA and ours
    python benchmarks/probe_gluon_decode.py --compile-only   # any machine: sm_90 registers / shared memory

The Triton TMA probe (probe_tma_decode.py) waited on one barrier and ran one MMA per 16-key page, and
Triton's pipeliner gave it few copies in flight. Here the pipeline is written out by hand in Gluon
(gluon_decode_kernels.py), for the big-grid anchors (64x4096, 256x1024, 256x4096) where our pointer-load
kernel trails SDPA by 0.5-3%. Results: benchmarks/results/kernels_sweep.md (tenth session).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import torch
import triton
from bench_kernels import BLOCK_SIZE, HEAD_DIM, KV_HEADS, Q_HEADS, PagedBatch
from gluon_decode_kernels import (
    HALF_COLS,
    gluon_decode_kernel,
    gluon_decode_warp_pages_kernel,
    gluon_decode_ws_kernel,
)
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

_LOG2E = 1.4426950408889634


def _pool_descriptor(pool: torch.Tensor) -> TensorDescriptor:
    """pool [num_pages, 2, BS, Hkv, D] as rows [num_pages * 2 * BS, Hkv * D], boxes [BS, 64]."""
    rows = pool.shape[0] * 2 * BLOCK_SIZE
    layout = gl.NVMMASharedLayout.get_default_for([BLOCK_SIZE, HALF_COLS], gl.bfloat16)
    return TensorDescriptor(pool, [rows, KV_HEADS * HEAD_DIM], [KV_HEADS * HEAD_DIM, 1],
                            [BLOCK_SIZE, HALF_COLS], layout)


@dataclass(frozen=True)
class Variant:
    """One kernel configuration: how to launch it on a PagedBatch, and how to compile it alone."""

    label: str
    kernel: object  # the @gluon.jit kernel
    constants: dict
    warps: int
    maxnreg: int | None = None
    checked: bool = True  # False: a load-only diagnostic, timed whatever its output

    def __call__(self, data: PagedBatch) -> torch.Tensor:
        self.kernel[(data.batch * KV_HEADS,)](
            data.q, _pool_descriptor(data.pool), data.out, data.seq_lens, data.block_tables,
            data.scale * _LOG2E, data.block_tables.stride(0), **self.constants,
            num_warps=self.warps, maxnreg=self.maxnreg,
        )
        return data.out


def variants(everything: bool) -> list[Variant]:
    """The stream-only ceilings and the warp-specialised kernel; `everything`: also the single-partition
    tile kernel (early or late slot release) and the warp-pages kernel. Shared memory = ring slots x
    pages x 8 KB (K and V); registers capped at 168 allow two programs per SM (None: 255, one)."""
    common = dict(NUM_KV_HEADS=KV_HEADS, QUERIES_PER_KV=Q_HEADS // KV_HEADS, BLOCK_M=16,
                  BLOCK_SIZE=BLOCK_SIZE)
    out = [Variant(f"stream only p{pages} s{slots} w4", gluon_decode_kernel,
                   dict(common, PAGES=pages, NUM_BUF=slots, STREAM_ONLY=True, EARLY_RELEASE=False), 4,
                   checked=False)
           for pages, slots in [(4, 3), (4, 2), (2, 4)]]
    if everything:
        out += [Variant(f"tile p{pages} s{slots} w{warps}{' early' if early else ''}", gluon_decode_kernel,
                        dict(common, PAGES=pages, NUM_BUF=slots, STREAM_ONLY=False, EARLY_RELEASE=early),
                        warps)
                for pages, slots, warps, early in [(4, 3, 4, False), (4, 3, 4, True), (4, 2, 4, True),
                                                   (4, 4, 4, True), (8, 2, 4, True), (4, 3, 8, True)]]
        out += [Variant(f"warp pages s{slots} w{warps}{' early' if early else ''}",
                        gluon_decode_warp_pages_kernel, dict(common, NUM_BUF=slots, EARLY_RELEASE=early),
                        warps)
                for slots, warps, early in [(2, 4, False), (2, 4, True), (3, 4, True), (4, 2, True)]]
    out += [Variant(f"ws p{pages} s{slots} w{warps} r{maxnreg}", gluon_decode_ws_kernel,
                    dict(common, PAGES=pages, NUM_BUF=slots), warps, maxnreg)
            for pages, slots, warps, maxnreg in [(4, 4, 4, None), (8, 2, 4, None), (4, 3, 4, 168),
                                                 (4, 2, 4, 168), (4, 3, 8, 168), (8, 3, 4, None),
                                                 (8, 2, 8, 168), (4, 5, 4, None)]]
    return out


SHAPES = [(64, 4096), (256, 1024), (256, 4096), (256, 1000)]


def compile_only(dump: str | None) -> None:
    """Compile each variant for sm_90 here (no GPU): registers, spills and shared memory (Triton's
    bundled ptxas); `dump`: also write each TTGIR there."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    layout = gl.NVMMASharedLayout.get_default_for([BLOCK_SIZE, HALF_COLS], gl.bfloat16)
    desc = f"tensordesc<bf16[{BLOCK_SIZE}, {HALF_COLS}],{layout!r}>"
    for variant in variants(everything=True):
        signature = {"q_ptr": "*bf16", "kv_desc": desc, "out_ptr": "*bf16", "seq_lens_ptr": "*i32",
                     "block_tables_ptr": "*i32", "scale_log2": "fp32", "stride_bt_seq": "i32"}
        signature.update({name: "constexpr" for name in variant.constants})
        params = list(signature)
        source = GluonASTSource(variant.kernel, signature,
                                {(params.index(k),): v for k, v in variant.constants.items()})
        options = {"num_warps": variant.warps, "maxnreg": variant.maxnreg}
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
        with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
            f.write(compiled.asm["ptx"])
            f.flush()
            report = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull],
                                    capture_output=True, text=True).stderr
        registers = re.findall(r"Used (\d+) registers", report)[-1]
        spills = re.findall(r"(\d+) bytes spill stores", report)[-1]
        print(f"{variant.label}: {compiled.metadata.shared // 1024} KB shared, {registers} registers, "
              f"{spills} B spilled", flush=True)
        if dump:
            with open(os.path.join(dump, re.sub(r"\W+", "_", variant.label) + ".ttgir"), "w") as out:
                out.write(compiled.asm["ttgir"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compile-only", action="store_true")
    parser.add_argument("--dump", default=None, help="with --compile-only: write each TTGIR here")
    parser.add_argument("--all", action="store_true", help="also the tile and warp-pages kernels")
    args = parser.parse_args()
    if args.compile_only:
        compile_only(args.dump)
        return
    from decode_probe import compare_decode_variants

    chosen = variants(args.all)
    compare_decode_variants(SHAPES, lambda batch, seq_len: [(v.label, v, v.checked) for v in chosen])


if __name__ == "__main__":
    main()
