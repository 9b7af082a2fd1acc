"""Compile the attention kernel's variants at engine start, not mid-serving.

Triton compiles a kernel the first time it meets a new set of compile-time parameters; for paged attention
those follow the batch's shape (tile rows from the query length and GQA group, direct or searched tile
mapping, split-K or not). On a cold H200 each new variant cost ~1.3 s, paid by whichever step first needed
it (measured: inter-token latency outliers of that size under media load). This sweep runs every
(query length bucket x batch size x context) combination once on throwaway queries over the real pool, so the
variants are compiled (and cached on disk) before the first request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from omniserve.attention.forward_context import AttentionMetadata

# Query lengths covering every tile-row bucket of the kernel (1 = decode, then 16 / 32 / 64 / 128 rows for
# GQA groups up to 8), batch sizes on both sides of the direct / searched tile mapping, and contexts with
# and without split-K.
QUERY_LENS = (1, 2, 3, 5, 9, 17, 64, 512)
BATCH_SIZES = (1, 16)
CONTEXT_LENS = (64, 8192)


def warm_up_attention(
    attend: Callable[..., torch.Tensor],
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    num_q_heads: int,
    scale: float,
    max_seq_len: int,
    query_lens: Sequence[int] = QUERY_LENS,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    context_lens: Sequence[int] = CONTEXT_LENS,
) -> int:
    """Call `attend(q, k_cache, v_cache, metadata, scale, plan=None)` once per combination; return the count.
    k_cache / v_cache: [num_pages, block_size, Hkv, D] views of the pool (read only)."""
    num_pages, block_size, _, head_dim = k_cache.shape
    device, dtype = k_cache.device, k_cache.dtype
    calls = 0
    for query_len in query_lens:
        for num_seqs in batch_sizes:
            for context in context_lens:
                seq_len = min(max(context, query_len), max_seq_len)
                query_len_here = min(query_len, seq_len)
                num_tokens = query_len_here * num_seqs
                pages_per_seq = -(-seq_len // block_size)
                block_tables = (torch.arange(pages_per_seq, device=device) % num_pages).to(torch.int32)
                q = torch.zeros(num_tokens, num_q_heads, head_dim, device=device, dtype=dtype)
                # steps with chunks attend in one launch, or decodes and chunks in two (variants of their own)
                for split_decodes in (False, True) if query_len_here > 1 else (False,):
                    metadata = AttentionMetadata(
                        query_start_loc=torch.arange(
                            0, num_tokens + 1, query_len_here, device=device, dtype=torch.int32
                        ),
                        seq_lens=torch.full((num_seqs,), seq_len, device=device, dtype=torch.int32),
                        block_tables=block_tables.repeat(num_seqs, 1),
                        slot_mapping=torch.full((num_tokens,), -1, device=device, dtype=torch.long),
                        max_query_len=query_len_here,
                        max_seq_len=seq_len,
                        num_tokens=num_tokens,
                        split_decodes=split_decodes,
                    )
                    attend(q, k_cache, v_cache, metadata, scale, None)
                    calls += 1
    return calls
