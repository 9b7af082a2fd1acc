"""The KV loop of the Triton paged attention kernel (kernels/paged_attention_triton.py): one program's
online softmax over its KV tiles, read page by page through the block table.

- `_attend_tiles`: tile after tile, each tile's chain (page ids, K/V loads, Q K^T, softmax, P V) in turn.
- `_attend_tiles_overlapped`: the same loop pipelined by hand (`AttentionConfig.overlap`), a tile's scores
  and the previous tile's softmax and P V in one iteration.
- `_attend_tiles_v_behind`: the same, with V loaded one tile behind K, so that only the scores carry over.
- Their parts: `_tile_pages` (page ids of a tile), `_kv_tile` (its K/V), `_fold_tile` (one softmax step).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tile_pages(
    block_table_row, tile, kv_end, stride_bt_block,
    BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, MASKED: tl.constexpr,
):
    """Page of each key of KV tile `tile` ([BLOCK_N] int32). MASKED: 0 for keys at or past kv_end (else
    the tile must lie wholly before kv_end)."""
    keys = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    if MASKED:
        return tl.load(block_table_row + (keys // BLOCK_SIZE) * stride_bt_block, mask=keys < kv_end, other=0)
    return tl.load(block_table_row + (keys // BLOCK_SIZE) * stride_bt_block)


@triton.jit
def _kv_tile(
    k_base, v_base, block_table_row, pages, offs_n, tile, tile_step, kv_end, stride_k_page, stride_k_slot,
    stride_k_dim, stride_v_page, stride_v_slot, stride_v_dim, stride_bt_block,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    CAUSAL: tl.constexpr, PAGES_AHEAD: tl.constexpr,
):
    """K and V of KV tile `tile` ([N, Dp] each), its key positions ([N]) and (PAGES_AHEAD) the page ids of
    tile + tile_step, read after this tile's addresses and before its loads. `pages`: this tile's page ids
    (PAGES_AHEAD; else read here). `offs_n`: tl.arange(0, BLOCK_N), made once by the caller (made here,
    inside the loop, it changes the compiled two-loop kernels). CAUSAL: keys at or past kv_end load as 0."""
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    dim_valid = offs_d < HEAD_DIM
    keys = tile * BLOCK_N + offs_n  # [N] absolute key positions
    key_valid = keys < kv_end
    if PAGES_AHEAD:
        tile_pages = pages
    else:
        tile_pages = _tile_pages(block_table_row, tile, kv_end, stride_bt_block, BLOCK_N, BLOCK_SIZE, CAUSAL)
    slots = keys % BLOCK_SIZE
    k_ptrs = (k_base + tile_pages.to(tl.int64)[:, None] * stride_k_page + slots[:, None] * stride_k_slot
              + offs_d[None, :] * stride_k_dim)  # [N, Dp]
    v_ptrs = (v_base + tile_pages.to(tl.int64)[:, None] * stride_v_page + slots[:, None] * stride_v_slot
              + offs_d[None, :] * stride_v_dim)
    if PAGES_AHEAD:
        pages = _tile_pages(block_table_row, tile + tile_step, kv_end, stride_bt_block, BLOCK_N, BLOCK_SIZE,
                            True)
    if CAUSAL:
        kv_mask = key_valid[:, None] & dim_valid[None, :]
        k = tl.load(k_ptrs, mask=kv_mask, other=0.0)
        v = tl.load(v_ptrs, mask=kv_mask, other=0.0)
    elif HEAD_DIM == HEAD_DIM_PAD:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    else:
        k = tl.load(k_ptrs, mask=dim_valid[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=dim_valid[None, :], other=0.0)
    return k, v, keys, pages


@triton.jit
def _fold_tile(
    acc, l_i, m_i, scores, v, keys, q_pos, tile, mask_from, scale_log2,
    CAUSAL: tl.constexpr, MASK_FROM: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One online-softmax step: fold KV tile `tile` (its unscaled scores [M, N], V [N, Dp], key positions
    [N]) into the running (acc, l_i, m_i). CAUSAL masks keys past each row's position (MASK_FROM: from
    `mask_from` on)."""
    if CAUSAL:
        if MASK_FROM:
            if tile >= mask_from:
                scores = tl.where(keys[None, :] <= q_pos[:, None], scores, float("-inf"))
        else:
            scores = tl.where(keys[None, :] <= q_pos[:, None], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1) * scale_log2)  # running max, log2 units
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet: avoid inf - inf
    else:
        m_new = tl.maximum(m_i, tl.max(scores, 1) * scale_log2)
        m_ref = m_new
    p = tl.exp2(scores * scale_log2 - m_ref[:, None])
    alpha = tl.exp2(m_i - m_ref)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)  # in-place MMA
    return acc, l_i, m_new


