"""SiLU-and-mul for gated MLPs: x [T, 2I] -> silu(x[:, :I]) * x[:, I:]  ([T, I])."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul_torch(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return F.silu(x[..., :half]) * x[..., half:]
