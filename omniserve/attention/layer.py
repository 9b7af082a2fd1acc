"""`Attention`: the paged-attention layer a model calls with this step's q, k, v (and, for a decoder with
rotary embeddings, its rotary table and positions, so the backend rotates q and k while writing K/V)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from omniserve.attention.forward_context import get_forward_context

if TYPE_CHECKING:
    from omniserve.models.layers import RotaryEmbedding


class Attention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale
        # Views into the page pool, bound by the model runner once the pool exists.
        self.k_cache: torch.Tensor | None = None  # [num_pages, block_size, Hkv, D]
        self.v_cache: torch.Tensor | None = None

    def bind_kv_cache(self, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rotary: RotaryEmbedding | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """q: [T, Hq, D], k/v: [T, Hkv, D] -> [T, Hq, D]. With `rotary` and `positions` ([T], or [3, T] for
        M-RoPE), q and k are rotated first, fused with the K/V write: q in place, k only as written to the
        cache (the tensor `k` stays as given)."""
        context = get_forward_context()
        assert self.k_cache is not None, (
            "KV cache not bound: the model runner binds it after allocating the pool"
        )
        slot_mapping = context.attn_metadata.slot_mapping
        if rotary is None:
            context.backend.write_kv(k, v, self.k_cache, self.v_cache, slot_mapping)
        else:
            assert positions is not None, "rotary embeddings need the tokens' positions"
            context.backend.rotate_and_write_kv(
                q, k, v, positions, rotary.cos_sin_cache, rotary.mrope_section, self.k_cache, self.v_cache,
                slot_mapping,
            )  # fmt: skip
        return context.backend.attend(
            q, self.k_cache, self.v_cache, context.attn_metadata, self.scale, context.attn_plan
        )
