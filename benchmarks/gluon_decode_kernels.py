"""Gluon decode attention kernels with TMA page copies into a shared-memory ring (sm_90): the kernels of
`probe_gluon_decode.py`, which times them against SDPA and our Triton kernel (H200).

All three: one program per (sequence, KV head), no split-K; the pool [num_pages, 2, BS, Hkv, D] seen by one
TMA descriptor as rows [num_pages * 2 * BS, Hkv * D] with [BS, 64] boxes.
- A ring of NUM_BUF tiles of PAGES pages. A tile's K and V pages arrive as TMA copies of [16, 64] boxes
  (the two 64-column halves of each 16-row page: 128-byte swizzle allows 128-byte rows) onto one mbarrier
  with one expected byte count, so each tile costs one barrier wait, not one per page.
- The page ids of the tile to copy next are read one iteration earlier: no copy waits on the block table.
- The math: mma_v2 on the 7 query heads padded to 16 rows, the head dim in two halves (two accumulators).
Kernels:
- `gluon_decode_kernel`: 4 warps; a slot is refilled after the math, or (EARLY_RELEASE) as soon as its
  tile is in registers. STREAM_ONLY: the same copies and waits with no math (the ceiling of this loading).
- `gluon_decode_warp_pages_kernel`: warp w owns page w of every tile with its own softmax state (a
  batched MMA, warps on the batch axis); the warps' partials merge once at the end.
- `gluon_decode_ws_kernel`: warp-specialised; one producer warp issues the copies, the kernel's warps do
  the math and release each slot through an `empty` mbarrier.
Keys past the sequence's end are masked in the scores, and their V rows zeroed in the last tile (a pool's
unwritten slots may hold NaN).
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

HALF_COLS = 64  # columns per TMA box: 128-byte swizzle rows of bf16
HALF = gl.constexpr(HALF_COLS)


@gluon.jit
def _load_ids(block_table_row, tile, num_pages, PAGES: gl.constexpr, ID_LAYOUT: gl.constexpr):
    """Page ids of KV tile `tile` ([PAGES], every thread holds all of them; 0 past the table's end)."""
    cols = tile * PAGES + gl.arange(0, PAGES, layout=ID_LAYOUT)
    return gl.load(block_table_row + cols, mask=cols < num_pages, other=0)


@gluon.jit
def _issue_tile(kv_desc, k_smem, v_smem, bars, ids, buf, kv_head,
                PAGES: gl.constexpr, BLOCK_SIZE: gl.constexpr, ID_LAYOUT: gl.constexpr):
    """TMA copies of one tile's K and V pages (both halves of each) into ring slot `buf`, all onto its
    barrier. The pool descriptor's rows: page p's K at rows 2p * BLOCK_SIZE.., its V the next BLOCK_SIZE."""
    bar = bars.index(buf)
    mbarrier.expect(bar, 4 * PAGES * kv_desc.block_type.nbytes)
    offs = gl.arange(0, PAGES, layout=ID_LAYOUT)
    col = kv_head * (2 * HALF)
    for j in gl.static_range(PAGES):
        row = gl.sum(gl.where(offs == j, ids, 0), axis=0) * (2 * BLOCK_SIZE)
        for h in gl.static_range(2):
            tma.async_copy_global_to_shared(kv_desc, [row, col + h * HALF], bar,
                                            k_smem.index(buf * 2 + h).slice(j * BLOCK_SIZE, BLOCK_SIZE))
            tma.async_copy_global_to_shared(kv_desc, [row + BLOCK_SIZE, col + h * HALF], bar,
                                            v_smem.index(buf * 2 + h).slice(j * BLOCK_SIZE, BLOCK_SIZE))


@gluon.jit
def _refill(kv_desc, k_smem, v_smem, bars, ids, buf, tile, num_tiles, kv_head, block_table_row, num_pages,
            PAGES: gl.constexpr, BLOCK_SIZE: gl.constexpr, NUM_BUF: gl.constexpr, ID_LAYOUT: gl.constexpr):
    """Every warp is done reading slot `buf` (tile `tile`): copy the tile NUM_BUF ahead into it (ids: its
    page ids), and return the page ids of the tile after that."""
    gl.thread_barrier()
    fence_async_shared()
    if tile + NUM_BUF < num_tiles:
        _issue_tile(kv_desc, k_smem, v_smem, bars, ids, buf, kv_head, PAGES, BLOCK_SIZE, ID_LAYOUT)
    return _load_ids(block_table_row, tile + NUM_BUF + 1, num_pages, PAGES, ID_LAYOUT)


@gluon.jit
def _program(seq_lens_ptr, block_tables_ptr, stride_bt_seq, NUM_KV_HEADS: gl.constexpr,
             BLOCK_SIZE: gl.constexpr, BLOCK_N: gl.constexpr):
    """This program's sequence and KV head, its length, block-table row, and page and tile counts."""
    pid = gl.program_id(0)
    kv_head = pid % NUM_KV_HEADS
    seq = pid // NUM_KV_HEADS
    seq_len = gl.load(seq_lens_ptr + seq)
    block_table_row = block_tables_ptr + seq.to(gl.int64) * stride_bt_seq
    num_pages = gl.cdiv(seq_len, BLOCK_SIZE)
    num_tiles = gl.cdiv(seq_len, BLOCK_N)
    return seq, kv_head, seq_len, block_table_row, num_pages, num_tiles


@gluon.jit
def _open_ring(kv_desc, seq_lens_ptr, block_tables_ptr, stride_bt_seq, NUM_KV_HEADS: gl.constexpr,
               BLOCK_SIZE: gl.constexpr, PAGES: gl.constexpr, NUM_BUF: gl.constexpr, ID_LAYOUT: gl.constexpr):
    """This program's (sequence, KV head) and lengths; the K and V rings ([NUM_BUF * 2 halves, tile keys,
    64]) and their barriers, filled with the first NUM_BUF tiles; the page ids of the tile after them."""
    BLOCK_N: gl.constexpr = PAGES * BLOCK_SIZE
    seq, kv_head, seq_len, block_table_row, num_pages, num_tiles = _program(
        seq_lens_ptr, block_tables_ptr, stride_bt_seq, NUM_KV_HEADS, BLOCK_SIZE, BLOCK_N)
    k_smem = gl.allocate_shared_memory(kv_desc.dtype, [NUM_BUF * 2, BLOCK_N, HALF], kv_desc.layout)
    v_smem = gl.allocate_shared_memory(kv_desc.dtype, [NUM_BUF * 2, BLOCK_N, HALF], kv_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    for b in gl.static_range(NUM_BUF):
        mbarrier.init(bars.index(b), count=1)
    for b in gl.static_range(NUM_BUF):
        if b < num_tiles:
            ids = _load_ids(block_table_row, b, num_pages, PAGES, ID_LAYOUT)
            _issue_tile(kv_desc, k_smem, v_smem, bars, ids, b, kv_head, PAGES, BLOCK_SIZE, ID_LAYOUT)
    next_ids = _load_ids(block_table_row, NUM_BUF, num_pages, PAGES, ID_LAYOUT)
    return seq, kv_head, seq_len, block_table_row, num_pages, num_tiles, k_smem, v_smem, bars, next_ids


@gluon.jit
def _start(q_ptr, seq, kv_head, NUM_KV_HEADS: gl.constexpr, QUERIES_PER_KV: gl.constexpr,
           BLOCK_M: gl.constexpr, MMA: gl.constexpr):
    """The head group's queries as two [M, 64] A operands (rows >= QUERIES_PER_KV are padding: zeros), and
    the online softmax's empty state: two [M, 64] accumulators, the running sum and max."""
    io_layout: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [gl.num_warps(), 1], [1, 0])
    dot_a: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    offs_m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, io_layout))
    offs_h = gl.arange(0, HALF, layout=gl.SliceLayout(0, io_layout))
    row_valid = offs_m < QUERIES_PER_KV
    q_rows = q_ptr + (seq * (NUM_KV_HEADS * QUERIES_PER_KV) + kv_head * QUERIES_PER_KV + offs_m) * (2 * HALF)
    q_ptrs = q_rows[:, None] + offs_h[None, :]
    q0 = gl.convert_layout(gl.load(q_ptrs, mask=row_valid[:, None], other=0.0), dot_a)
    q1 = gl.convert_layout(gl.load(q_ptrs + HALF, mask=row_valid[:, None], other=0.0), dot_a)
    acc0 = gl.zeros([BLOCK_M, HALF], gl.float32, layout=MMA)
    acc1 = gl.zeros([BLOCK_M, HALF], gl.float32, layout=MMA)
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=gl.SliceLayout(1, MMA))
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=gl.SliceLayout(1, MMA))
    return q0, q1, acc0, acc1, l_i, m_i


