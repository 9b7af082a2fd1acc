"""RMSNorm with an optional fused residual add, in the Qwen2 / transformers semantics.

    x, residual: [T, H];  weight: [H]
    with residual:  s = x + residual;  returns (norm(s) * weight, s)   (s becomes the new residual)
    without:        returns (norm(x) * weight, x)
The norm runs in fp32 and is cast back to the input dtype before the weight multiply, as transformers does.
"""

from __future__ import annotations

import torch


def rms_norm_torch(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    if residual is not None:
        x = x + residual
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype), x
