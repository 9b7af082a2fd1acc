"""Triton SiLU-and-mul for gated MLPs: same contract as `silu_and_mul_torch` (kernels/activation.py).

    x [..., 2I] -> silu(x[..., :I]) * x[..., I:]   ([..., I], x's dtype)

Rounding follows the reference: silu is computed in fp32 and rounded to x's dtype, then the product is
rounded. Grid: (rows, column blocks of I).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, inter, stride_x_row, stride_x_col, stride_o_row, stride_o_col,
                         BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    gate_ptrs = x_ptr + row * stride_x_row + cols * stride_x_col
    gate = tl.load(gate_ptrs, mask=mask, other=0.0)
    up = tl.load(gate_ptrs + inter * stride_x_col, mask=mask, other=0.0)
    gate32 = gate.to(tl.float32)
    silu = (gate32 / (1.0 + tl.exp(-gate32))).to(gate.dtype)
    out = silu.to(tl.float32) * up.to(tl.float32)
    tl.store(out_ptr + row * stride_o_row + cols * stride_o_col, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul_triton(x: torch.Tensor) -> torch.Tensor:
    inter = x.shape[-1] // 2
    out = torch.empty((*x.shape[:-1], inter), dtype=x.dtype, device=x.device)
    x_rows = x.reshape(-1, x.shape[-1])  # a view whenever the leading dims allow one
    out_rows = out.view(-1, inter)
    if x_rows.shape[0] == 0 or inter == 0:
        return out
    block = min(1024, triton.next_power_of_2(inter))
    _silu_and_mul_kernel[(x_rows.shape[0], triton.cdiv(inter, block))](
        x_rows, out_rows, inter, *x_rows.stride(), *out_rows.stride(), BLOCK=block,
        num_warps=4 if block >= 512 else 1,
        enable_fp_fusion=False,  # keep the reference's separate roundings (no FMA)
    )
    return out
