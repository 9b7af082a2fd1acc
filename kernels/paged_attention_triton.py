"""Triton paged attention: prefill chunks and decodes of many sequences in one launch.

Same contract as `paged_attention_torch` (kernels/paged_attention.py): q [T, Hq, D], k/v caches
[num_pages, block_size, Hkv, D] (any strides, e.g. `pool[:, layer, 0]`), query_start_loc [B + 1],
seq_lens [B], block_tables [B, max_blocks]; writes out [T, Hq, D] rows of scheduled tokens only.

Tiling. One program owns one query tile of one sequence and one KV head. The tile packs BLOCK_Q query
tokens times the QUERIES_PER_KV query heads that share the KV head into the M rows of `tl.dot`:

    row m  ->  token  local_tile * BLOCK_Q + m // QUERIES_PER_KV   (within the sequence's chunk)
               head   kv_head * QUERIES_PER_KV + m % QUERIES_PER_KV
    rows m >= BLOCK_Q * QUERIES_PER_KV are padding (decode: 7 heads padded to 16 rows)

so each K/V tile is loaded once for all heads of its group. The program walks KV tiles of BLOCK_N keys;
each key's page is read from the block table inside the loop (page = block_table[n // block_size]), so
any block size works and pages need not be contiguous. Programs that stream many tiles (prefill tiles, split-K
decodes) read the page ids one tile ahead (`AttentionConfig.pages_ahead`), which lets Triton keep several
K/V tiles in flight. Tiles wholly at or below the tile's first query position run without masks; the rest
apply the causal mask `key <= query position`: prefill tiles in a second loop, decodes (`one_loop`) in the
same loop from the first masked tile on, which saves them a second pipeline start.

Grid (computed from host-known sizes only, nothing read back from the device):
    axis 0: query tiles x Hkv, heaviest (last) tiles first; tiles past a sequence's q_len exit at once.
        "direct" mapping: B * cdiv(max_query_len, BLOCK_Q) tiles, tile -> (seq, local tile) by divmod;
        "search" mapping: T // BLOCK_Q + B tiles; sequence b owns tiles from query_start_loc[b] // BLOCK_Q + b
            on (a monotone map: each sequence gets at least its cdiv(q_len, BLOCK_Q) tiles); a program finds
            its sequence by counting sequences that start at or before it. The smaller grid is used.
    axis 1: KV splits. With split-K, split s of a query tile takes its KV tiles s, s + num_splits, ...
        (counted on the device from that sequence's own length, so a graph captured for the model's
        context spreads a 600-token context over the splits too; and a program's first tile, hence its
        first page ids, is known before the lengths are read). Each program writes its normalised partial
        output and log2-sum-exp into fp32 scratch, a program with no tile only marks its rows -inf, and
        `merge_splits_kernel` combines them (paged_attention_split_triton.py).

For callers:
- `max_query_len` / `max_seq_len` need only be upper bounds (a CUDA graph captured with the model's
  context length replays for any shorter one); they fix the grid, the tile config and the split count.
- Split-K is chosen on the host when the grid has fewer programs than SMs: splits = enough for two
  programs per SM, at most 64, at least 4 KV tiles each of the longest context (`max_seq_len`). Its
  scratch is a per-device fp32 buffer that grows and is never freed (run each captured shape once before
  capture, as for Triton compilation).
- Constraints: Hq a multiple of Hkv; q, k and v of one dtype (fp16, bf16; fp32 for tests); any head_dim
  (padded to a power of two >= 16 with masks); any block_size (a compile-time constant: one compilation
  per block size).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from .paged_attention_config import (  # noqa: F401 - the overlap orders are re-exported for callers
    FOLD_FIRST,
    NO_OVERLAP,
    SCORES_FIRST,
    V_BEHIND,
    AttentionConfig,
    merge_num_warps,
    num_sms,
    pick_config,
    pick_num_splits,
)
from .paged_attention_loop_triton import (
    _attend_tiles,
    _attend_tiles_overlapped,
    _attend_tiles_v_behind,
    _tile_pages,
)
from .paged_attention_split_triton import merge_splits_kernel, split_k_views
from .pdl import pdl_enabled

_LOG2E = 1.4426950408889634
_SEARCH_BLOCK = tl.constexpr(128)  # sequences counted per step of the tile -> sequence search
ALL_QUERIES, DECODES_ONLY, PREFILLS_ONLY = 0, 1, 2  # `query_filter` of a launch
_SCORES_FIRST, _V_BEHIND = tl.constexpr(SCORES_FIRST), tl.constexpr(V_BEHIND)  # `OVERLAP` in the kernel


@triton.jit
def _paged_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, partial_out_ptr, partial_lse_ptr,
    query_start_loc_ptr, seq_lens_ptr, block_tables_ptr,
    scale_log2, num_seqs, num_tiles, tiles_per_seq, num_splits, max_blocks,
    stride_q_token, stride_q_head, stride_q_dim,
    stride_k_page, stride_k_slot, stride_k_head, stride_k_dim,
    stride_v_page, stride_v_slot, stride_v_head, stride_v_dim,
    stride_o_token, stride_o_head, stride_o_dim,
    stride_bt_seq, stride_bt_block,
    stride_po_split, stride_po_token, stride_po_head,
    stride_pl_split, stride_pl_token,
    NUM_KV_HEADS: tl.constexpr, QUERIES_PER_KV: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, DIRECT_GRID: tl.constexpr, SPLIT_K: tl.constexpr,
    QUERY_FILTER: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_PDL: tl.constexpr, PAGES_AHEAD: tl.constexpr,
    ONE_LOOP: tl.constexpr, OVERLAP: tl.constexpr,
):
    if USE_PDL:  # kernels/pdl.py: q, the caches, out and the scratch are free past this line
        gdc_wait()
    pid = tl.program_id(0)
    kv_head = pid % NUM_KV_HEADS
    tile_id = num_tiles - 1 - pid // NUM_KV_HEADS  # last (longest-context) tiles start first
    split = tl.program_id(1)

    if DIRECT_GRID:
        seq = tile_id // tiles_per_seq
        local_tile = tile_id % tiles_per_seq
        q_start = tl.load(query_start_loc_ptr + seq)
    else:
        count = tl.zeros([], dtype=tl.int32)
        for first in range(0, num_seqs, _SEARCH_BLOCK):
            idx = first + tl.arange(0, _SEARCH_BLOCK)
            starts = tl.load(query_start_loc_ptr + idx, mask=idx < num_seqs, other=0)
            if BLOCK_Q == 1:
                first_tiles = starts
            else:
                first_tiles = starts // BLOCK_Q + idx
            count += tl.sum(((first_tiles <= tile_id) & (idx < num_seqs)).to(tl.int32), 0)
        seq = count - 1
        q_start = tl.load(query_start_loc_ptr + seq)
        if BLOCK_Q == 1:
            local_tile = tile_id - q_start
        else:
            local_tile = tile_id - (q_start // BLOCK_Q + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    # issued before any branch on q_len, so that these loads overlap it
    seq_len = tl.load(seq_lens_ptr + seq)
    block_table_row = block_tables_ptr + seq.to(tl.int64) * stride_bt_seq
    # the first KV tile of a program does not depend on the lengths (split s starts at tile s), so its page
    # ids load alongside them: one memory round trip less before the first K/V load. Keys past the
    # sequence's end get whatever page id their table column holds; their K/V loads are masked.
    first_tile = 0
    if SPLIT_K:
        first_tile = split
    pages = tl.zeros([BLOCK_N], dtype=tl.int32)  # page ids of the first tile (PAGES_AHEAD)
    if PAGES_AHEAD:
        pages = _tile_pages(block_table_row, first_tile, max_blocks * BLOCK_SIZE, stride_bt_block, BLOCK_N,
                            BLOCK_SIZE, True)
    if local_tile * BLOCK_Q >= q_len:
        return
    if QUERY_FILTER == 1:  # decodes only
        if q_len != 1:
            return
    if QUERY_FILTER == 2:  # prefill chunks only
        if q_len == 1:
            return
    context_len = seq_len - q_len  # keys computed before this chunk

    # keys [0, kv_end) are visible to some row; keys < unmasked_end to every row
    kv_end = context_len + tl.minimum((local_tile + 1) * BLOCK_Q, q_len)
    unmasked_tiles = (context_len + local_tile * BLOCK_Q + 1) // BLOCK_N
    tile_lo = 0
    tile_hi = tl.cdiv(kv_end, BLOCK_N)
    tile_step = 1
    if SPLIT_K:
        # split s takes tiles s, s + num_splits, ... of this tile's own keys (counted on the device from
        # this sequence's length: a graph captured for the longest context still spreads a short one over
        # all splits)
        tile_lo = split
        tile_step = num_splits
    tile_mid = tl.maximum(tl.minimum(unmasked_tiles, tile_hi), tile_lo)

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    dim_valid = offs_d < HEAD_DIM
    q_offset = local_tile * BLOCK_Q + offs_m // QUERIES_PER_KV  # [M] query index within the chunk
    row_valid = (offs_m < BLOCK_Q * QUERIES_PER_KV) & (q_offset < q_len)
    q_head = kv_head * QUERIES_PER_KV + offs_m % QUERIES_PER_KV  # [M]
    q_pos = context_len + q_offset  # [M] absolute positions
    token = (q_start + q_offset).to(tl.int64)  # [M]
    row_mask = row_valid[:, None] & dim_valid[None, :]
    q = tl.load(q_ptr + token[:, None] * stride_q_token + q_head[:, None] * stride_q_head
                + offs_d[None, :] * stride_q_dim, mask=row_mask, other=0.0)

    if SPLIT_K:
        if tile_lo >= tile_hi:  # no key for this split: weight 0 in the merge (partial left unwritten)
            lse_offset = split.to(tl.int64) * stride_pl_split
            tl.store(partial_lse_ptr + lse_offset + token * stride_pl_token + q_head,
                     tl.full([BLOCK_M], float("-inf"), dtype=tl.float32), mask=row_valid)
            return

    k_base = k_cache_ptr + kv_head * stride_k_head
    v_base = v_cache_ptr + kv_head * stride_v_head
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    masked_lo = tile_lo  # ONE_LOOP: a single loop, masked from tile_mid on
    if not ONE_LOOP:  # tiles before tile_mid need no mask: their own loop
        acc, l_i, m_i = _attend_tiles(
            acc, l_i, m_i, q, q_pos, k_base, v_base, block_table_row, pages, tile_lo, tile_mid, tile_step,
            tile_mid, kv_end, stride_k_page, stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot,
            stride_v_dim, stride_bt_block, scale_log2, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, BLOCK_SIZE,
            False, False, DOT_PRECISION, PAGES_AHEAD,
        )
        masked_lo = tile_lo + tl.cdiv(tile_mid - tile_lo, tile_step) * tile_step  # first run tile >= tile_mid
        if PAGES_AHEAD:  # the masked loop's first ids (carrying the first loop's: prefill 3-12% slower)
            pages = _tile_pages(block_table_row, masked_lo, kv_end, stride_bt_block, BLOCK_N, BLOCK_SIZE,
                                True)
    if OVERLAP == _V_BEHIND:  # (the overlapped loops: ONE_LOOP only, whose loop always has a tile)
        acc, l_i, m_i = _attend_tiles_v_behind(
            acc, l_i, m_i, q, q_pos, k_base, v_base, block_table_row, pages, masked_lo, tile_hi, tile_step,
            tile_mid, kv_end, stride_k_page, stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot,
            stride_v_dim, stride_bt_block, scale_log2, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, BLOCK_SIZE,
            DOT_PRECISION, PAGES_AHEAD,
        )
    elif OVERLAP:  # SCORES_FIRST or FOLD_FIRST
        acc, l_i, m_i = _attend_tiles_overlapped(
            acc, l_i, m_i, q, q_pos, k_base, v_base, block_table_row, pages, masked_lo, tile_hi, tile_step,
            tile_mid, kv_end, stride_k_page, stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot,
            stride_v_dim, stride_bt_block, scale_log2, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, BLOCK_SIZE,
            DOT_PRECISION, PAGES_AHEAD, OVERLAP == _SCORES_FIRST,
        )
    else:
        acc, l_i, m_i = _attend_tiles(
            acc, l_i, m_i, q, q_pos, k_base, v_base, block_table_row, pages, masked_lo, tile_hi, tile_step,
            tile_mid, kv_end, stride_k_page, stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot,
            stride_v_dim, stride_bt_block, scale_log2, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, BLOCK_SIZE,
            True, ONE_LOOP, DOT_PRECISION, PAGES_AHEAD,
        )
    if USE_PDL:  # the main work is done: let the next kernel's programs be scheduled now
        gdc_launch_dependents()

    if SPLIT_K:
        # a split with no visible key for a row leaves l = 0: lse -inf and a zero partial (weight 0)
        has_keys = l_i > 0.0
        lse = tl.where(has_keys, m_i + tl.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
        partial = acc / tl.where(has_keys, l_i, 1.0)[:, None]
        split_offset = split.to(tl.int64) * stride_po_split
        tl.store(partial_out_ptr + split_offset + token[:, None] * stride_po_token
                 + q_head[:, None] * stride_po_head + offs_d[None, :], partial, mask=row_mask)
        lse_offset = split.to(tl.int64) * stride_pl_split
        tl.store(partial_lse_ptr + lse_offset + token * stride_pl_token + q_head, lse, mask=row_valid)
    else:
        result = acc / l_i[:, None]
        tl.store(out_ptr + token[:, None] * stride_o_token + q_head[:, None] * stride_o_head
                 + offs_d[None, :] * stride_o_dim, result.to(out_ptr.dtype.element_ty), mask=row_mask)


def paged_attention_triton(
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
    split_decodes: bool = False,
) -> torch.Tensor:
    """Triton version of `paged_attention_torch`: same arguments, same result. `max_query_len` and
    `max_seq_len` must be upper bounds of this batch's q_len and seq_len (they size the grid and the
    split-K decision; nothing is read back from the device). `split_decodes` (a step of decodes and
    prefill chunks): two launches, each with its own tile shape (decodes: one token x the head group per
    tile; chunks: up to 256 rows), so decodes do not run in prefill-sized tiles."""
    args = (q, k_cache, v_cache, query_start_loc, seq_lens, block_tables, scale)
    if not split_decodes or max_query_len == 1:
        return paged_attention_launch(*args, max_query_len, max_seq_len, out)
    out = paged_attention_launch(*args, 1, max_seq_len, out, query_filter=DECODES_ONLY)
    return paged_attention_launch(*args, max_query_len, max_seq_len, out, query_filter=PREFILLS_ONLY)


def paged_attention_launch(
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
    num_splits: int | None = None,
    config: AttentionConfig | None = None,
    query_filter: int = ALL_QUERIES,
) -> torch.Tensor:
    """`paged_attention_triton` with the split count and tile config overridable (tests, benchmarks).
    `query_filter`: ALL_QUERIES, DECODES_ONLY (sequences with q_len == 1; give max_query_len=1) or
    PREFILLS_ONLY (q_len > 1); the other sequences' rows are left untouched."""
    num_tokens, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    num_seqs = seq_lens.shape[0]
    queries_per_kv = num_q_heads // num_kv_heads
    if out is None:
        out = torch.empty_like(q)
    if num_tokens == 0 or num_seqs == 0 or max_query_len == 0:
        return out
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    on_gpu = q.device.type == "cuda"
    sm_count = num_sms(q.device)
    if config is None:
        num_rows = num_seqs if query_filter == DECODES_ONLY else num_tokens
        decode_programs_per_sm = num_rows * num_kv_heads / sm_count
        config = pick_config(max_query_len, queries_per_kv, head_dim_pad, q.element_size(),
                              decode_programs_per_sm, on_gpu)
    block_q = config.block_q

    tiles_per_seq = triton.cdiv(max_query_len, block_q)
    search_tiles = num_tokens if block_q == 1 else num_tokens // block_q + num_seqs
    direct_grid = num_seqs * tiles_per_seq <= search_tiles
    num_tiles = num_seqs * tiles_per_seq if direct_grid else search_tiles
    num_programs = num_tiles * num_kv_heads

    kv_tiles = triton.cdiv(max_seq_len, config.block_n)
    if num_splits is None:
        num_splits = pick_num_splits(num_programs, max_seq_len, config.block_n, sm_count)
    num_splits = max(1, min(num_splits, kv_tiles))  # no more splits than KV tiles of the longest context
    split_k = num_splits > 1

    if split_k:
        partial_out, partial_lse = split_k_views(q.device, num_splits, num_tokens, num_q_heads, head_dim)
    else:
        partial_out = partial_lse = out  # unused

    use_pdl = pdl_enabled(q.device, num_tokens)
    _paged_attention_kernel[(num_programs, num_splits)](
        q, k_cache, v_cache, out, partial_out, partial_lse,
        query_start_loc, seq_lens, block_tables,
        scale * _LOG2E, num_seqs, num_tiles, tiles_per_seq, num_splits, block_tables.shape[1],
        *q.stride(), *k_cache.stride(), *v_cache.stride(), *out.stride(), *block_tables.stride(),
        *(partial_out.stride()[:3] if split_k else (0, 0, 0)),
        *(partial_lse.stride()[:2] if split_k else (0, 0)),
        NUM_KV_HEADS=num_kv_heads, QUERIES_PER_KV=queries_per_kv, HEAD_DIM=head_dim,
        HEAD_DIM_PAD=head_dim_pad, BLOCK_Q=block_q, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        BLOCK_SIZE=block_size, DIRECT_GRID=direct_grid, SPLIT_K=split_k, QUERY_FILTER=query_filter,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32", USE_PDL=use_pdl,
        PAGES_AHEAD=config.pages_ahead, ONE_LOOP=config.one_loop, OVERLAP=config.overlap,
        num_warps=config.num_warps, num_stages=config.num_stages, launch_pdl=use_pdl,
    )
    if split_k:
        merge_splits_kernel[(num_tokens, num_q_heads)](
            out, partial_out, partial_lse, query_start_loc, num_seqs, num_splits,
            *out.stride(), *partial_out.stride()[:3], *partial_lse.stride()[:2],
            HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, SPLITS_PAD=triton.next_power_of_2(num_splits),
            QUERY_FILTER=query_filter, USE_PDL=use_pdl, num_warps=merge_num_warps(num_splits, head_dim_pad),
            launch_pdl=use_pdl,
        )
    return out
