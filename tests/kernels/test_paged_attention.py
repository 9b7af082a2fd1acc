"""paged_attention_triton vs paged_attention_torch on ragged batches of decodes and prefill chunks.

The KV caches are strided views `pool[:, 1, 0]` / `pool[:, 1, 1]` of a NaN-filled pool
[num_pages, 2 layers, 2, block_size, Hkv, D]; only the slots of real tokens hold data, pages are
shuffled, block-table entries past a sequence's last page point at random pages, and the output is
NaN-poisoned, so reading an unused slot or skipping a row shows up as NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from kernel_testing import DEVICE, DTYPES, ON_GPU, assert_close, import_kernel

reference = import_kernel("paged_attention")
triton_attention = import_kernel("paged_attention_triton")
Config = triton_attention.AttentionConfig
SCORES_FIRST, FOLD_FIRST, V_BEHIND = (triton_attention.SCORES_FIRST, triton_attention.FOLD_FIRST,
                                      triton_attention.V_BEHIND)

NUM_KV_HEADS = 2


@dataclass
class Batch:
    q: torch.Tensor  # [T, Hq, D]
    k_cache: torch.Tensor  # [num_pages, block_size, Hkv, D] strided view
    v_cache: torch.Tensor
    query_start_loc: torch.Tensor  # [B + 1] int32
    seq_lens: torch.Tensor  # [B] int32
    block_tables: torch.Tensor  # [B, max_blocks] int32
    max_query_len: int
    max_seq_len: int

    def args(self) -> tuple:
        return (self.q, self.k_cache, self.v_cache, self.query_start_loc, self.seq_lens, self.block_tables,
                self.q.shape[-1] ** -0.5, self.max_query_len, self.max_seq_len)


def make_batch(q_lens: list[int], context_lens: list[int], block_size: int, head_dim: int,
               queries_per_kv: int, dtype: torch.dtype, num_pad_tokens: int = 0, seed: int = 0) -> Batch:
    """num_pad_tokens: extra rows of q after the last sequence's (scheduled nowhere, never written)."""
    gen = torch.Generator().manual_seed(seed)
    seq_lens = [c + q for c, q in zip(context_lens, q_lens, strict=True)]
    pages_per_seq = [-(-s // block_size) for s in seq_lens]
    num_pages = sum(pages_per_seq) + 3
    max_blocks = max(pages_per_seq) + 2
    pool = torch.full((num_pages, 2, 2, block_size, NUM_KV_HEADS, head_dim), float("nan"), dtype=dtype)
    page_order = torch.randperm(num_pages, generator=gen)
    block_tables = torch.randint(0, num_pages, (len(q_lens), max_blocks), generator=gen, dtype=torch.int32)
    next_page = 0
    for b, seq_len in enumerate(seq_lens):
        pages = page_order[next_page:next_page + pages_per_seq[b]]
        next_page += pages_per_seq[b]
        block_tables[b, :len(pages)] = pages.int()
        positions = torch.arange(seq_len)
        kv = torch.randn(seq_len, 2, NUM_KV_HEADS, head_dim, generator=gen).to(dtype)
        pool[pages[positions // block_size], 1, :, positions % block_size] = kv
    num_tokens = sum(q_lens) + num_pad_tokens
    q = torch.randn(num_tokens, NUM_KV_HEADS * queries_per_kv, head_dim, generator=gen).to(dtype)
    query_start_loc = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    pool = pool.to(DEVICE)
    return Batch(q.to(DEVICE), pool[:, 1, 0], pool[:, 1, 1], query_start_loc.to(DEVICE),
                 torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE), block_tables.to(DEVICE),
                 max(q_lens), max(seq_lens))


def check(batch: Batch, dtype: torch.dtype, num_splits: int | None = None, config=None) -> None:
    args = batch.args()
    expected = reference.paged_attention_torch(*(a.float() if i < 3 else a for i, a in enumerate(args)))
    out = torch.full_like(batch.q, float("nan"))
    result = triton_attention.paged_attention_launch(*args, out=out, num_splits=num_splits, config=config)
    assert result is out
    num_scheduled = int(batch.query_start_loc[-1])
    assert_close(out[:num_scheduled], expected[:num_scheduled], dtype)
    assert out[num_scheduled:].isnan().all(), "padding tokens must stay untouched"


# (q_lens, context_lens, block_size, head_dim, queries_per_kv, num_splits, config)
CASES = {
    "decode-bs16-d64-gqa4": ([1, 1, 1], [17, 0, 40], 16, 64, 4, None, None),
    "decode-bs1-d80-gqa1-split3": ([1, 1], [30, 9], 1, 80, 1, 3, Config(16, 1, 16, 4, 1)),
    "decode-bs4-d64-gqa4-split5": ([1, 1, 1], [60, 5, 33], 4, 64, 4, 5, Config(16, 1, 16, 4, 1)),
    "mixed-bs4-d80-gqa4": ([1, 9, 1, 5], [20, 11, 0, 3], 4, 80, 4, None, None),
    "mixed-bs16-d64-gqa1-split2": ([3, 1, 12], [25, 40, 0], 16, 64, 1, 2, Config(16, 8, 16, 4, 1)),
    "mixed-bs1-d64-gqa4-search": ([1, 7, 1, 13], [30, 20, 0, 6], 1, 64, 4, None, Config(16, 2, 16, 4, 1)),
    "mixed-bs16-d80-gqa4-search-split4": ([1, 6, 1, 10], [40, 20, 0, 25], 16, 80, 4, 4,
                                          Config(16, 2, 16, 4, 1)),
    "prefill-bs4-d64-gqa1": ([24], [0], 4, 64, 1, None, Config(32, 32, 16, 4, 1)),
    # page ids read one tile ahead (the GPU's prefill and split-K decode tiles)
    "decode-bs4-d64-gqa4-split2-ahead": ([1, 1, 1], [60, 5, 33], 4, 64, 4, 2, Config(16, 1, 16, 4, 1, True)),
    "mixed-bs16-d80-gqa4-search-split2-ahead": ([1, 6, 1, 10], [40, 20, 0, 25], 16, 80, 4, 2,
                                                Config(16, 2, 16, 4, 1, True)),
    "prefill-bs1-d64-gqa1-ahead": ([24, 37], [9, 0], 1, 64, 1, None, Config(32, 32, 16, 4, 1, True)),
    # one KV loop per program, the causal mask from the first masked tile on
    "mixed-bs4-d80-gqa4-split3-oneloop": ([1, 9, 1, 5], [20, 11, 0, 3], 4, 80, 4, 3,
                                          Config(16, 2, 16, 4, 1, one_loop=True)),
    "prefill-bs1-d64-gqa1-ahead-oneloop": ([24, 37], [9, 0], 1, 64, 1, None,
                                           Config(32, 32, 16, 4, 1, True, one_loop=True)),
    "prefill-bs16-d64-gqa4-m256-ahead": ([70, 33], [0, 9], 16, 64, 4, None, Config(256, 64, 16, 16, 1, True)),
    "decode-bs4-d64-gqa4-oneloop": ([1, 1, 1], [60, 5, 33], 4, 64, 4, None,
                                    Config(16, 1, 16, 4, 1, one_loop=True)),
    # split-K with pages ahead and one loop (the GPU's split-K decode tile), with two loops
    "decode-bs4-d64-gqa4-split3-ahead-oneloop": ([1, 1, 1], [60, 5, 33], 4, 64, 4, 3,
                                                 Config(16, 1, 16, 4, 1, True, one_loop=True)),
    "mixed-bs1-d64-gqa4-split3-ahead": ([1, 9, 1, 5], [20, 11, 0, 3], 1, 64, 4, 3,
                                        Config(16, 2, 16, 4, 1, True)),
    # the hand-pipelined loops, all three orders: one-tile sequences (context 0 and 5), many tiles, split-K
    # with and without ids ahead (a split of one tile), a prefill chunk's causal rows
    **{f"{name}-overlap{order}": (*case, Config(*tile, **options, one_loop=True, overlap=order))
       for order in (SCORES_FIRST, FOLD_FIRST, V_BEHIND)
       for name, case, tile, options in (
           ("decode-bs4-d64-gqa4", ([1, 1, 1, 1], [60, 5, 33, 0], 4, 64, 4, None), (16, 1, 16, 4, 1), {}),
           ("decode-bs16-d80-gqa4-split3-ahead", ([1, 1, 1], [60, 5, 33], 16, 80, 4, 3), (16, 1, 16, 4, 1),
            {"pages_ahead": True}),
           ("decode-bs1-d64-gqa1-split2", ([1, 1], [70, 2], 1, 64, 1, 2), (16, 1, 16, 4, 1), {}),
           ("mixed-bs4-d64-gqa4", ([1, 9, 1, 5], [20, 11, 0, 3], 4, 64, 4, None), (16, 2, 16, 4, 1), {}),
       )},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_matches_reference(case: str, dtype: torch.dtype) -> None:
    q_lens, context_lens, block_size, head_dim, queries_per_kv, num_splits, config = CASES[case]
    batch = make_batch(q_lens, context_lens, block_size, head_dim, queries_per_kv, dtype, num_pad_tokens=2)
    check(batch, dtype, num_splits, config)


def test_overlap_options_checked() -> None:
    with pytest.raises(ValueError, match="one_loop"):
        Config(16, 1, 16, 4, 1, overlap=SCORES_FIRST)
    with pytest.raises(ValueError, match="one of"):
        Config(16, 1, 16, 4, 1, one_loop=True, overlap=4)


def test_splits_sized_per_sequence() -> None:
    """A launch sized for a long context (as a CUDA graph is) on short ones: each sequence spreads its own
    keys over the splits, empty splits write no partial (stale scratch must not leak into the merge)."""
    batch = make_batch([1, 1, 3], [70, 2, 40], 4, 64, 4, torch.float32, num_pad_tokens=1)
    batch.max_seq_len = 4096  # an upper bound, as captured
    config = Config(16, 1, 16, 4, 1)
    triton_attention.paged_attention_launch(*batch.args(), num_splits=16, config=config)  # allocates scratch
    partial_out, _ = triton_attention.split_k_views(DEVICE, 16, batch.q.shape[0], batch.q.shape[1], 64)
    partial_out.fill_(float("nan"))
    check(batch, torch.float32, num_splits=16, config=config)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_splits", [None, 3])
def test_mixed_two_launches(dtype: torch.dtype, num_splits: int | None) -> None:
    """Decodes and prefill chunks in separate launches (each its own tile shape) give the reference, also
    with split-K in both (the merges must each touch only their own launch's rows)."""
    batch = make_batch([1, 7, 1, 1, 12, 1], [30, 20, 9, 0, 6, 50], 4, 64, 4, dtype, num_pad_tokens=2)
    args = batch.args()
    expected = reference.paged_attention_torch(*(a.float() if i < 3 else a for i, a in enumerate(args)))
    out = torch.full_like(batch.q, float("nan"))
    triton_attention.paged_attention_launch(*args[:7], 1, batch.max_seq_len, out, num_splits,
                                            query_filter=triton_attention.DECODES_ONLY)
    decode_rows = batch.query_start_loc[:-1][(batch.query_start_loc.diff() == 1)].long()
    assert not out[decode_rows].isnan().any()
    prefill_rows = torch.tensor([1, 2, 3, 4, 5, 6, 7], device=out.device)
    assert out[prefill_rows].isnan().all(), "a decode launch must not touch prefill rows"
    prefills_only = triton_attention.PREFILLS_ONLY
    triton_attention.paged_attention_launch(*args, out, num_splits, query_filter=prefills_only)
    num_scheduled = int(batch.query_start_loc[-1])
    assert_close(out[:num_scheduled], expected[:num_scheduled], dtype)
    assert out[num_scheduled:].isnan().all()
    out2 = triton_attention.paged_attention_triton(*args, split_decodes=True)
    assert_close(out2[:num_scheduled], expected[:num_scheduled], dtype)


def test_public_entry_point_allocates_output() -> None:
    batch = make_batch([2, 1], [5, 9], 4, 64, 4, torch.float32)
    expected = reference.paged_attention_torch(*batch.args())
    out = triton_attention.paged_attention_triton(*batch.args())
    assert_close(out, expected, torch.float32)


def test_split_decision_only_for_idle_sms() -> None:
    pick = triton_attention.pick_num_splits
    assert pick(num_programs=256, max_seq_len=4096, block_n=64, num_sms=132) == 1  # grid fills the GPU
    assert pick(num_programs=64, max_seq_len=64, block_n=64, num_sms=132) == 1  # too short to split
    assert pick(num_programs=4, max_seq_len=32768, block_n=64, num_sms=132) == 64  # one long sequence
    assert 1 < pick(num_programs=64, max_seq_len=4096, block_n=64, num_sms=132) <= 16
    # 1 to 1.5 programs per SM: two splits (batch 33 to 49 of 4 KV heads); from 1.5 on, none
    assert pick(num_programs=132, max_seq_len=4096, block_n=64, num_sms=132) == 2
    assert pick(num_programs=196, max_seq_len=4096, block_n=64, num_sms=132) == 2
    assert pick(num_programs=200, max_seq_len=4096, block_n=64, num_sms=132) == 1


def test_gpu_tile_choices() -> None:
    """The H200-measured choices (benchmarks/results/kernels_sweep.md): page ids one tile ahead with three
    stages for programs that stream many tiles (prefill tiles of 128 and 256 rows, split-K decodes),
    in-iteration ids for big decode grids and short chunks; fp32 / wide rows keep narrow tiles and two
    stages. Long chunks take 256-row tiles in 16 warps. Decodes run one KV loop (their masked tile is at
    most the last), prefill tiles an unmasked and a masked one."""
    pick = triton_attention.pick_config
    bf16, fp32 = 2, 4
    prefill = pick(4096, 7, 128, bf16, 0.0, on_gpu=True)
    assert (prefill.block_m, prefill.block_q, prefill.block_n, prefill.num_warps, prefill.num_stages) == (
        256, 36, 64, 16, 3)
    assert prefill.pages_ahead and not prefill.one_loop
    chunk_128_rows = pick(18, 7, 128, bf16, 0.0, on_gpu=True)  # 126 rows
    assert (chunk_128_rows.block_m, chunk_128_rows.block_q, chunk_128_rows.num_warps) == (128, 18, 8)
    for programs_per_sm in (4 / 132, 192 / 132):  # split-K decodes
        split_decode = pick(1, 7, 128, bf16, programs_per_sm, on_gpu=True)
        assert (split_decode.block_n, split_decode.num_stages, split_decode.pages_ahead) == (64, 3, True)
        assert split_decode.one_loop
    for programs_per_sm, block_n in ((256 / 132, 128), (1024 / 132, 64)):
        big_decode = pick(1, 7, 128, bf16, programs_per_sm, on_gpu=True)
        assert (big_decode.block_n, big_decode.num_stages, big_decode.pages_ahead) == (block_n, 2, False)
        assert big_decode.one_loop
    assert not pick(9, 7, 128, bf16, 0.0, on_gpu=True).pages_ahead  # a short chunk: 64-row tiles
    wide = pick(4096, 7, 128, fp32, 0.0, on_gpu=True)
    assert (wide.block_n, wide.num_stages, wide.pages_ahead) == (32, 2, False)
    assert not pick(1, 7, 128, fp32, 4 / 132, on_gpu=True).pages_ahead
    assert not pick(4096, 7, 128, bf16, 0.0, on_gpu=False).pages_ahead  # the interpreter's own tiles
    # split-K merge: small programs for few splits (latency-bound), 4 warps for many
    merge_warps = triton_attention.merge_num_warps
    assert [merge_warps(n, 128) for n in (2, 4, 5, 8, 16, 64)] == [1, 1, 2, 2, 4, 4]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_serving_shapes_on_gpu(dtype: torch.dtype) -> None:
    """Qwen2.5-7B heads (28 / 4, D 128), block 16: long decodes (split-K), then a mixed batch."""
    decode = make_batch([1] * 4, [3000, 17, 900, 2047], 16, 128, 7, dtype, seed=1)
    check(decode, dtype)
    mixed = make_batch([1, 300, 1, 77], [1000, 500, 5, 0], 16, 128, 7, dtype, seed=2)
    check(mixed, dtype)


@pytest.mark.gpu
def test_cuda_graph_replay_follows_new_data() -> None:
    """Capture once (split-K path), replay with other lengths and K/V: results follow the data."""
    assert ON_GPU
    batch = make_batch([1, 1], [2000, 40], 16, 128, 7, torch.bfloat16, seed=3)
    out = torch.empty_like(batch.q)
    run = lambda: triton_attention.paged_attention_triton(*batch.args(), out=out)  # noqa: E731
    run()  # compile and allocate the split-K scratch before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    # same shapes (page count, table width), other lengths, pages and values
    fresh = make_batch([1, 1], [40, 2000], 16, 128, 7, torch.bfloat16, seed=4)
    for name in ("q", "k_cache", "v_cache", "query_start_loc", "seq_lens", "block_tables"):
        getattr(batch, name).copy_(getattr(fresh, name))
    graph.replay()
    expected = reference.paged_attention_torch(*batch.args())
    assert_close(out, expected, torch.bfloat16)
