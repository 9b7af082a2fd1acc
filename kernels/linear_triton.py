"""Triton skinny GEMM for decode-sized batches: out = x @ W^T (+ bias), optionally fused with SiLU-and-mul.

Same contract as `linear_torch` / `linear_silu_mul_torch` (kernels/linear.py):

    x [M, K], W [N, K] (nn.Linear layout), bias [N] | None  ->  out [M, N]
    silu_mul: W [2I, K] = gate rows | up rows               ->  out [M, I] = silu(x W_g^T) * (x W_u^T)

Why: at M <= 16 a projection is a pass over its weight bytes; cuBLAS runs the small ones (o_proj, qkv of a
7B model: 25-33 MB) well below copy bandwidth on an H200 (benchmarks/bench_linear.py). Here one program owns
BLOCK_N output columns for all M rows and streams its [BLOCK_N, K] weight slab once, BLOCK_K at a time,
with `num_stages` loads in flight; M rows pad to one 16-row `tl.dot` tile (the MMA is free next to the load).
The gated variant reads the gate and the up slab of the same columns and writes only silu(g) * u, so the
MLP's [M, 2I] intermediate and its separate activation launch disappear.

Rounding follows the unfused path: products accumulate in fp32, the result rounds to x's dtype, then (fused
variant) silu rounds to x's dtype and the product rounds again, as `silu_and_mul` does on a rounded input.
Grid: cdiv(N, BLOCK_N) programs; nothing depends on device data, so calls capture in CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from .paged_attention_config import num_sms
from .pdl import pdl_enabled

MAX_ROWS = 16  # largest M this kernel serves (one 16-row MMA tile)
STAGE_BYTES_LIMIT = 160 * 1024  # shared memory for the pipelined loads (sm_90 allows 227 KB per program)


@dataclass(frozen=True)
class LinearConfig:
    block_n: int  # output columns per program
    block_k: int  # reduction step
    num_warps: int
    num_stages: int


@triton.jit
def _skinny_gemm_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr,
    M, N, K, up_offset,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, SILU_MUL: tl.constexpr, EVEN_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:  # kernels/pdl.py: the previous kernel has finished (x is ready, out is free) past this line
        gdc_wait()
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    row_valid = offs_m < M
    col_valid = offs_n < N
    cols = tl.where(col_valid, offs_n, 0).to(tl.int64)  # clamped: loads of padding columns stay in bounds

    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk  # [BM, BK]
    w_ptrs = w_ptr + cols[:, None] * stride_wn + offs_k[None, :] * stride_wk  # [BN, BK]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if SILU_MUL:
        up_ptrs = w_ptrs + up_offset * stride_wn
        acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            x = tl.load(x_ptrs, mask=row_valid[:, None], other=0.0)
            w = tl.load(w_ptrs)
        else:
            k_valid = (k0 + offs_k) < K
            x = tl.load(x_ptrs, mask=row_valid[:, None] & k_valid[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=k_valid[None, :], other=0.0)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=DOT_PRECISION)  # [BM, BN]
        if SILU_MUL:
            if EVEN_K:
                up = tl.load(up_ptrs)
            else:
                up = tl.load(up_ptrs, mask=k_valid[None, :], other=0.0)
            acc_up = tl.dot(x, tl.trans(up), acc_up, input_precision=DOT_PRECISION)
            up_ptrs += BLOCK_K * stride_wk
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    if USE_PDL:  # the main work is done: let the next kernel's programs be scheduled now
        gdc_launch_dependents()
    out_dtype = out_ptr.dtype.element_ty
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)
        acc = acc + bias[None, :]
    result = acc.to(out_dtype)
    if SILU_MUL:
        gate = result.to(tl.float32)
        silu = (gate / (1.0 + tl.exp(-gate))).to(out_dtype)
        result = (silu.to(tl.float32) * acc_up.to(out_dtype).to(tl.float32)).to(out_dtype)
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(out_ptrs, result, mask=row_valid[:, None] & col_valid[None, :])


def serves(num_rows: int, num_cols: int, num_sms: int) -> bool:
    """Whether this kernel beats cuBLAS for the shape (benchmarks/bench_linear.py on an H200).

    One wave of 32-column programs (o_proj, down of a 7B model: <= 32 columns per SM) and many waves
    (gate|up, lm_head) win. In between (qkv, 4608 columns on 132 SMs), one wave needs 64-column programs on
    half the SMs or 32-column ones with a second program on some SMs: 11.2-13.9 us against cuBLAS's 10.9."""
    if not 0 < num_rows <= MAX_ROWS:
        return False
    return not 32 * num_sms < num_cols <= 64 * num_sms