@triton.jit
def _attend_tiles(
    acc, l_i, m_i, q, q_pos, k_base, v_base, block_table_row, pages, tile_lo, tile_hi, tile_step, mask_from,
    kv_end, stride_k_page, stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot, stride_v_dim,
    stride_bt_block, scale_log2,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_FROM: tl.constexpr, DOT_PRECISION: tl.constexpr, PAGES_AHEAD: tl.constexpr,
):
    """Online softmax over KV tiles tile_lo, tile_lo + tile_step, ... < tile_hi (tile_step > 1: a split
    of split-K). `pages`: the page ids of tile_lo (PAGES_AHEAD; unused otherwise). CAUSAL=False only for
    tiles whose keys all lie at or before every row's query position (no key or causal mask needed);
    CAUSAL=True masks keys past kv_end in the loads and applies the causal mask, to every tile or
    (MASK_FROM) to tiles from `mask_from` on.

    PAGES_AHEAD: each tile's page ids are read one iteration ahead and carried into the next. K/V
    addresses then depend on no load of their own iteration, and Triton's pipeliner keeps
    `num_stages - 1` tiles in flight. Read in the same iteration (PAGES_AHEAD=False), the indirect load
    limits it to one tile whatever num_stages says: the next tile is fetched only after this one was
    consumed (seen in the TTGIR compiled for sm_90). Deep pipelining pays for programs that stream many
    tiles (prefill tiles, split-K decodes); big decode grids hide latency across programs and run
    faster without the carried ids (benchmarks/results/kernels_sweep.md)."""
    offs_n = tl.arange(0, BLOCK_N)
    for tile in range(tile_lo, tile_hi, tile_step):
        k, v, keys, next_pages = _kv_tile(
            k_base, v_base, block_table_row, pages, offs_n, tile, tile_step, kv_end, stride_k_page,
            stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot, stride_v_dim, stride_bt_block,
            HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, BLOCK_SIZE, CAUSAL, PAGES_AHEAD,
        )
        if PAGES_AHEAD:  # (assigned only then: a loop-carried copy of unused ids changes the compiled loop)
            pages = next_pages
        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # [M, N], unscaled
        acc, l_i, m_i = _fold_tile(acc, l_i, m_i, scores, v, keys, q_pos, tile, mask_from, scale_log2, CAUSAL,
                                   MASK_FROM, DOT_PRECISION)
    return acc, l_i, m_i


@triton.jit
def _attend_tiles_overlapped(
    acc, l_i, m_i, q, q_pos, k_base, v_base, block_table_row, pages, tile_lo, tile_hi, tile_step, mask_from,
    kv_end, stride_k_page, stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot, stride_v_dim,
    stride_bt_block, scale_log2,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    DOT_PRECISION: tl.constexpr, PAGES_AHEAD: tl.constexpr, QK_FIRST: tl.constexpr,
):
    """`_attend_tiles` (CAUSAL, MASK_FROM) software-pipelined by hand: iteration i loads tile i and computes
    its scores (Q K_i^T), and folds tile i - 1 (softmax, P V_{i-1}), whose scores and V it carries over
    from the iteration before. The two chains have no dependence on each other, so their instructions can
    interleave instead of each tile's chain (load, QK, max, exp, sum, PV) running end to end.
    QK_FIRST (SCORES_FIRST): tile i's scores before tile i - 1's fold (FlashAttention-3's consumer
    order); else (FOLD_FIRST) the fold first, with tile i's K/V loads in flight across it. The loads go
    to registers either way: Triton builds no shared-memory ring for this loop. Needs tile_lo < tile_hi
    (every caller's one loop has a tile)."""
    offs_n = tl.arange(0, BLOCK_N)
    k, v_prev, keys_prev, next_pages = _kv_tile(
        k_base, v_base, block_table_row, pages, offs_n, tile_lo, tile_step, kv_end, stride_k_page,
        stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot, stride_v_dim, stride_bt_block, HEAD_DIM,
        HEAD_DIM_PAD, BLOCK_N, BLOCK_SIZE, True, PAGES_AHEAD,
    )
    if PAGES_AHEAD:
        pages = next_pages
    scores_prev = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # [M, N] of tile_prev
    tile_prev = tile_lo
    for tile in range(tile_lo + tile_step, tile_hi, tile_step):
        k, v, keys, next_pages = _kv_tile(
            k_base, v_base, block_table_row, pages, offs_n, tile, tile_step, kv_end, stride_k_page,
            stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot, stride_v_dim, stride_bt_block,
            HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, BLOCK_SIZE, True, PAGES_AHEAD,
        )
        if PAGES_AHEAD:
            pages = next_pages
        if QK_FIRST:
            scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
            acc, l_i, m_i = _fold_tile(acc, l_i, m_i, scores_prev, v_prev, keys_prev, q_pos, tile_prev,
                                       mask_from, scale_log2, True, True, DOT_PRECISION)
        else:
            acc, l_i, m_i = _fold_tile(acc, l_i, m_i, scores_prev, v_prev, keys_prev, q_pos, tile_prev,
                                       mask_from, scale_log2, True, True, DOT_PRECISION)
            scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        scores_prev, v_prev, keys_prev, tile_prev = scores, v, keys, tile
    return _fold_tile(acc, l_i, m_i, scores_prev, v_prev, keys_prev, q_pos, tile_prev, mask_from, scale_log2,
                      True, True, DOT_PRECISION)


