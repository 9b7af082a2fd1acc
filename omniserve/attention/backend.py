"""Attention backends: how a step writes K/V into the paged pool and attends over it.

Contract of every backend:
- `write_kv(k, v, k_cache, v_cache, slot_mapping)` stores this step's K/V ([T, Hkv, D]) at their slots,
  skipping negative slots; it must run before `attend` of the same layer (so chunks and prefix readers in
  the same step see it).
- `rotate_and_write_kv(q, k, v, positions, cos_sin_cache, mrope_section, k_cache, v_cache, slot_mapping)`
  does the layer's rotary embedding and `write_kv` in one: q ([T, Hq, D]) is rotated in place, and rotated k
  with v lands at the slots; k and v themselves stay unchanged (`attend` reads K/V only from the cache).
  Positions are [T] or [3, T] (M-RoPE), as in kernels/rotary.py.
- `plan(metadata)` runs once per step, before the forward; whatever it returns (index tensors derived from
  the metadata, or None) is handed to every layer's `attend`.
- `attend(q, k_cache, v_cache, metadata, scale, plan)` returns [T, Hq, D]: causal attention of every query
  over its own request's context in the pool (see kernels/paged_attention.py for the exact layout).
- Neither syncs with the host or allocates data-dependent buffers (the torch backend is exempt: it is the
  portable reference path, not the CUDA-graph path).
Backends are picked by name from `ATTENTION_BACKENDS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from omniserve.attention.forward_context import AttentionMetadata


class AttentionBackend(ABC):
    name: str

    @abstractmethod
    def write_kv(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None: ...

    @abstractmethod
    def rotate_and_write_kv(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        cos_sin_cache: torch.Tensor,
        mrope_section: list[int] | None,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None: ...

    def plan(self, metadata: AttentionMetadata, block_size: int) -> Any:
        return None

    @abstractmethod
    def attend(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        metadata: AttentionMetadata,
        scale: float,
        plan: Any,
    ) -> torch.Tensor: ...


class TorchAttentionBackend(AttentionBackend):
    """Plain torch over the same paged pool; runs on any device."""

    name = "torch"

    def __init__(self, device: torch.device) -> None:
        del device

    def write_kv(self, k, v, k_cache, v_cache, slot_mapping) -> None:
        from omniserve.kernels.kv_write import write_kv_torch

        write_kv_torch(k, v, k_cache, v_cache, slot_mapping)

    def rotate_and_write_kv(
        self, q, k, v, positions, cos_sin_cache, mrope_section, k_cache, v_cache, slot_mapping
    ) -> None:
        from omniserve.kernels.rotary_kv import rotary_write_kv_torch

        rotary_write_kv_torch(
            q, k, v, positions, cos_sin_cache, mrope_section, k_cache, v_cache, slot_mapping
        )

    def plan(self, metadata, block_size):
        from omniserve.kernels.paged_attention import plan_paged_attention

        return plan_paged_attention(
            metadata.query_start_loc, metadata.seq_lens, metadata.block_tables, block_size
        )

    def attend(self, q, k_cache, v_cache, metadata, scale, plan) -> torch.Tensor:
        from omniserve.kernels.paged_attention import paged_attention_torch

        return paged_attention_torch(
            q,
            k_cache,
            v_cache,
            metadata.query_start_loc,
            metadata.seq_lens,
            metadata.block_tables,
            scale,
            metadata.max_query_len,
            metadata.max_seq_len,
            plan=plan,
        )


def _triton_backend() -> type[AttentionBackend]:
    from omniserve.attention.triton_backend import TritonAttentionBackend

    return TritonAttentionBackend


# name -> factory of the backend class (imported lazily: triton is only touched when chosen)
ATTENTION_BACKENDS = {"torch": lambda: TorchAttentionBackend, "triton": _triton_backend}


def create_attention_backend(name: str, device: torch.device) -> AttentionBackend:
    """Resolve "auto" (triton on CUDA, torch elsewhere) and build the backend."""
    if name == "auto":
        name = "triton" if device.type == "cuda" else "torch"
    if name not in ATTENTION_BACKENDS:
        raise ValueError(
            f"attention backend {name!r} is not available; available: {sorted(ATTENTION_BACKENDS)}"
        )
    return ATTENTION_BACKENDS[name]()(device)
