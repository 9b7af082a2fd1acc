"""Non-causal attention over packed variable-length sequences (the encoders' window and full attention).

In: q, k, v [N, H, D] holding S sequences back to back; sequence s is rows cu_seqlens[s]:cu_seqlens[s+1]
(cu_seqlens [S+1] int32, cu_seqlens[0] == 0, cu_seqlens[S] == N). Tokens attend to every token of their own
sequence and to nothing else. Out: [N, H, D].

    rows:      0 1 2 3 4 5 6 7 8
    sequences: [ s0  ][s1][  s2  ]        cu_seqlens = [0, 3, 5, 9]
    scores:    block-diagonal, never materialized as [N, N]

This is the plain-torch reference (the Triton kernel will match it). It plans once per packed batch
(`plan_varlen`, host-side: it reads the lengths) and reuses the plan in every layer: sequences of equal
length are gathered into one dense batch [B, H, L, D] and run through SDPA, so no padding is ever computed
and the batch is split whenever B * H * L * L scores would exceed a budget. Encoders have few distinct
lengths (full windows plus edge windows; full audio chunks plus one tail per item).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Largest number of attention scores (B * H * L * L) one SDPA call may hold when it falls back to the math
# path; a single longer sequence still runs on its own.
MAX_SCORES_PER_CALL = 1 << 27


@dataclass(frozen=True)
class VarlenPlan:
    """How one packed batch splits into sequences; built on the host once, shared by all layers."""

    # [S+1] int32 on the compute device: sequence s is rows cu_seqlens[s]:cu_seqlens[s+1] (kernel input)
    cu_seqlens: torch.Tensor
    # length of the longest sequence (the kernel's grid size); 0 for an empty batch
    max_seqlen: int
    # total rows N covered by the sequences (== cu_seqlens[-1])
    num_tokens: int
    # per distinct non-zero length L: (L, rows [B, L] int64 on the device) of the B sequences that long
    groups: tuple[tuple[int, torch.Tensor], ...]


def plan_varlen(
    cu_seqlens: torch.Tensor | Sequence[int], device: torch.device | str | None = None
) -> VarlenPlan:
    """Validates `cu_seqlens` (non-decreasing from 0) and groups the sequences by length."""
    bounds = cu_seqlens.tolist() if isinstance(cu_seqlens, torch.Tensor) else [int(b) for b in cu_seqlens]
    if device is None:
        device = cu_seqlens.device if isinstance(cu_seqlens, torch.Tensor) else "cpu"
    if not bounds or bounds[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {bounds[:4]}")
    starts_by_length: dict[int, list[int]] = {}
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end < start:
            raise ValueError(f"cu_seqlens must be non-decreasing, got {start} then {end}")
        if end > start:
            starts_by_length.setdefault(end - start, []).append(start)
    groups = []
    for length, starts in sorted(starts_by_length.items()):
        rows = torch.tensor(starts, dtype=torch.int64)[:, None] + torch.arange(length)[None, :]  # [B, L]
        groups.append((length, rows.to(device)))
    return VarlenPlan(
        cu_seqlens=torch.tensor(bounds, dtype=torch.int32, device=device),
        max_seqlen=max(starts_by_length, default=0),
        num_tokens=bounds[-1],
        groups=tuple(groups),
    )


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: VarlenPlan | torch.Tensor | Sequence[int],
    scale: float | None = None,
) -> torch.Tensor:
    """q, k, v: [N, H, D] -> [N, H, D]; `plan` is a `VarlenPlan` or the cu_seqlens to plan from.
    `scale` defaults to D ** -0.5."""
    if not isinstance(plan, VarlenPlan):
        plan = plan_varlen(plan, q.device)
    num_tokens, num_heads, head_dim = q.shape
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must have one shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if plan.num_tokens != num_tokens:
        raise ValueError(f"cu_seqlens covers {plan.num_tokens} tokens but q has {num_tokens}")
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(q)  # every row belongs to exactly one sequence, so every row is written
    for length, rows in plan.groups:
        per_call = max(1, MAX_SCORES_PER_CALL // (num_heads * length * length))
        for batch_rows in rows.split(per_call):  # [B, L]
            # [B, L, H, D] -> [B, H, L, D]
            q_batch, k_batch, v_batch = (x[batch_rows].transpose(1, 2) for x in (q, k, v))
            attended = F.scaled_dot_product_attention(q_batch, k_batch, v_batch, scale=scale)  # [B, H, L, D]
            out[batch_rows.reshape(-1)] = attended.transpose(1, 2).reshape(-1, num_heads, head_dim)
    return out
