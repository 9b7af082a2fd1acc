"""Elementwise/normalization ops picked by device: Triton kernels on CUDA, the torch references elsewhere.

Models call these; the choice follows the tensor's device, so no global switch exists. Attention has its own
backends (omniserve/attention/backend.py) because it also owns per-step planning.
"""

from __future__ import annotations

import torch
from omniserve.kernels.activation import silu_and_mul_torch
from omniserve.kernels.rms_norm import rms_norm_torch
from omniserve.kernels.rotary import apply_rotary_torch
from omniserve.kernels.rotary_kv import rotary_write_kv_torch


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    if x.is_cuda:
        from omniserve.kernels.rms_norm_triton import rms_norm_triton

        return rms_norm_triton(x, weight, eps, residual)
    return rms_norm_torch(x, weight, eps, residual)


def apply_rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    mrope_section: list[int] | None = None,
) -> None:
    if q.is_cuda:
        from omniserve.kernels.rotary_triton import apply_rotary_triton

        apply_rotary_triton(q, k, positions, cos_sin_cache, mrope_section)
    else:
        apply_rotary_torch(q, k, positions, cos_sin_cache, mrope_section)


def rotary_write_kv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    mrope_section: list[int] | None,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """`apply_rotary` on q and k, then the KV write of rotated k and v by slot mapping, in one launch on
    CUDA; k and v stay as they were (see kernels/rotary_kv.py)."""
    args = (q, k, v, positions, cos_sin_cache, mrope_section, k_cache, v_cache, slot_mapping)
    if q.is_cuda:
        from omniserve.kernels.rotary_kv_triton import rotary_write_kv_triton

        rotary_write_kv_triton(*args)
    else:
        rotary_write_kv_torch(*args)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    if x.is_cuda:
        from omniserve.kernels.activation_triton import silu_and_mul_triton

        return silu_and_mul_triton(x)
    return silu_and_mul_torch(x)
