"""Launch choices of the Triton paged attention kernel (kernels/paged_attention_triton.py): the tile shape
for a batch's query length and GQA group, and the split-K count. Host-only: decided from host-known sizes,
never from device data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

MAX_SPLITS = 64
MIN_TILES_PER_SPLIT = 4
SPLIT_PROGRAMS_PER_SM = 2  # split-K aims for this many programs per SM
# decode grids of fewer programs than this per SM split (at least in two): one or 1.5 programs per SM leave
# each SM streaming with too few tiles in flight (H200, Hkv 4, 4096 keys: batch 33 3.03 TB/s unsplit,
# 3.82 in two splits; batch 48 3.79 / 3.93; batch 56 4.09 / 3.15: 1.7 waves of split programs)
SPLIT_BELOW_PROGRAMS_PER_SM = 1.5
NO_OVERLAP, SCORES_FIRST, FOLD_FIRST, V_BEHIND = 0, 1, 2, 3  # `AttentionConfig.overlap`


@dataclass(frozen=True)
class AttentionConfig:
    """Tile shape and launch options of one launch (chosen by `pick_config`, overridable in tests)."""

    block_m: int  # rows of the query tile (query tokens x heads of a KV group), >= 16
    block_q: int  # query tokens per tile; block_q * queries_per_kv <= block_m
    block_n: int  # keys per KV tile
    num_warps: int
    num_stages: int
    # read each KV tile's page ids one iteration ahead, so that num_stages > 2 keeps several tiles in
    # flight (see `_attend_tiles`); best for programs that stream many tiles
    pages_ahead: bool = False
    # one KV loop, the causal mask applied from the first masked tile on (one pipeline fill per program),
    # instead of an unmasked loop followed by a masked one: faster for decodes, whose masked tile is at
    # most the last; slower for prefill tiles, whose in-loop branch and masked loads cost every tile
    one_loop: bool = False
    # one_loop only: the KV loop pipelined by hand (`_attend_tiles_overlapped`), tile i's scores and tile
    # i - 1's softmax and P V in one iteration. NO_OVERLAP (default), SCORES_FIRST (FlashAttention-3's
    # consumer order), FOLD_FIRST (tile i's K/V loads in flight across the fold) or V_BEHIND (V loaded one
    # tile behind K: only scores carry over). Not yet measured on the GPU
    # (benchmarks/probe_overlap_decode.py), so no choice of pick_config uses it.
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.overlap not in (NO_OVERLAP, SCORES_FIRST, FOLD_FIRST, V_BEHIND):
            raise ValueError(f"overlap must be one of 0, 1, 2, 3, got {self.overlap}")
        if self.overlap and not self.one_loop:
            raise ValueError("overlap needs one_loop")


def pick_config(
    max_query_len: int,
    queries_per_kv: int,
    head_dim_pad: int,
    element_size: int,
    decode_programs_per_sm: float,
    on_gpu: bool,
) -> AttentionConfig:
    """Tile shapes measured best on an H200 (benchmarks/bench_kernels.py --sweep, Hq 28 / Hkv 4, D 128,
    bf16; benchmarks/results/kernels_sweep.md); wider rows (fp32, D > 128) get narrower KV tiles to stay
    within shared memory."""
    group_rows = triton.next_power_of_2(queries_per_kv)
    wide_rows = head_dim_pad * element_size > 256  # bytes per key row above bf16 x 128
    if max_query_len == 1:  # pure decode: one token per tile, the head group padded to 16 rows
        block_m = max(16, group_rows)
        if not on_gpu:
            return AttentionConfig(block_m, 1, 32, 4, 1)
        if decode_programs_per_sm < SPLIT_BELOW_PROGRAMS_PER_SM and not wide_rows:
            # split-K (pick_num_splits): each program streams a long run of tiles, two in flight
            return AttentionConfig(block_m, 1, 64, 4, 3, pages_ahead=True, one_loop=True)
        # 128-key tiles stream best until the grid has several programs per SM; then 64-key tiles (three
        # per SM) balance better
        block_n = 64 if wide_rows or decode_programs_per_sm >= 4 else 128
        return AttentionConfig(block_m, 1, block_n, 4, 2, one_loop=True)
    rows = max(16, min(128, triton.next_power_of_2(max_query_len * queries_per_kv)))
    block_m = max(rows, group_rows)
    block_q = block_m // queries_per_kv
    if not on_gpu:
        return AttentionConfig(block_m, block_q, 32, 4, 1)
    if block_m >= 128:
        if wide_rows:
            return AttentionConfig(block_m, block_q, 32, 8, 2)
        if max_query_len * queries_per_kv > 128:
            # long chunks: 256-row tiles in 16 warps (four warpgroups of 64 rows) halve the programs, and
            # with them each program's start (lengths, q, first pages) and end that nothing overlaps at
            # one program per SM (H200: 1x8192 458 TFLOP/s, 4x4096 431; 128 rows in 8 warps: 418 / 390)
            block_m = max(256, group_rows)
            return AttentionConfig(block_m, block_m // queries_per_kv, 64, 16, 3, pages_ahead=True)
        return AttentionConfig(block_m, block_q, 64, 8, 3, pages_ahead=True)
    return AttentionConfig(block_m, block_q, 32 if wide_rows else 64, 4, 3)


_NUM_SMS: dict[int, int] = {}


def num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 132  # CPU / interpreter: decide as on an H200, so tests see the same choices
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _NUM_SMS:
        _NUM_SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _NUM_SMS[index]


def pick_num_splits(num_programs: int, max_seq_len: int, block_n: int, num_sms: int) -> int:
    """Split the context only when the grid would leave SMs short of work (fewer than
    SPLIT_BELOW_PROGRAMS_PER_SM programs per SM): into enough splits for SPLIT_PROGRAMS_PER_SM programs per
    SM, at least two, at most MAX_SPLITS, each with at least MIN_TILES_PER_SPLIT KV tiles of the longest
    context. Fewer, longer runs beat more, shorter ones once each program keeps two tiles in flight (H200,
    16x4096: 4 splits 3.32 TB/s, 8 splits 2.70; kernels_sweep.md)."""
    kv_tiles = triton.cdiv(max_seq_len, block_n)
    if num_programs >= SPLIT_BELOW_PROGRAMS_PER_SM * num_sms or kv_tiles < 2 * MIN_TILES_PER_SPLIT:
        return 1
    wanted = max(2, SPLIT_PROGRAMS_PER_SM * num_sms // num_programs)
    return max(1, min(wanted, kv_tiles // MIN_TILES_PER_SPLIT, MAX_SPLITS))

def merge_num_warps(num_splits: int, head_dim_pad: int) -> int:
    """Warps of a split-K merge program (one (token, head): splits x head_dim fp32 values): about 16 values
    per thread, 1 to 4 warps. The merge is latency-bound, and small programs start and end sooner (H200,
    4 splits: 1 warp 2.0 us per call, 4 warps 3.2; 64 splits: 4 warps 2.8, 1 warp 4.0)."""
    values = triton.next_power_of_2(num_splits) * head_dim_pad
    return max(1, min(4, values // 512))
