"""The scoped forward context: attention metadata for one step, visible to every attention layer.

    with forward_context(ForwardContext(metadata, backend)):
        hidden = model(input_ids, positions)

Layers call `get_forward_context()`; nothing is threaded through `forward()` signatures, and outside
a `with` block there is no context (a bug shows as an error, not as stale metadata).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from omniserve.attention.backend import AttentionBackend


@dataclass
class AttentionMetadata:
    """One step's flattened batch (T tokens of B requests) as the attention kernels see it."""

    query_start_loc: torch.Tensor  # [B + 1] int32, request b's tokens are [qsl[b], qsl[b+1])
    seq_lens: torch.Tensor  # [B] int32, context length including this step's tokens
    block_tables: torch.Tensor  # [B, max_pages] int32, page ids in token order (0-padded)
    slot_mapping: torch.Tensor  # [T] int64, page * block_size + offset per token (-1 = padding)
    max_query_len: int  # host-known maxima, so launch grids never read device lengths
    max_seq_len: int
    num_tokens: int  # T
    # attend decodes and prefill chunks in two launches, each with its own tile shape (worth it from a few
    # decodes on; a CUDA graph of mixed steps always does, not knowing its batch)
    split_decodes: bool = False


@dataclass
class ForwardContext:
    attn_metadata: AttentionMetadata
    backend: AttentionBackend
    attn_plan: Any = None  # backend.plan(attn_metadata), built once per step for all layers


_CURRENT: contextvars.ContextVar[ForwardContext | None] = contextvars.ContextVar(
    "forward_context", default=None
)


@contextlib.contextmanager
def forward_context(context: ForwardContext) -> Iterator[ForwardContext]:
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def get_forward_context() -> ForwardContext:
    context = _CURRENT.get()
    if context is None:
        raise RuntimeError("attention layer called outside `with forward_context(...)`")
    return context
