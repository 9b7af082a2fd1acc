"""Ops of the decoder picked by device: Triton kernels on CUDA, the torch references elsewhere.

Models call these; the choice follows the tensor's device (and, for projections, the row count: the Triton
skinny GEMM serves decode-sized batches, the Triton tiled GEMM the MLP's gate|up at 17-64 rows, cuBLAS the
rest; OMNISERVE_SKINNY_GEMM=0 turns both Triton GEMMs off).
Attention has its own backends (omniserve/attention/backend.py) because it also owns per-step planning.
"""

from __future__ import annotations

import torch
from omniserve.kernels.activation import silu_and_mul_torch
from omniserve.kernels.linear import linear_torch
from omniserve.kernels.rms_norm import rms_norm_torch

from omniserve import envs


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    if x.is_cuda:
        from omniserve.kernels.rms_norm_triton import rms_norm_triton

        return rms_norm_triton(x, weight, eps, residual)
    return rms_norm_torch(x, weight, eps, residual)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    if x.is_cuda:
        from omniserve.kernels.activation_triton import silu_and_mul_triton

        return silu_and_mul_triton(x)
    return silu_and_mul_torch(x)


def _triton_gemm_allowed(x: torch.Tensor) -> bool:
    """A 2-D CUDA input, Triton GEMMs not turned off (OMNISERVE_SKINNY_GEMM=0)."""
    return x.is_cuda and x.dim() == 2 and envs.skinny_gemm()


def _skinny(x: torch.Tensor, num_cols: int) -> bool:
    """Decode-sized rows on CUDA where the Triton skinny GEMM beats cuBLAS (kernels/linear_triton.py)."""
    if not _triton_gemm_allowed(x):
        return False
    from omniserve.kernels.linear_triton import serves
    from omniserve.kernels.paged_attention_config import num_sms

    return serves(x.shape[0], num_cols, num_sms(x.device))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if _skinny(x, weight.shape[0]):
        from omniserve.kernels.linear_triton import linear_triton

        return linear_triton(x, weight, bias)
    return linear_torch(x, weight, bias)


def _tiled_gated(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Mid-sized rows on CUDA where the fused Triton tiled gate|up beats cuBLAS (kernels/gemm_triton.py)."""
    if not _triton_gemm_allowed(x):
        return False
    from omniserve.kernels.gemm_triton import serves_gated, tma_compatible

    return serves_gated(x.shape[0]) and tma_compatible(x) and tma_compatible(weight)


def linear_silu_mul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [M, K], weight [2I, K] (gate | up) -> silu(x W_g^T) * (x W_u^T) [M, I]."""
    if _skinny(x, weight.shape[0] // 2):
        from omniserve.kernels.linear_triton import linear_silu_mul_triton

        return linear_silu_mul_triton(x, weight)
    if _tiled_gated(x, weight):
        from omniserve.kernels.gemm_triton import gemm_silu_mul_triton

        return gemm_silu_mul_triton(x, weight)
    return silu_and_mul(linear_torch(x, weight))