@gluon.jit
def _load_tile(k_smem, v_smem, buf, MMA: gl.constexpr):
    """Ring slot `buf` into registers as B operands: k0/k1 [64, N] (K transposed), v0/v1 [N, 64]."""
    dot_b: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
    k0 = k_smem.index(buf * 2).permute((1, 0)).load(dot_b)
    k1 = k_smem.index(buf * 2 + 1).permute((1, 0)).load(dot_b)
    v0 = v_smem.index(buf * 2).load(dot_b)
    v1 = v_smem.index(buf * 2 + 1).load(dot_b)
    return k0, k1, v0, v1


@gluon.jit
def _fold_tile(q0, q1, k0, k1, v0, v1, acc0, acc1, l_i, m_i, tile, num_tiles, seq_len, scale_log2,
               BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, MMA: gl.constexpr):
    """Online softmax over one tile: k0/k1 [64, N] and v0/v1 [N, 64] (head-dim halves) in registers."""
    dot_a: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    dot_b: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
    scores = mma_v2(q0, k0, gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=MMA))
    scores = mma_v2(q1, k1, scores)  # [M, N]
    key_valid = tile * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, MMA)) < seq_len
    scores = gl.where(key_valid[None, :], scores * scale_log2, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(scores, 1))
    p = gl.exp2(scores - m_new[:, None])
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, 1)
    p_dot = gl.convert_layout(p.to(v0.dtype), dot_a)
    if tile == num_tiles - 1:  # past the end: zero V (0 * NaN would poison the row)
        v_keys = tile * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, dot_b))
        v0 = gl.where((v_keys < seq_len)[:, None], v0, 0.0)
        v1 = gl.where((v_keys < seq_len)[:, None], v1, 0.0)
    acc0 = mma_v2(p_dot, v0, acc0 * alpha[:, None])
    acc1 = mma_v2(p_dot, v1, acc1 * alpha[:, None])
    return acc0, acc1, l_i, m_new


