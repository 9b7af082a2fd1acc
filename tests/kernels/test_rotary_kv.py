"""rotary_write_kv_triton vs rotary_write_kv_torch: a ragged step (decodes and prefill chunks, padding rows)
rotating q in place and writing rotated k and v into a NaN-poisoned pool through strided views."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import DEVICE, DTYPES, import_kernel
from test_rotary import cos_sin_cache

reference = import_kernel("rotary_kv")
fused = import_kernel("rotary_kv_triton")
rotary_torch = import_kernel("rotary")

NUM_PAGES, MAX_POSITION = 48, 64  # block size 1: the step needs at most 38 pages


def ragged_step(
    query_lens: list[int], block_size: int, mrope: bool, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """positions ([T] or [3, T]) and slot_mapping [T] of a step whose requests schedule `query_lens` tokens
    after a random number of cached ones, on shuffled pages; two padding rows (slot -1, position 0) follow,
    as a CUDA graph's padded batch has them."""
    pages = torch.randperm(NUM_PAGES, generator=gen).tolist()
    positions, slots = [], []
    for query_len in query_lens:
        start = int(torch.randint(0, 8, (), generator=gen))
        seq_len = start + query_len
        table, pages = pages[: -(-seq_len // block_size)], pages[-(-seq_len // block_size):]
        for index in range(start, seq_len):
            positions.append(index)
            slots.append(table[index // block_size] * block_size + index % block_size)
    positions += [0, 0]
    slots += [-1, -1]
    positions = torch.tensor(positions)
    if mrope:  # M-RoPE ids differ per axis (as for media tokens); a strided view, as a CUDA graph passes them
        positions = torch.randint(0, MAX_POSITION, (3, len(slots) + 5), generator=gen)[:, : len(slots)]
    return positions, torch.tensor(slots)


def qkv_views(
    qkv: torch.Tensor, num_q_heads: int, num_kv_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as the model makes them: `.split()` of the fused projection output, viewed per head."""
    num_tokens = qkv.shape[0]
    q, k, v = qkv.split([num_q_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1)
    return (q.view(num_tokens, num_q_heads, head_dim), k.view(num_tokens, num_kv_heads, head_dim),
            v.view(num_tokens, num_kv_heads, head_dim))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize(
    ("head_dim", "num_q_heads", "num_kv_heads", "mrope_section"),
    [(64, 6, 2, None), (80, 6, 3, None), (128, 4, 1, None), (64, 4, 4, [8, 12, 12]), (80, 6, 2, [10, 15, 15]),
     (128, 8, 2, [16, 24, 24])],
)
def test_matches_reference(
    head_dim: int, num_q_heads: int, num_kv_heads: int, mrope_section: list[int] | None, block_size: int,
    dtype: torch.dtype,
) -> None:
    gen = torch.Generator().manual_seed(head_dim * block_size)
    positions, slots = ragged_step([1, 5, 1, 3], block_size, mrope_section is not None, gen)
    num_tokens = slots.shape[0]
    cache = cos_sin_cache(MAX_POSITION, head_dim).to(DEVICE)
    qkv = torch.randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim, generator=gen).to(dtype)
    # pool [num_pages, num_layers, 2, block_size, Hkv, D], poisoned; this layer (1) gets strided views
    pool = torch.full((NUM_PAGES, 2, 2, block_size, num_kv_heads, head_dim), float("nan"), dtype=dtype)
    qkv, pool, positions, slots = qkv.to(DEVICE), pool.to(DEVICE), positions.to(DEVICE), slots.to(DEVICE)
    qkv_before = qkv.clone()
    expected_qkv, expected_pool = qkv.clone(), pool.clone()

    q, k, v = qkv_views(expected_qkv, num_q_heads, num_kv_heads, head_dim)
    reference.rotary_write_kv_torch(q, k, v, positions, cache, mrope_section, expected_pool[:, 1, 0],
                                    expected_pool[:, 1, 1], slots)
    q, k, v = qkv_views(qkv, num_q_heads, num_kv_heads, head_dim)
    assert not q.is_contiguous() and not k.is_contiguous()
    fused.rotary_write_kv_triton(q, k, v, positions, cache, mrope_section, pool[:, 1, 0], pool[:, 1, 1],
                                 slots)

    # exactly the written slots hold values, in this layer's K and V only; everything else is still NaN
    written = torch.zeros(NUM_PAGES * block_size, dtype=torch.bool, device=DEVICE)
    written[slots[slots >= 0]] = True
    written = written.view(NUM_PAGES, 1, 1, block_size, 1, 1).expand(pool.shape).clone()
    written[:, 0] = False
    assert not pool[written].isnan().any(), "a written slot holds NaN"
    assert pool[~written].isnan().all(), "a slot that should stay untouched was written"
    # bit-exact in 16-bit dtypes (same rounding steps); fp32 may contract into FMAs
    tolerance = 1e-5 if dtype == torch.float32 else 0
    torch.testing.assert_close(pool, expected_pool, atol=tolerance, rtol=tolerance, equal_nan=True)
    # q rotated in place (padding rows too), k and v as they were
    q_size = num_q_heads * head_dim
    torch.testing.assert_close(qkv[:, :q_size], expected_qkv[:, :q_size], atol=tolerance, rtol=tolerance)
    assert torch.equal(qkv[:, q_size:], qkv_before[:, q_size:]), "k or v changed"
    assert torch.equal(expected_qkv[:, q_size:], qkv_before[:, q_size:]), "the reference changed k or v"


def test_casts_to_the_cache_dtype_and_rotates_what_the_rotary_kernel_rotates() -> None:
    """fp32 q/k/v into an fp16 cache: the cache holds `apply_rotary_triton`'s k and v, cast."""
    rotary = import_kernel("rotary_triton")
    gen = torch.Generator().manual_seed(7)
    head_dim, num_q_heads, num_kv_heads, block_size = 64, 4, 2, 4
    positions, slots = ragged_step([2, 1], block_size, False, gen)
    positions, slots = positions.to(DEVICE), slots.to(DEVICE)
    cache = cos_sin_cache(MAX_POSITION, head_dim).to(DEVICE)
    qkv = torch.randn(slots.shape[0], (num_q_heads + 2 * num_kv_heads) * head_dim, generator=gen).to(DEVICE)
    k_cache = torch.zeros(NUM_PAGES, block_size, num_kv_heads, head_dim, dtype=torch.float16, device=DEVICE)
    v_cache = torch.zeros_like(k_cache)
    expected = qkv.clone()
    q_ref, k_ref, v_ref = qkv_views(expected, num_q_heads, num_kv_heads, head_dim)
    rotary.apply_rotary_triton(q_ref, k_ref, positions, cache)
    fused.rotary_write_kv_triton(*qkv_views(qkv, num_q_heads, num_kv_heads, head_dim), positions, cache, None,
                                 k_cache, v_cache, slots)
    valid = slots >= 0
    pages, offsets = slots[valid] // block_size, slots[valid] % block_size
    # the same kernel code rotates in both: equal bits
    assert torch.equal(qkv[:, : num_q_heads * head_dim], expected[:, : num_q_heads * head_dim])
    assert torch.equal(k_cache[pages, offsets], k_ref[valid].half())
    assert torch.equal(v_cache[pages, offsets], v_ref[valid].half())
    assert k_cache.count_nonzero() == valid.sum() * num_kv_heads * head_dim  # nothing else written


@pytest.mark.parametrize("mrope_section", [None, [8, 12, 12]])
def test_attention_layer_rotates_through_either_backend_as_before(mrope_section: list[int] | None) -> None:
    """`Attention(q, k, v, rotary, positions)` on the Triton backend (fused kernel) equals the unfused path
    on the torch backend: `apply_rotary_torch` with the layer's table, then `Attention(q, k, v)`."""
    from omniserve.attention.backend import TorchAttentionBackend
    from omniserve.attention.forward_context import AttentionMetadata, ForwardContext, forward_context
    from omniserve.attention.layer import Attention
    from omniserve.attention.triton_backend import TritonAttentionBackend
    from omniserve.models.layers import RotaryEmbedding

    gen = torch.Generator().manual_seed(3)
    head_dim, num_q_heads, num_kv_heads, block_size = 64, 4, 2, 4
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    rotary = RotaryEmbedding(inv_freq, MAX_POSITION, mrope_section=mrope_section)
    # two requests without earlier context: 5 and 3 tokens on pages [3, 0] and [5]
    block_tables = torch.tensor([[3, 0], [5, 5]], dtype=torch.int32)
    slots = torch.tensor([12, 13, 14, 15, 0, 20, 21, 22])
    positions = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    if mrope_section is not None:
        positions = torch.randint(0, MAX_POSITION, (3, 8), generator=gen)
    metadata = AttentionMetadata(
        query_start_loc=torch.tensor([0, 5, 8], dtype=torch.int32).to(DEVICE),
        seq_lens=torch.tensor([5, 3], dtype=torch.int32).to(DEVICE), block_tables=block_tables.to(DEVICE),
        slot_mapping=slots.to(DEVICE), max_query_len=5, max_seq_len=5, num_tokens=8,
    )
    qkv = torch.randn(8, (num_q_heads + 2 * num_kv_heads) * head_dim, generator=gen)
    rotary, positions = rotary.to(DEVICE), positions.to(DEVICE)
    outputs = []
    backends = ((TorchAttentionBackend(DEVICE), False), (TritonAttentionBackend(DEVICE), True))
    for backend, fused_rotary in backends:
        layer = Attention(num_q_heads, num_kv_heads, head_dim, head_dim**-0.5)
        pool = torch.full((6, 2, block_size, num_kv_heads, head_dim), float("nan"), device=DEVICE)
        layer.bind_kv_cache(pool[:, 0], pool[:, 1])
        q, k, v = qkv_views(qkv.clone().to(DEVICE), num_q_heads, num_kv_heads, head_dim)
        context = ForwardContext(metadata, backend, backend.plan(metadata, block_size))
        with forward_context(context):
            if fused_rotary:
                outputs.append(layer(q, k, v, rotary, positions))
            else:
                rotary_torch.apply_rotary_torch(q, k, positions, rotary.cos_sin_cache, mrope_section)
                outputs.append(layer(q, k, v))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-4, rtol=1e-4)