def pick_linear_config(num_cols: int, in_features: int, num_sms: int, silu_mul: bool = False,
                       on_gpu: bool = True, num_rows: int = 1) -> LinearConfig:
    """Measured on an H200 (benchmarks/bench_linear.py --sweep --sweep-rows 1 4 8 12 16, qwen2.5-7b
    projections; benchmarks/results/linear.md).

    A weight small enough for one wave gets the narrowest slab that still fits one program per SM, so no
    SM runs a second program after the others finish; each program keeps ~96-144 KB of loads in flight:
    256-deep K steps, 6 stages (32-column slabs), except at 16 rows (MAX_ROWS, which decode graphs of
    9-16 requests pad to), where those ran 10-14% slower than 512-deep steps in 3 stages (down: 40.6 vs
    35.8 us, o_proj 9.9 vs 9.0; at 1-12 rows the 256-deep steps win by 2-5%). 64-column slabs would get
    only 2 such stages (qkv at 16 rows: 17.0 us against 10.6), so they keep 256-deep steps. Wider weights
    (gate|up, lm_head) run many waves of 32-column programs; the gated variant streams two slabs, so it
    halves BLOCK_K to keep the same bytes per stage, and runs 3 stages (6-9% faster than 4 at 1-16
    rows)."""
    if not on_gpu:
        return LinearConfig(16, 32, 4, 1)
    if num_cols <= 64 * num_sms:
        block_n = min(64, max(16, triton.next_power_of_2(triton.cdiv(num_cols, num_sms))))
        if num_rows == MAX_ROWS and block_n <= 32:
            return LinearConfig(block_n, 512, 4, 3)
        return LinearConfig(block_n, 256, 4, 6 if block_n <= 32 else 4)
    if silu_mul:
        return LinearConfig(32, 128, 4, 3)
    return LinearConfig(32, 256, 4, 4)


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
            num_cols: int, silu_mul: bool, config: LinearConfig | None) -> torch.Tensor:
    num_rows, in_features = x.shape
    if num_rows == 0 or num_cols == 0:
        return out
    if num_rows > MAX_ROWS:
        raise ValueError(f"skinny GEMM serves at most {MAX_ROWS} rows, got {num_rows}")
    if config is None:
        config = pick_linear_config(num_cols, in_features, num_sms(x.device), silu_mul, x.is_cuda, num_rows)
    block_k = min(config.block_k, max(16, triton.next_power_of_2(in_features)))
    # one stage holds an x tile and one (two, gated) weight tiles; wide dtypes get fewer stages
    stage_bytes = (16 + config.block_n * (2 if silu_mul else 1)) * block_k * x.element_size()
    num_stages = max(1, min(config.num_stages, STAGE_BYTES_LIMIT // stage_bytes))
    use_pdl = pdl_enabled(x.device, num_rows)
    _skinny_gemm_kernel[(triton.cdiv(num_cols, config.block_n),)](
        x, weight, bias if bias is not None else out, out,
        num_rows, num_cols, in_features, num_cols if silu_mul else 0,
        *x.stride(), *weight.stride(), *out.stride(),
        BLOCK_M=16, BLOCK_N=config.block_n, BLOCK_K=block_k,
        HAS_BIAS=bias is not None, SILU_MUL=silu_mul, EVEN_K=in_features % block_k == 0,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32", USE_PDL=use_pdl,
        num_warps=config.num_warps, num_stages=num_stages, launch_pdl=use_pdl,
    )
    return out


def linear_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  config: LinearConfig | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K] (M <= MAX_ROWS), weight [N, K], bias [N] -> [M, N] in x's dtype."""
    if out is None:
        out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    return _launch(x, weight, bias, out, weight.shape[0], False, config)


def linear_silu_mul_triton(x: torch.Tensor, weight: torch.Tensor, config: LinearConfig | None = None,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K] (M <= MAX_ROWS), weight [2I, K] (gate | up) -> silu(x W_g^T) * (x W_u^T) [M, I]."""
    inter = weight.shape[0] // 2
    if out is None:
        out = torch.empty((x.shape[0], inter), dtype=x.dtype, device=x.device)
    return _launch(x, weight, None, out, inter, True, config)