@gluon.jit
def _store_out(out_ptr, acc0, acc1, l_i, seq, kv_head, NUM_KV_HEADS: gl.constexpr,
               QUERIES_PER_KV: gl.constexpr, BLOCK_M: gl.constexpr, MMA: gl.constexpr):
    """out rows of the head group: acc / l, both head-dim halves."""
    o_m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, MMA))
    o_ptrs = (out_ptr + (seq * (NUM_KV_HEADS * QUERIES_PER_KV) + kv_head * QUERIES_PER_KV + o_m)[:, None]
              * (2 * HALF) + gl.arange(0, HALF, layout=gl.SliceLayout(0, MMA))[None, :])
    o_mask = (o_m < QUERIES_PER_KV)[:, None]
    gl.store(o_ptrs, (acc0 / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=o_mask)
    gl.store(o_ptrs + HALF, (acc1 / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=o_mask)


@gluon.jit
def gluon_decode_kernel(
    q_ptr, kv_desc, out_ptr, seq_lens_ptr, block_tables_ptr, scale_log2, stride_bt_seq,
    NUM_KV_HEADS: gl.constexpr, QUERIES_PER_KV: gl.constexpr, BLOCK_M: gl.constexpr,
    BLOCK_SIZE: gl.constexpr, PAGES: gl.constexpr, NUM_BUF: gl.constexpr, STREAM_ONLY: gl.constexpr,
    EARLY_RELEASE: gl.constexpr,
):
    BLOCK_N: gl.constexpr = PAGES * BLOCK_SIZE
    NUM_WARPS: gl.constexpr = gl.num_warps()
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, NUM_WARPS],
                                                  instr_shape=[16, 8])
    rows_layout: gl.constexpr = gl.SliceLayout(1, mma)
    id_layout: gl.constexpr = gl.BlockedLayout([PAGES], [32], [NUM_WARPS], [0])

    seq, kv_head, seq_len, block_table_row, num_pages, num_tiles, k_smem, v_smem, bars, next_ids = _open_ring(
        kv_desc, seq_lens_ptr, block_tables_ptr, stride_bt_seq, NUM_KV_HEADS, BLOCK_SIZE, PAGES, NUM_BUF,
        id_layout)

    q0, q1, acc0, acc1, l_i, m_i = _start(q_ptr, seq, kv_head, NUM_KV_HEADS, QUERIES_PER_KV, BLOCK_M, mma)
    for tile in range(num_tiles):
        buf = tile % NUM_BUF
        mbarrier.wait(bars.index(buf), (tile // NUM_BUF) & 1)
        if not STREAM_ONLY:
            k0, k1, v0, v1 = _load_tile(k_smem, v_smem, buf, mma)
        if EARLY_RELEASE:  # the tile is in registers: refill its slot before the math
            next_ids = _refill(kv_desc, k_smem, v_smem, bars, next_ids, buf, tile, num_tiles, kv_head,
                                block_table_row, num_pages, PAGES, BLOCK_SIZE, NUM_BUF, id_layout)
        if not STREAM_ONLY:
            acc0, acc1, l_i, m_i = _fold_tile(q0, q1, k0, k1, v0, v1, acc0, acc1, l_i, m_i, tile, num_tiles,
                                              seq_len, scale_log2, BLOCK_M, BLOCK_N, mma)
        if not EARLY_RELEASE:  # every warp is done reading this slot: refill it with the tile NUM_BUF ahead
            next_ids = _refill(kv_desc, k_smem, v_smem, bars, next_ids, buf, tile, num_tiles, kv_head,
                                block_table_row, num_pages, PAGES, BLOCK_SIZE, NUM_BUF, id_layout)
    for b in gl.static_range(NUM_BUF):
        mbarrier.invalidate(bars.index(b))

    if STREAM_ONLY:
        l_i = gl.full([BLOCK_M], 1.0, gl.float32, layout=rows_layout)
    _store_out(out_ptr, acc0, acc1, l_i, seq, kv_head, NUM_KV_HEADS, QUERIES_PER_KV, BLOCK_M, mma)


@gluon.jit
def gluon_decode_warp_pages_kernel(
    q_ptr, kv_desc, out_ptr, seq_lens_ptr, block_tables_ptr, scale_log2, stride_bt_seq,
    NUM_KV_HEADS: gl.constexpr, QUERIES_PER_KV: gl.constexpr, BLOCK_M: gl.constexpr,
    BLOCK_SIZE: gl.constexpr, NUM_BUF: gl.constexpr, EARLY_RELEASE: gl.constexpr,
):
    """Like `gluon_decode_kernel`, but warp w owns page w of every tile (PAGES = num_warps) with its own
    running max, sum and accumulator: a batched [W, M, keys] MMA with the warps on the batch axis, so a tile
    needs no cross-warp reduction and no shared-memory trip for P; the W partial results merge once at the
    end."""
    W: gl.constexpr = gl.num_warps()
    PAGES: gl.constexpr = W
    BLOCK_N: gl.constexpr = PAGES * BLOCK_SIZE
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[W, 1, 1],
                                                  instr_shape=[1, 16, 8])
    dot_a: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    dot_b: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    wm_layout: gl.constexpr = gl.SliceLayout(2, mma)  # [W, M]
    id_layout: gl.constexpr = gl.BlockedLayout([PAGES], [32], [W], [0])

    seq, kv_head, seq_len, block_table_row, num_pages, num_tiles, k_smem, v_smem, bars, next_ids = _open_ring(
        kv_desc, seq_lens_ptr, block_tables_ptr, stride_bt_seq, NUM_KV_HEADS, BLOCK_SIZE, PAGES, NUM_BUF,
        id_layout)

    # q broadcast to every warp: [W, M, 64] x 2 halves
    q_w = gl.arange(0, W, layout=gl.SliceLayout(1, gl.SliceLayout(2, dot_a)))
    q_m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, gl.SliceLayout(2, dot_a)))
    q_d = gl.arange(0, HALF, layout=gl.SliceLayout(0, gl.SliceLayout(1, dot_a)))
    q_row = seq * (NUM_KV_HEADS * QUERIES_PER_KV) + kv_head * QUERIES_PER_KV + q_m
    q_ptrs = q_ptr + (q_w[:, None, None] * 0 + q_row[None, :, None]) * (2 * HALF) + q_d[None, None, :]
    q_mask = (q_m < QUERIES_PER_KV)[None, :, None] & (q_d < HALF)[None, None, :]
    q0 = gl.load(q_ptrs, mask=q_mask, other=0.0)
    q1 = gl.load(q_ptrs + HALF, mask=q_mask, other=0.0)

    acc0 = gl.zeros([W, BLOCK_M, HALF], gl.float32, layout=mma)
    acc1 = gl.zeros([W, BLOCK_M, HALF], gl.float32, layout=mma)
    l_i = gl.zeros([W, BLOCK_M], gl.float32, layout=wm_layout)
    m_i = gl.full([W, BLOCK_M], float("-inf"), gl.float32, layout=wm_layout)
    key_w = gl.arange(0, W, layout=gl.SliceLayout(1, gl.SliceLayout(1, mma)))
    key_j = gl.arange(0, BLOCK_SIZE, layout=gl.SliceLayout(0, gl.SliceLayout(1, mma)))
    key_in_tile = key_w[:, None] * BLOCK_SIZE + key_j[None, :]  # [W, keys]
    vkey_w = gl.arange(0, W, layout=gl.SliceLayout(1, gl.SliceLayout(2, dot_b)))
    vkey_j = gl.arange(0, BLOCK_SIZE, layout=gl.SliceLayout(0, gl.SliceLayout(2, dot_b)))
    vkey_in_tile = vkey_w[:, None] * BLOCK_SIZE + vkey_j[None, :]
    for tile in range(num_tiles):
        buf = tile % NUM_BUF
        mbarrier.wait(bars.index(buf), (tile // NUM_BUF) & 1)
        # [W, 64, keys]: warp w's page
        k0 = k_smem.index(buf * 2).reshape([W, BLOCK_SIZE, HALF]).permute((0, 2, 1)).load(dot_b)
        k1 = k_smem.index(buf * 2 + 1).reshape([W, BLOCK_SIZE, HALF]).permute((0, 2, 1)).load(dot_b)
        v0 = v_smem.index(buf * 2).reshape([W, BLOCK_SIZE, HALF]).load(dot_b)  # [W, keys, 64]
        v1 = v_smem.index(buf * 2 + 1).reshape([W, BLOCK_SIZE, HALF]).load(dot_b)
        if EARLY_RELEASE:  # the tile is in registers: refill its slot before the math
            next_ids = _refill(kv_desc, k_smem, v_smem, bars, next_ids, buf, tile, num_tiles, kv_head,
                                block_table_row, num_pages, PAGES, BLOCK_SIZE, NUM_BUF, id_layout)
        scores = mma_v2(q0, k0, gl.zeros([W, BLOCK_M, BLOCK_SIZE], gl.float32, layout=mma))
        scores = mma_v2(q1, k1, scores)  # [W, M, keys]
        key_valid = tile * BLOCK_N + key_in_tile < seq_len
        scores = gl.where(key_valid[:, None, :], scores * scale_log2, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(scores, 2))
        m_ref = gl.where(m_new == float("-inf"), 0.0, m_new)  # a warp with no key yet
        p = gl.exp2(scores - m_ref[:, :, None])
        alpha = gl.exp2(m_i - m_ref)
        l_i = l_i * alpha + gl.sum(p, 2)
        m_i = m_new
        p_dot = gl.convert_layout(p.to(kv_desc.dtype), dot_a)
        if tile == num_tiles - 1:  # past the end: zero V (0 * NaN would poison the row)
            v_valid = (tile * BLOCK_N + vkey_in_tile < seq_len)[:, :, None]
            v0 = gl.where(v_valid, v0, 0.0)
            v1 = gl.where(v_valid, v1, 0.0)
        acc0 = mma_v2(p_dot, v0, acc0 * alpha[:, :, None])
        acc1 = mma_v2(p_dot, v1, acc1 * alpha[:, :, None])
        if not EARLY_RELEASE:
            next_ids = _refill(kv_desc, k_smem, v_smem, bars, next_ids, buf, tile, num_tiles, kv_head,
                                block_table_row, num_pages, PAGES, BLOCK_SIZE, NUM_BUF, id_layout)
    for b in gl.static_range(NUM_BUF):
        mbarrier.invalidate(bars.index(b))

    # merge the warps' partials: [W, M] -> [M]
    m_all = gl.max(m_i, 0)
    weight = gl.exp2(m_i - m_all[None, :])  # [W, M]
    out_layout: gl.constexpr = gl.SliceLayout(0, mma)  # [M, 64]
    l_all = gl.convert_layout(gl.sum(l_i * weight, 0), gl.SliceLayout(1, out_layout))
    out0 = gl.sum(acc0 * weight[:, :, None], 0) / l_all[:, None]
    out1 = gl.sum(acc1 * weight[:, :, None], 0) / l_all[:, None]
    o_m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, out_layout))
    o_d = gl.arange(0, HALF, layout=gl.SliceLayout(0, out_layout))
    o_ptrs = (out_ptr + (seq * (NUM_KV_HEADS * QUERIES_PER_KV) + kv_head * QUERIES_PER_KV + o_m)[:, None]
              * (2 * HALF) + o_d[None, :])
    o_mask = (o_m < QUERIES_PER_KV)[:, None]
    gl.store(o_ptrs, out0.to(out_ptr.dtype.element_ty), mask=o_mask)
    gl.store(o_ptrs + HALF, out1.to(out_ptr.dtype.element_ty), mask=o_mask)