@triton.jit
def _tile_rows(
    base, tile_pages, keys, kv_end, stride_page, stride_slot, stride_dim,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):
    """K or V rows of the keys `keys` ([N]) on pages `tile_pages` ([N]): [N, Dp], 0 at or past kv_end."""
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    ptrs = (base + tile_pages.to(tl.int64)[:, None] * stride_page + (keys % BLOCK_SIZE)[:, None] * stride_slot
            + offs_d[None, :] * stride_dim)
    return tl.load(ptrs, mask=(keys < kv_end)[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)


@triton.jit
def _attend_tiles_v_behind(
    acc, l_i, m_i, q, q_pos, k_base, v_base, block_table_row, pages, tile_lo, tile_hi, tile_step, mask_from,
    kv_end, stride_k_page, stride_k_slot, stride_k_dim, stride_v_page, stride_v_slot, stride_v_dim,
    stride_bt_block, scale_log2,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    DOT_PRECISION: tl.constexpr, PAGES_AHEAD: tl.constexpr,
):
    """`_attend_tiles_overlapped` with V one tile behind K: iteration i loads K of tile i and V of tile
    i - 1, computes tile i's scores and folds tile i - 1. Only tile i - 1's scores, keys and page ids carry
    over (not its V), and V's addresses come from ids read an iteration earlier, so Triton can still
    pipeline the loads through shared memory. Needs tile_lo < tile_hi."""
    offs_n = tl.arange(0, BLOCK_N)
    if PAGES_AHEAD:
        pages_prev = pages
        pages = _tile_pages(block_table_row, tile_lo + tile_step, kv_end, stride_bt_block, BLOCK_N,
                            BLOCK_SIZE, True)
    else:
        pages_prev = _tile_pages(block_table_row, tile_lo, kv_end, stride_bt_block, BLOCK_N, BLOCK_SIZE,
                                 True)
    keys_prev = tile_lo * BLOCK_N + offs_n
    k = _tile_rows(k_base, pages_prev, keys_prev, kv_end, stride_k_page, stride_k_slot, stride_k_dim,
                   HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE)
    scores_prev = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # [M, N] of tile_prev
    tile_prev = tile_lo
    for tile in range(tile_lo + tile_step, tile_hi, tile_step):
        keys = tile * BLOCK_N + offs_n
        if PAGES_AHEAD:
            tile_pages = pages
            pages = _tile_pages(block_table_row, tile + tile_step, kv_end, stride_bt_block, BLOCK_N,
                                BLOCK_SIZE, True)
        else:
            tile_pages = _tile_pages(block_table_row, tile, kv_end, stride_bt_block, BLOCK_N, BLOCK_SIZE,
                                     True)
        k = _tile_rows(k_base, tile_pages, keys, kv_end, stride_k_page, stride_k_slot, stride_k_dim,
                       HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE)
        v = _tile_rows(v_base, pages_prev, keys_prev, kv_end, stride_v_page, stride_v_slot, stride_v_dim,
                       HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE)  # V of tile_prev
        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        acc, l_i, m_i = _fold_tile(acc, l_i, m_i, scores_prev, v, keys_prev, q_pos, tile_prev, mask_from,
                                   scale_log2, True, True, DOT_PRECISION)
        scores_prev, keys_prev, pages_prev, tile_prev = scores, keys, tile_pages, tile
    v = _tile_rows(v_base, pages_prev, keys_prev, kv_end, stride_v_page, stride_v_slot, stride_v_dim,
                   HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE)
    return _fold_tile(acc, l_i, m_i, scores_prev, v, keys_prev, q_pos, tile_prev, mask_from, scale_log2,
                      True, True, DOT_PRECISION)
