"""Paged attention over the page pool: prefill chunks and decodes of many sequences in one call.

Inputs (T = query tokens of all sequences flattened, B = sequences):
    q:               [T, Hq, D]
    k_cache/v_cache: [num_pages, block_size, Hkv, D]  (strided views into the pool, NHD)
    query_start_loc: [B + 1] int32   sequence b's queries are q[query_start_loc[b]:query_start_loc[b+1]]
    seq_lens:        [B] int32       context length of b *including* this step's queries
    block_tables:    [B, max_blocks] int32   page ids, in order; entries past the last used one ignored
Causality: query i of sequence b (0-based within its chunk) sits at absolute position
    seq_lens[b] - q_len[b] + i   and attends keys 0 ..= that position.

    seq b:  [ computed earlier ........ | this step's q_len queries ]
            0                            seq_len - q_len            seq_len
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def paged_attention_torch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    max_query_len: int,
    max_seq_len: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain-torch reference and CPU path: gather each sequence's pages into a padded batch, run SDPA
    with a causal-by-position mask, scatter the valid rows back. Works on any device."""
    num_tokens, num_q_heads, head_dim = q.shape
    block_size = k_cache.shape[1]
    num_seqs = seq_lens.shape[0]
    device = q.device
    num_blocks = (max_seq_len + block_size - 1) // block_size

    pages = block_tables[:, :num_blocks].clamp(min=0).long()  # [B, nb]
    # [B, nb, bs, Hkv, D] -> [B, Hkv, S, D]
    k = k_cache[pages].flatten(1, 2)[:, :max_seq_len].transpose(1, 2)
    v = v_cache[pages].flatten(1, 2)[:, :max_seq_len].transpose(1, 2)

    q_lens = query_start_loc[1:] - query_start_loc[:-1]  # [B]
    q_offsets = torch.arange(max_query_len, device=device)  # [Lq]
    q_index = (query_start_loc[:-1, None] + q_offsets).clamp(max=num_tokens - 1)  # [B, Lq]
    q_valid = q_offsets[None, :] < q_lens[:, None]  # [B, Lq]
    q_pad = q[q_index.long()].transpose(1, 2)  # [B, Hq, Lq, D]

    q_pos = (seq_lens - q_lens)[:, None] + q_offsets[None, :]  # [B, Lq] absolute positions
    k_pos = torch.arange(max_seq_len, device=device)  # [S]
    mask = k_pos[None, None, :] <= q_pos[:, :, None]  # [B, Lq, S]; pad rows see keys, never NaN

    attn = F.scaled_dot_product_attention(
        q_pad, k, v, attn_mask=mask[:, None], scale=scale, enable_gqa=k.shape[1] != num_q_heads
    )  # [B, Hq, Lq, D]
    attn = attn.transpose(1, 2)  # [B, Lq, Hq, D]
    if out is None:
        out = torch.empty_like(q)
    out[q_index[q_valid].long()] = attn[q_valid].to(out.dtype)
    del num_seqs
    return out
