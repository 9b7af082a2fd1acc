"""Triton tiled GEMM for mid-sized batches (decode steps of 17 to 64 rows), with a fused SiLU-and-mul variant.

Same contract as `linear_torch` / `linear_silu_mul_torch` (kernels/linear.py):

    x [M, K], W [N, K] (nn.Linear layout), bias [N] | None  ->  out [M, N]
    silu_mul: W [2I, K] = gate rows | up rows               ->  out [M, I] = silu(x W_g^T) * (x W_u^T)

Where it serves (`serves_gated`): the MLP's gate|up projection at 17-64 rows. There the projection is still
a pass over its weight (below the H200's ridge point of ~181 rows), and cuBLAS plus the separate activation
kernel ran 5-11% slower than this fused kernel (qwen2.5-7b gate|up, benchmarks/sweep_gemm.py,
benchmarks/results/gemm_sweep.md): the [M, 2I] intermediate is never written, and the activation needs no
launch of its own. The plain projections at these sizes and everything at 96 rows and more ran faster on
cuBLAS (at 256 rows by 9-28%), so the engine keeps cuBLAS there; `gemm_triton` stays for the sweep.

Tiling: a program owns one BLOCK_M x BLOCK_N output tile; x and W tiles arrive by TMA (host tensor
descriptors, so x and W need 16-byte aligned rows: `tma_compatible`), `num_stages` of them in flight; rows
past M and columns past K read as zero. The M tiles of one N tile are adjacent in the grid, so a weight slab
comes from DRAM once and from L2 for the other M tiles. The gated variant loads the gate and the up tile of
the same columns.

Rounding follows the unfused path: products accumulate in fp32, the result rounds to x's dtype, then (gated)
silu rounds to x's dtype and the product rounds again, as `silu_and_mul` does on a rounded input.
Grid: from host-known shapes only, so calls capture in CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

MIN_ROWS, MAX_ROWS = 17, 64  # rows where the gated variant serves the engine (fewer: linear_triton.py)


@dataclass(frozen=True)
class GemmConfig:
    block_m: int
    block_n: int  # output columns per program (gated: of the [M, I] output)
    block_k: int
    num_warps: int
    num_stages: int


@triton.jit
def _tiled_gemm_kernel(
    x_desc, w_desc, bias_ptr, out_ptr,
    M, N, up_offset, k_tiles,
    stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
    SILU_MUL: tl.constexpr, DOT_PRECISION: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    off_m = (pid % num_m) * BLOCK_M
    off_n = (pid // num_m) * BLOCK_N

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = acc
    for kt in tl.range(0, k_tiles, num_stages=NUM_STAGES):
        off_k = kt * BLOCK_K
        a = x_desc.load([off_m, off_k])  # [BM, BK]
        w = w_desc.load([off_n, off_k])  # [BN, BK]; gated: gate rows (past I: masked at the store)
        acc = tl.dot(a, w.T, acc, input_precision=DOT_PRECISION)
        if SILU_MUL:
            up = w_desc.load([up_offset + off_n, off_k])
            acc_up = tl.dot(a, up.T, acc_up, input_precision=DOT_PRECISION)

    rows = off_m + tl.arange(0, BLOCK_M)
    cols = off_n + tl.arange(0, BLOCK_N)
    col_valid = cols < N
    out_dtype = out_ptr.dtype.element_ty
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)[None, :]
    result = acc.to(out_dtype)
    if SILU_MUL:
        gate = result.to(tl.float32)
        silu = (gate / (1.0 + tl.exp(-gate))).to(out_dtype)
        result = (silu.to(tl.float32) * acc_up.to(out_dtype).to(tl.float32)).to(out_dtype)
    mask = (rows < M)[:, None] & col_valid[None, :]
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :] * stride_on, result, mask=mask)


def tma_compatible(t: torch.Tensor) -> bool:
    """Whether a 2-D tensor can back a TMA descriptor: unit last stride, 16-byte aligned base and rows."""
    size = t.element_size()
    return (t.dim() == 2 and t.stride(1) == 1 and t.data_ptr() % 16 == 0 and (t.stride(0) * size) % 16 == 0
            and (t.shape[1] * size) % 16 == 0)


def serves_gated(num_rows: int) -> bool:
    """Whether the fused gate|up + SiLU-and-mul beats cuBLAS + silu_and_mul at this row count (H200)."""
    return MIN_ROWS <= num_rows <= MAX_ROWS


def pick_gemm_config(num_rows: int, on_gpu: bool = True) -> GemmConfig:
    """Measured best for the gated projection on an H200 (sweep_gemm.py: 24 / 32 rows: 32-row tiles, 48 / 64
    rows: 64-row tiles; 64 columns, 64-deep K steps, 8 warps, 3 stages)."""
    if not on_gpu:
        return GemmConfig(16, 16, 32, 4, 1)
    return GemmConfig(32 if num_rows <= 32 else 64, 64, 64, 8, 3)


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
            num_cols: int, silu_mul: bool, config: GemmConfig | None) -> torch.Tensor:
    num_rows, in_features = x.shape
    if num_rows == 0 or num_cols == 0:
        return out
    if not (tma_compatible(x) and tma_compatible(weight)):
        raise ValueError("tiled GEMM needs x and weight with unit last stride and 16-byte aligned rows")
    if config is None:
        config = pick_gemm_config(num_rows, x.is_cuda)
    bm, bn, bk = config.block_m, config.block_n, config.block_k
    x_desc = TensorDescriptor.from_tensor(x, [bm, bk])
    w_desc = TensorDescriptor.from_tensor(weight, [bn, bk])
    grid = (triton.cdiv(num_rows, bm) * triton.cdiv(num_cols, bn),)
    _tiled_gemm_kernel[grid](
        x_desc, w_desc, bias if bias is not None else out, out,
        num_rows, num_cols, num_cols if silu_mul else 0, triton.cdiv(in_features, bk), *out.stride(),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, HAS_BIAS=bias is not None, SILU_MUL=silu_mul,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32", NUM_STAGES=config.num_stages,
        num_warps=config.num_warps,
    )
    return out


def gemm_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                config: GemmConfig | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K], weight [N, K], bias [N] -> [M, N] in x's dtype."""
    if out is None:
        out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    return _launch(x, weight, bias, out, weight.shape[0], False, config)


def gemm_silu_mul_triton(x: torch.Tensor, weight: torch.Tensor, config: GemmConfig | None = None,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K], weight [2I, K] (gate | up) -> silu(x W_g^T) * (x W_u^T) [M, I]."""
    inter = weight.shape[0] // 2
    if out is None:
        out = torch.empty((x.shape[0], inter), dtype=x.dtype, device=x.device)
    return _launch(x, weight, None, out, inter, True, config)
