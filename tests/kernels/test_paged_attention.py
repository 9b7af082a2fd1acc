"""paged_attention_triton vs paged_attention_torch on ragged batches of decodes and prefill chunks.

The KV caches are strided views `pool[:, 1, 0]` / `pool[:, 1, 1]` of a NaN-filled pool
[num_pages, 2 layers, 2, block_size, Hkv, D]; only the slots of real tokens hold data, pages are
shuffled, block-table entries past a sequence's last page point at random pages, and the output and the
split-K scratch are NaN-poisoned, so reading an unused slot, skipping a row or merging a partial that no
split wrote shows up as NaN. Split-K launches must leave their arrival counters at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from kernel_testing import DEVICE, DTYPES, ON_GPU, assert_close, import_kernel

reference = import_kernel("paged_attention")
triton_attention = import_kernel("paged_attention_triton")
split_k = import_kernel("paged_attention_split_triton")
Config = triton_attention.AttentionConfig

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


def poison_split_scratch(batch: Batch) -> None:
    """NaN in the whole split-K scratch (grown to fit up to 64 splits of this batch): a merge that reads
    a partial or lse that no split of this launch wrote gives NaN."""
    num_tokens, num_q_heads, head_dim = batch.q.shape
    size = 64 * num_tokens * num_q_heads * (head_dim + 1)
    split_k.split_k_workspace(batch.q.device, size).fill_(float("nan"))


def assert_counters_reset(batch: Batch) -> None:
    counters = split_k.split_k_counters(batch.q.device, 0)
    assert not counters.any(), "a split-K launch must leave every arrival counter at 0"


def expected_output(batch: Batch) -> torch.Tensor:
    args = batch.args()
    return reference.paged_attention_torch(*(a.float() if i < 3 else a for i, a in enumerate(args)))


def check(batch: Batch, dtype: torch.dtype, num_splits: int | None = None, config=None) -> None:
    expected = expected_output(batch)
    out = torch.full_like(batch.q, float("nan"))
    poison_split_scratch(batch)
    result = triton_attention.paged_attention_launch(*batch.args(), out=out, num_splits=num_splits,
                                                     config=config)
    assert result is out
    num_scheduled = int(batch.query_start_loc[-1])
    assert_close(out[:num_scheduled], expected[:num_scheduled], dtype)
    assert out[num_scheduled:].isnan().all(), "padding tokens must stay untouched"
    assert_counters_reset(batch)


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
    # 16-row tiles of D 80 (padded to 128) merge 4 splits at a time: tiles with 5 to 7 used splits take 2
    "mixed-bs16-d80-gqa4-split7-chunks": ([5, 9, 1], [200, 60, 30], 16, 80, 4, 7, Config(16, 4, 16, 4, 1)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_matches_reference(case: str, dtype: torch.dtype) -> None:
    q_lens, context_lens, block_size, head_dim, queries_per_kv, num_splits, config = CASES[case]
    batch = make_batch(q_lens, context_lens, block_size, head_dim, queries_per_kv, dtype, num_pad_tokens=2)
    check(batch, dtype, num_splits, config)


def test_split_runs_sized_per_sequence() -> None:
    """A launch sized for a long context (as a CUDA graph is) on short ones: each sequence spreads its own
    keys over the splits, empty splits write no partial (stale scratch must not leak into the merge)."""
    batch = make_batch([1, 1, 3], [70, 2, 40], 4, 64, 4, torch.float32, num_pad_tokens=1)
    batch.max_seq_len = 4096  # an upper bound, as captured
    config = Config(16, 1, 16, 4, 1)
    check(batch, torch.float32, num_splits=16, config=config)  # check() poisons the scratch


# (q_lens, context_lens, block_size, head_dim, queries_per_kv, num_splits, config), run with max_seq_len 4096
# (as a graph captured for a long context): most splits of these short tiles get no key, and the split
# that arrives last (the one that merges) is often an empty one
EMPTY_SPLIT_CASES = {
    "decode-split16": ([1, 1, 1, 1], [0, 3, 70, 33], 4, 64, 4, 16, Config(16, 1, 16, 4, 1)),
    "decode-gqa1-split64": ([1, 1], [130, 0], 16, 80, 1, 64, Config(16, 1, 16, 4, 1)),
    "mixed-split8": ([1, 6, 1, 10], [40, 0, 2, 25], 16, 80, 4, 8, Config(16, 2, 16, 4, 1)),
    "prefill-split7": ([9, 20, 3], [5, 0, 60], 1, 64, 1, 7, Config(16, 8, 16, 4, 1)),
}


@pytest.mark.parametrize("dtype", DTYPES if ON_GPU else [torch.float32], ids=str)  # fp16: CASES
@pytest.mark.parametrize("case", list(EMPTY_SPLIT_CASES), ids=str)
def test_empty_splits(case: str, dtype: torch.dtype) -> None:
    q_lens, context_lens, block_size, head_dim, queries_per_kv, num_splits, config = EMPTY_SPLIT_CASES[case]
    batch = make_batch(q_lens, context_lens, block_size, head_dim, queries_per_kv, dtype, num_pad_tokens=2)
    batch.max_seq_len = 4096
    check(batch, dtype, num_splits, config)


def test_split_k_launch_repeated() -> None:
    """The same split-K launch twice in a row (as graph replays run it) on other data: the first left its
    counters at 0, so the second merges every tile again, from its own partials only."""
    config = Config(16, 2, 16, 4, 1)
    dtype = torch.float32
    first = make_batch([1, 5, 1], [50, 30, 7], 4, 64, 4, dtype, num_pad_tokens=2, seed=1)
    first.max_seq_len = 1024
    check(first, dtype, num_splits=6, config=config)
    second = make_batch([1, 5, 1], [7, 60, 50], 4, 64, 4, dtype, num_pad_tokens=2, seed=2)
    second.max_seq_len = 1024
    check(second, dtype, num_splits=6, config=config)


@pytest.fixture
def shuffled_program_order(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The interpreter runs programs in grid order, so the last split of a tile always arrives last; on
    the GPU any split may. This runs each launch's programs in a random order instead (still one at a
    time); returns the list of programs run out of grid order, to show that the order changed."""
    if ON_GPU:
        pytest.skip("interpreter only: the GPU runs programs in its own order")
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    set_grid_idx = builder.set_grid_idx
    generator = torch.Generator().manual_seed(0)
    order: list[int] = []
    moved: list[int] = []

    def set_shuffled_grid_idx(x: int, y: int, z: int) -> None:
        num_x, num_y, num_z = builder.grid_dim
        index = (x * num_y + y) * num_z + z
        if index == 0:
            order[:] = torch.randperm(num_x * num_y * num_z, generator=generator).tolist()
        program = order[index]
        moved.extend([program] if program != index else [])
        set_grid_idx(program // (num_y * num_z), program // num_z % num_y, program % num_z)

    monkeypatch.setattr(builder, "set_grid_idx", set_shuffled_grid_idx)
    return moved


@pytest.mark.parametrize("case", ["decode-bs4-d64-gqa4-split5", "mixed-bs16-d80-gqa4-search-split4",
                                  "mixed-bs16-d80-gqa4-split7-chunks", "decode-split16", "mixed-split8",
                                  "prefill-split7"])
def test_splits_arriving_in_any_order(case: str, shuffled_program_order: list[int]) -> None:
    """Whichever split of a tile arrives last (first, middle, empty) merges all of them."""
    q_lens, context_lens, block_size, head_dim, queries_per_kv, num_splits, config = (
        CASES.get(case) or EMPTY_SPLIT_CASES[case])
    batch = make_batch(q_lens, context_lens, block_size, head_dim, queries_per_kv, torch.float32,
                       num_pad_tokens=2)
    if case in EMPTY_SPLIT_CASES:
        batch.max_seq_len = 4096
    check(batch, torch.float32, num_splits, config)
    assert shuffled_program_order, "programs ran in grid order"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_splits", [None, 8])
def test_mixed_two_launches(dtype: torch.dtype, num_splits: int | None) -> None:
    """Decodes and prefill chunks in separate launches (each its own tile shape and grid, sharing the
    split-K scratch and counters) give the reference, also with split-K in both (each launch's merges
    touch only its own rows). max_seq_len 512 (an upper bound): many of the splits get no key."""
    batch = make_batch([1, 7, 1, 1, 12, 1], [30, 20, 9, 0, 6, 50], 4, 64, 4, dtype, num_pad_tokens=2)
    batch.max_seq_len = 512
    args = batch.args()
    expected = expected_output(batch)
    out = torch.full_like(batch.q, float("nan"))
    poison_split_scratch(batch)
    triton_attention.paged_attention_launch(*args[:7], 1, batch.max_seq_len, out, num_splits,
                                            query_filter=triton_attention.DECODES_ONLY)
    assert_counters_reset(batch)
    decode_rows = batch.query_start_loc[:-1][(batch.query_start_loc.diff() == 1)].long()
    assert not out[decode_rows].isnan().any()
    prefill_rows = torch.tensor([1, 2, 3, 4, 5, 6, 7], device=out.device)
    assert out[prefill_rows].isnan().all(), "a decode launch must not touch prefill rows"
    prefills_only = triton_attention.PREFILLS_ONLY
    triton_attention.paged_attention_launch(*args, out, num_splits, query_filter=prefills_only)
    assert_counters_reset(batch)
    num_scheduled = int(batch.query_start_loc[-1])
    assert_close(out[:num_scheduled], expected[:num_scheduled], dtype)
    assert out[num_scheduled:].isnan().all()
    for _ in range(2):  # the public entry point (its own split choice), twice: counters reset each time
        poison_split_scratch(batch)
        out2 = triton_attention.paged_attention_triton(*args, split_decodes=True)
        assert_close(out2[:num_scheduled], expected[:num_scheduled], dtype)
        assert_counters_reset(batch)


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


@pytest.mark.gpu
def test_split_k_merge_races_on_gpu() -> None:
    """Many launches of 64 splits per tile, scratch and output poisoned before each: a last split that
    merged a partial before its stores were visible would read NaN or a stale value. The merge adds the
    splits in a fixed order, so every launch must give the same bits whichever split arrives last."""
    batch = make_batch([1] * 4, [8000, 3000, 100, 5000], 16, 128, 7, torch.bfloat16, seed=5)
    out = torch.empty_like(batch.q)
    results = []
    for _ in range(200):
        poison_split_scratch(batch)
        out.fill_(float("nan"))
        triton_attention.paged_attention_launch(*batch.args(), out=out, num_splits=64)
        results.append(out.clone())
    assert_close(results[0], expected_output(batch), torch.bfloat16)
    assert all(torch.equal(result, results[0]) for result in results)
    assert_counters_reset(batch)
