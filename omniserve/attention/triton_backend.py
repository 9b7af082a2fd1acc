"""Triton attention backend: the GPU path (and, under TRITON_INTERPRET=1, a CPU path for tests).

No host syncs and no data-dependent allocations: the launch grid comes from the host-known
`max_query_len` / `max_seq_len` of the metadata (upper bounds, so a CUDA graph captured at the largest
context replays for any shorter one).
"""

from __future__ import annotations

import torch

from omniserve import envs
from omniserve.attention.backend import AttentionBackend


class TritonAttentionBackend(AttentionBackend):
    name = "triton"

    def __init__(self, device: torch.device) -> None:
        if device.type != "cuda" and not envs.triton_interpret():
            raise ValueError(
                "attention_backend='triton' needs a CUDA device (or TRITON_INTERPRET=1 for tests)"
            )
        from omniserve.kernels.interpreter import patch_triton_interpreter
        from omniserve.kernels.kv_write_triton import write_kv_triton
        from omniserve.kernels.paged_attention_triton import paged_attention_triton
        from omniserve.kernels.rotary_kv_triton import rotary_write_kv_triton

        patch_triton_interpreter()
        self._write_kv = write_kv_triton
        self._attend = paged_attention_triton
        self._rotate_and_write_kv = rotary_write_kv_triton

    def write_kv(self, k, v, k_cache, v_cache, slot_mapping) -> None:
        self._write_kv(k, v, k_cache, v_cache, slot_mapping)

    def rotate_and_write_kv(
        self, q, k, v, positions, cos_sin_cache, mrope_section, k_cache, v_cache, slot_mapping
    ) -> None:
        self._rotate_and_write_kv(
            q, k, v, positions, cos_sin_cache, mrope_section, k_cache, v_cache, slot_mapping
        )

    def attend(self, q, k_cache, v_cache, metadata, scale, plan) -> torch.Tensor:
        return self._attend(
            q,
            k_cache,
            v_cache,
            metadata.query_start_loc,
            metadata.seq_lens,
            metadata.block_tables,
            scale,
            metadata.max_query_len,
            metadata.max_seq_len,
            split_decodes=metadata.split_decodes,
        )
