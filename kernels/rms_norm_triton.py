"""Triton RMSNorm with optional fused residual add: same contract as `rms_norm_torch` (kernels/rms_norm.py).

    x, residual: [..., H];  weight: [H]
    with residual:  s = x + residual (rounded to x's dtype);  returns (weight * norm(s).to(dtype), s)
    without:        returns (weight * norm(x).to(dtype), x)   (x itself, as the reference returns it)

One program per row; the row is held in registers (H up to a few tens of thousands). The sum of squares
runs in fp32; the normalised row is rounded to the input dtype before the weight multiply, and the
product is rounded to the promoted dtype of (weight, x), exactly as the reference's `weight * normed`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from .pdl import pdl_enabled


@triton.jit
def _rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr, sum_ptr, eps, hidden,
    stride_weight, stride_x_row, stride_r_row, stride_o_row, stride_s_row,
    HAS_RESIDUAL: tl.constexpr, BLOCK_H: tl.constexpr, USE_PDL: tl.constexpr,
):
    if USE_PDL:  # kernels/pdl.py
        gdc_wait()
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    mask = cols < hidden
    x = tl.load(x_ptr + row * stride_x_row + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + row * stride_r_row + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + residual.to(tl.float32)).to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * stride_s_row + cols, x, mask=mask)
    x32 = x.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x32 * x32, 0) / hidden + eps)
    normed = (x32 * inv_rms).to(x.dtype)
    weight = tl.load(weight_ptr + cols * stride_weight, mask=mask, other=0.0)
    out = weight.to(tl.float32) * normed.to(tl.float32)
    if USE_PDL:  # only stores remain: let the next kernel's programs be scheduled now
        gdc_launch_dependents()
    tl.store(out_ptr + row * stride_o_row + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """[..., H] -> [R, H] view with unit column stride (copies only if no such view exists)."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def rms_norm_triton(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = x.shape[-1]
    x_rows = _as_rows(x)
    sum_dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    out = torch.empty(x.shape, dtype=torch.promote_types(weight.dtype, sum_dtype), device=x.device)
    if residual is not None:
        residual_rows = _as_rows(residual)
        new_residual = torch.empty(x.shape, dtype=sum_dtype, device=x.device)
        sum_rows = new_residual.view(-1, hidden)
    else:
        residual_rows = sum_rows = x_rows  # unused
        new_residual = x
    num_rows = x_rows.shape[0]
    if num_rows == 0:
        return out, new_residual
    block_h = triton.next_power_of_2(hidden)
    use_pdl = pdl_enabled(x.device, num_rows)
    _rms_norm_kernel[(num_rows,)](
        x_rows, residual_rows, weight, out, sum_rows, eps, hidden,
        weight.stride(0), x_rows.stride(0), residual_rows.stride(0), hidden, sum_rows.stride(0),
        HAS_RESIDUAL=residual is not None, BLOCK_H=block_h, USE_PDL=use_pdl,
        num_warps=min(16, max(1, block_h // 256)), launch_pdl=use_pdl,
        enable_fp_fusion=False,  # keep the reference's separate roundings (no FMA)
    )
    return out, new_residual
