"""Rotary position embedding (NeoX / rotate-half layout), 1-D and M-RoPE, applied in place.

    q: [T, Hq, D], k: [T, Hkv, D]
    cos_sin_cache: [max_position, D] fp32: first D/2 columns cos(pos * inv_freq), last D/2 sin(...)
    positions: [T] int64 (1-D) or [3, T] int64 (M-RoPE: temporal, height, width position ids)
    mrope_section: [s_t, s_h, s_w] with s_t + s_h + s_w == D/2: frequency j takes its angle from the
        temporal ids for j < s_t, height ids for the next s_h, width ids for the rest (contiguous sections,
        the Qwen2-VL / Qwen2.5-Omni layout).
x_rot = x * cos + rotate_half(x) * sin with cos/sin duplicated over both halves, in x's dtype.
"""

from __future__ import annotations

import torch


def rotary_cos_sin(
    positions: torch.Tensor, cos_sin_cache: torch.Tensor, mrope_section: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: [T, D/2] fp32 for the given positions."""
    half = cos_sin_cache.shape[1] // 2
    if positions.dim() == 1:
        cos_sin = cos_sin_cache[positions]  # [T, D]
    else:
        assert mrope_section is not None and sum(mrope_section) == half, "mrope_section must sum to D/2"
        per_axis = cos_sin_cache[positions]  # [3, T, D]
        axis_of_freq = torch.repeat_interleave(
            torch.arange(3, device=positions.device), torch.tensor(mrope_section, device=positions.device)
        )  # [D/2]
        axis_of_col = torch.cat([axis_of_freq, axis_of_freq])  # [D]
        cos_sin = per_axis.gather(0, axis_of_col[None, None, :].expand(1, *per_axis.shape[1:]))[0]
    return cos_sin[:, :half], cos_sin[:, half:]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    cos = torch.cat([cos, cos], dim=-1)[:, None, :].to(x.dtype)  # [T, 1, D]
    sin = torch.cat([sin, sin], dim=-1)[:, None, :].to(x.dtype)
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def apply_rotary_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    mrope_section: list[int] | None = None,
) -> None:
    cos, sin = rotary_cos_sin(positions, cos_sin_cache, mrope_section)
    q.copy_(_rotate(q, cos, sin))
    k.copy_(_rotate(k, cos, sin))
