"""Building blocks shared by the models: RMSNorm, rotary embedding, gated MLP activation, linear
layers (plain, and fused (stacked) weights: q|k|v, gate|up with the activation fused in).

Each layer calls one op of `omniserve.kernels.ops`: Triton on CUDA, the torch reference elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from omniserve.kernels.ops import linear, linear_silu_mul, rms_norm, silu_and_mul


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: [T, H]. With `residual`, returns (norm(x + residual), x + residual)."""
        out, summed = rms_norm(x, self.weight, self.eps, residual)
        return out if residual is None else (out, summed)


class RotaryEmbedding(nn.Module):
    """Holds cos/sin for every position ([max_position, D] fp32: cos half | sin half) and the M-RoPE
    sections; the attention layer hands them to its backend, which rotates q and k as it writes K/V
    (`rotate_and_write_kv`). `inv_freq` and `attention_scaling` come from the checkpoint's rope parameters."""

    def __init__(
        self,
        inv_freq: torch.Tensor,
        max_position: int,
        attention_scaling: float = 1.0,
        mrope_section: list[int] | None = None,
    ) -> None:
        super().__init__()
        positions = torch.arange(max_position, dtype=torch.float32)
        freqs = positions[:, None] * inv_freq.float()[None, :]  # [P, D/2]
        cos_sin = torch.cat([freqs.cos(), freqs.sin()], dim=-1) * attention_scaling
        self.register_buffer("cos_sin_cache", cos_sin, persistent=False)
        self.mrope_section = mrope_section


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, 2I] -> [T, I]."""
        return silu_and_mul(x)


class Linear(nn.Linear):
    """nn.Linear through `ops.linear`: decode-sized batches on CUDA take the Triton skinny GEMM."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class StackedLinear(Linear):
    """One linear layer whose output rows are several checkpoint tensors stacked (q|k|v, gate|up).
    `load_shard(name, tensor)` copies checkpoint tensor `name` into its row range."""

    def __init__(self, in_features: int, shard_sizes: dict[str, int], bias: bool) -> None:
        super().__init__(in_features, sum(shard_sizes.values()), bias=bias)
        self.shard_offsets: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, size in shard_sizes.items():
            self.shard_offsets[name] = (offset, size)
            offset += size

    def load_shard(self, shard: str, param_name: str, tensor: torch.Tensor) -> None:
        start, size = self.shard_offsets[shard]
        target = getattr(self, param_name)
        if tensor.shape[0] != size or tensor.shape[1:] != target.shape[1:]:
            raise ValueError(
                f"checkpoint tensor {shard}.{param_name} has shape {tuple(tensor.shape)}, "
                f"expected ({size}, {', '.join(map(str, target.shape[1:]))})"
            )
        with torch.no_grad():
            target[start : start + size].copy_(tensor)


class GateUpLinear(StackedLinear):
    """The gate|up projection of a gated MLP with SiLU-and-mul applied: x [T, H] -> [T, I]. Decode-sized
    batches on CUDA run it as one kernel (the [T, 2I] intermediate is never written)."""

    def __init__(self, in_features: int, intermediate_size: int) -> None:
        super().__init__(in_features, {"gate": intermediate_size, "up": intermediate_size}, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_silu_mul(x, self.weight)
