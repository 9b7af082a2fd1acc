"""Linear projections of the decoder: the plain-torch references of kernels/linear_triton.py.

    linear_torch(x [M, K], W [N, K], bias [N] | None)     -> [M, N]
    linear_silu_mul_torch(x [M, K], W [2I, K] gate | up)  -> silu(x W_g^T) * (x W_u^T)  [M, I]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .activation import silu_and_mul_torch


def linear_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def linear_silu_mul_torch(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return silu_and_mul_torch(F.linear(x, weight))
