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

The plain-torch version below is the reference for the Triton kernel and the CPU engine's path. It never
pads a decode to a prefill's length: decodes (q_len 1) form one batched group, each prefill chunk runs on
its own. K/V are gathered by whole pages; positions past a sequence's end are masked out of the scores
and zeroed in V, so stale (even NaN) pool contents never reach the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DecodeGroup:
    token_index: torch.Tensor  # [Bd] rows of q that are decodes
    page_index: torch.Tensor  # [Bd * P] pages to gather, P per sequence (padding: its first page)
    valid: torch.Tensor  # [Bd, P * block_size] key position < seq_len


@dataclass
class PrefillChunk:
    start: int  # first query row in q
    num_queries: int
    seq_len: int
    page_index: torch.Tensor  # [ceil(seq_len / block_size)] pages of the sequence
    mask: torch.Tensor | None  # [Lq, S] bool, None when the chunk is the whole sequence (plain causal)


@dataclass
class PagedAttentionPlan:
    """Index tensors derived from the metadata, built once per step and shared by every layer."""

    decodes: DecodeGroup | None
    prefills: list[PrefillChunk]


def plan_paged_attention(
    query_start_loc: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor, block_size: int
) -> PagedAttentionPlan:
    starts = query_start_loc.tolist()
    lengths = seq_lens.tolist()
    device = block_tables.device
    decode_rows = [b for b in range(len(lengths)) if starts[b + 1] - starts[b] == 1]
    decodes = None
    if decode_rows:
        rows = torch.tensor(decode_rows, device=device)
        lens = seq_lens[rows].long()  # [Bd]
        num_pages = -(-max(lengths[b] for b in decode_rows) // block_size)
        table = block_tables[rows, :num_pages].long()  # [Bd, P]
        page_used = torch.arange(num_pages, device=device)[None, :] * block_size < lens[:, None]
        table = table.where(page_used, table[:, :1])
        valid = torch.arange(num_pages * block_size, device=device)[None, :] < lens[:, None]
        decodes = DecodeGroup(query_start_loc[rows].long(), table.flatten(), valid)
    prefills = []
    for b in range(len(lengths)):
        num_queries = starts[b + 1] - starts[b]
        if num_queries <= 1:
            continue
        seq_len = lengths[b]
        page_index = block_tables[b, : -(-seq_len // block_size)].long()
        mask = None
        if num_queries != seq_len:
            q_pos = torch.arange(seq_len - num_queries, seq_len, device=device)
            mask = torch.arange(seq_len, device=device)[None, :] <= q_pos[:, None]
        prefills.append(PrefillChunk(starts[b], num_queries, seq_len, page_index, mask))
    return PagedAttentionPlan(decodes, prefills)


def _gather_pages(cache: torch.Tensor, page_index: torch.Tensor) -> torch.Tensor:
    """[num_pages, bs, Hkv, D] cache, [N] pages -> [N * bs, Hkv, D] (whole pages: one copy per page)."""
    pages = cache.reshape(cache.shape[0], -1).index_select(0, page_index)
    return pages.view(-1, *cache.shape[2:])


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
    plan: PagedAttentionPlan | None = None,
) -> torch.Tensor:
    """Reference and CPU path (syncs with the host to build its plan; pass `plan` to reuse one)."""
    del max_query_len, max_seq_len  # the plan knows the exact lengths
    if plan is None:
        plan = plan_paged_attention(query_start_loc, seq_lens, block_tables, k_cache.shape[1])
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = k_cache.shape[2]
    group = num_q_heads // num_kv_heads
    if out is None:
        out = torch.empty_like(q)

    if plan.decodes is not None:
        d = plan.decodes
        num, num_keys = d.valid.shape
        q_d = q[d.token_index].view(num, num_kv_heads, group, head_dim).float()  # [Bd, Hkv, g, D]
        k_d = _gather_pages(k_cache, d.page_index).view(num, num_keys, num_kv_heads, head_dim).float()
        v_d = _gather_pages(v_cache, d.page_index).view(num, num_keys, num_kv_heads, head_dim).float()
        v_d = v_d.where(d.valid[:, :, None, None], 0.0)  # stale slots may hold anything, even NaN
        scores = torch.matmul(q_d, k_d.permute(0, 2, 3, 1)) * scale  # [Bd, Hkv, g, S]
        scores = scores.masked_fill(~d.valid[:, None, None, :], float("-inf"))
        o_d = torch.matmul(torch.softmax(scores, dim=-1), v_d.transpose(1, 2))  # [Bd, Hkv, g, D]
        out[d.token_index] = o_d.reshape(num, num_q_heads, head_dim).to(out.dtype)

    for p in plan.prefills:
        q_p = q[p.start : p.start + p.num_queries].transpose(0, 1)[None]  # [1, Hq, Lq, D]
        k_p = _gather_pages(k_cache, p.page_index)[: p.seq_len].transpose(0, 1)[None]  # [1, Hkv, S, D]
        v_p = _gather_pages(v_cache, p.page_index)[: p.seq_len].transpose(0, 1)[None]
        o_p = F.scaled_dot_product_attention(
            q_p, k_p, v_p, attn_mask=p.mask, is_causal=p.mask is None, scale=scale, enable_gqa=group > 1
        )  # [1, Hq, Lq, D]
        out[p.start : p.start + p.num_queries] = o_p[0].transpose(0, 1).to(out.dtype)
    return out