@gluon.jit
def _ws_producer(kv_desc, k_smem, v_smem, ready, empty, block_table_row, num_pages, num_tiles, kv_head,
                 PAGES: gl.constexpr, BLOCK_SIZE: gl.constexpr, NUM_BUF: gl.constexpr):
    """One warp: TMA copies of tile after tile into the ring, each once its slot was released."""
    id_layout: gl.constexpr = gl.BlockedLayout([PAGES], [32], [1], [0])
    ids = _load_ids(block_table_row, 0, num_pages, PAGES, id_layout)
    for tile in range(num_tiles):
        buf = tile % NUM_BUF
        next_ids = _load_ids(block_table_row, tile + 1, num_pages, PAGES, id_layout)
        mbarrier.wait(empty.index(buf), ((tile // NUM_BUF) - 1) & 1, pred=tile >= NUM_BUF)
        _issue_tile(kv_desc, k_smem, v_smem, ready, ids, buf, kv_head, PAGES, BLOCK_SIZE, id_layout)
        ids = next_ids


@gluon.jit
def _ws_consumer(q_ptr, out_ptr, k_smem, v_smem, ready, empty, seq, kv_head, seq_len, num_tiles, scale_log2,
                 NUM_KV_HEADS: gl.constexpr, QUERIES_PER_KV: gl.constexpr, BLOCK_M: gl.constexpr,
                 BLOCK_N: gl.constexpr, NUM_BUF: gl.constexpr, NUM_WARPS: gl.constexpr):
    """The math of `gluon_decode_kernel` (early release): each slot is released right after its loads."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, NUM_WARPS],
                                                  instr_shape=[16, 8])
    q0, q1, acc0, acc1, l_i, m_i = _start(q_ptr, seq, kv_head, NUM_KV_HEADS, QUERIES_PER_KV, BLOCK_M, mma)
    for tile in range(num_tiles):
        buf = tile % NUM_BUF
        mbarrier.wait(ready.index(buf), (tile // NUM_BUF) & 1)
        k0, k1, v0, v1 = _load_tile(k_smem, v_smem, buf, mma)
        gl.thread_barrier()
        mbarrier.arrive(empty.index(buf))
        acc0, acc1, l_i, m_i = _fold_tile(q0, q1, k0, k1, v0, v1, acc0, acc1, l_i, m_i, tile, num_tiles,
                                          seq_len, scale_log2, BLOCK_M, BLOCK_N, mma)
    _store_out(out_ptr, acc0, acc1, l_i, seq, kv_head, NUM_KV_HEADS, QUERIES_PER_KV, BLOCK_M, mma)


@gluon.jit
def gluon_decode_ws_kernel(
    q_ptr, kv_desc, out_ptr, seq_lens_ptr, block_tables_ptr, scale_log2, stride_bt_seq,
    NUM_KV_HEADS: gl.constexpr, QUERIES_PER_KV: gl.constexpr, BLOCK_M: gl.constexpr,
    BLOCK_SIZE: gl.constexpr, PAGES: gl.constexpr, NUM_BUF: gl.constexpr,
):
    """`gluon_decode_kernel` warp-specialised: one producer warp issues the copies, the kernel's warps do
    the math and release each slot through an `empty` mbarrier."""
    BLOCK_N: gl.constexpr = PAGES * BLOCK_SIZE
    seq, kv_head, seq_len, block_table_row, num_pages, num_tiles = _program(
        seq_lens_ptr, block_tables_ptr, stride_bt_seq, NUM_KV_HEADS, BLOCK_SIZE, BLOCK_N)
    k_smem = gl.allocate_shared_memory(kv_desc.dtype, [NUM_BUF * 2, BLOCK_N, HALF], kv_desc.layout)
    v_smem = gl.allocate_shared_memory(kv_desc.dtype, [NUM_BUF * 2, BLOCK_N, HALF], kv_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    for b in gl.static_range(NUM_BUF):
        mbarrier.init(ready.index(b), count=1)
        mbarrier.init(empty.index(b), count=1)
    gl.warp_specialize([
        (_ws_consumer, (q_ptr, out_ptr, k_smem, v_smem, ready, empty, seq, kv_head, seq_len, num_tiles,
                        scale_log2, NUM_KV_HEADS, QUERIES_PER_KV, BLOCK_M, BLOCK_N, NUM_BUF, gl.num_warps())),
        (_ws_producer, (kv_desc, k_smem, v_smem, ready, empty, block_table_row, num_pages, num_tiles, kv_head,
                        PAGES, BLOCK_SIZE, NUM_BUF)),
    ], [1], [48])
