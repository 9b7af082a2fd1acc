"""CUDA graphs for decode-only steps: one captured forward per padded batch size.

A decode-only step (every request computes exactly one token) has a shape fixed by its batch size, so its
whole forward (embedding, every layer's kernels and GEMMs, final norm) is captured once per size in
`capture_sizes` and replayed: one launch instead of hundreds. Inputs go through static buffers:

    static rows:   [ real requests 0..B-1 | padding B..size-1 ]
    input_ids      token ids               0
    positions      positions               0
    slot_mapping   slots                   -1   (nothing written)
    seq_lens       context lengths         1    (attends page 0, slot 0: finite, result ignored)
    block_tables   pages (only the columns any row uses are refreshed; a row never reads past seq_len)

Async scheduling: input tokens still on the device (`PendingInputs`, inflight.py) are scattered into the
static input_ids after the host arrays are copied in, before the replay; all of it is queued on the stream,
nothing waits. The host arrays go up through pinned memory.

The attention grid is sized at capture for `max_seq_len` = the model's context (an upper bound), so one
graph serves every context length. Needs an attention backend with no host syncs (triton).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from omniserve.attention.backend import AttentionBackend
from omniserve.attention.forward_context import AttentionMetadata, ForwardContext, forward_context
from omniserve.worker.inflight import PendingInputs


@torch.inference_mode()
def capture_forwards(
    sizes: list[int],
    forward: Callable[[int], torch.Tensor],
    device: torch.device,
    pool,
    graphs: dict[int, torch.cuda.CUDAGraph],
    outputs: dict[int, torch.Tensor],
    prepare: Callable[[int], None] | None = None,
) -> None:
    """Capture `forward(size)` for every size, largest first, on a side stream into the memory `pool`
    (shared by all graphs of the engine: they never replay at once). Before each capture `prepare(size)`
    (static inputs of a valid batch) and one warm-up call (compilation, lazy allocations) run."""
    pool = pool if pool is not None else torch.cuda.graph_pool_handle()
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for size in sorted(sizes, reverse=True):
            if prepare is not None:
                prepare(size)
            forward(size)
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                outputs[size] = forward(size)
            graphs[size] = graph
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)


def default_capture_sizes(max_batch: int) -> list[int]:
    sizes = [1, 2, 4, 8] + list(range(16, 256 + 1, 16)) + list(range(256 + 32, 512 + 1, 32))
    return [s for s in sizes if s < max_batch] + [max_batch]


class DecodeGraphs:
    def __init__(
        self,
        model: nn.Module,
        backend: AttentionBackend,
        device: torch.device,
        max_batch: int,
        max_seq_len: int,
        block_size: int,
        mrope: bool = False,
    ) -> None:
        self.model = model
        self.backend = backend
        self.device = device
        self.max_seq_len = max_seq_len
        self.capture_sizes = default_capture_sizes(max_batch)
        max_pages = -(-max_seq_len // block_size)
        self.input_ids = torch.zeros(max_batch, dtype=torch.long, device=device)
        # [B], or [3, B] for M-RoPE
        self.positions = torch.zeros(
            (3, max_batch) if mrope else (max_batch,), dtype=torch.long, device=device
        )
        self.slot_mapping = torch.full((max_batch,), -1, dtype=torch.long, device=device)
        self.seq_lens = torch.ones(max_batch, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros((max_batch, max_pages), dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(max_batch + 1, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}  # size -> static hidden [size, H]

    def _metadata(self, size: int) -> AttentionMetadata:
        return AttentionMetadata(
            query_start_loc=self.query_start_loc[: size + 1],
            seq_lens=self.seq_lens[:size],
            block_tables=self.block_tables[:size],
            slot_mapping=self.slot_mapping[:size],
            max_query_len=1,
            max_seq_len=self.max_seq_len,
            num_tokens=size,
        )

    def _forward(self, size: int) -> torch.Tensor:
        metadata = self._metadata(size)
        with forward_context(ForwardContext(metadata, self.backend, self.backend.plan(metadata, 0))):
            return self.model(self.input_ids[:size], self.positions[..., :size])

    def capture(self, pool=None) -> None:
        """Capture every size, largest first (its warm-up allocates the largest scratch buffers)."""
        capture_forwards(self.capture_sizes, self._forward, self.device, pool, self.graphs, self.outputs)

    def padded_size(self, batch: int) -> int | None:
        for size in self.capture_sizes:
            if size >= batch:
                return size
        return None

    def run(
        self,
        size: int,
        input_ids: np.ndarray,
        positions: np.ndarray,
        slot_mapping: np.ndarray,
        seq_lens: np.ndarray,
        block_tables: np.ndarray,
        pending: PendingInputs | None = None,
    ) -> torch.Tensor:
        """Replay the graph of `size` (>= batch) on these host arrays (and `pending` input tokens from the
        device); returns hidden [batch, H]."""
        batch = input_ids.shape[0]
        pad = size - batch

        def padded(values: np.ndarray, fill: int) -> torch.Tensor:
            filler = np.full((*values.shape[:-1], pad), fill, dtype=values.dtype)
            values = np.ascontiguousarray(np.concatenate([values, filler], axis=-1))
            return torch.from_numpy(values).pin_memory()

        self.input_ids[:size].copy_(padded(input_ids, 0), non_blocking=True)
        self.positions[..., :size].copy_(padded(positions, 0), non_blocking=True)
        self.slot_mapping[:size].copy_(padded(slot_mapping, -1), non_blocking=True)
        self.seq_lens[:size].copy_(padded(seq_lens, 1), non_blocking=True)
        columns = block_tables.shape[1]
        table = np.zeros((size, columns), dtype=np.int32)
        table[:batch] = block_tables
        self.block_tables[:size, :columns].copy_(torch.from_numpy(table).pin_memory(), non_blocking=True)
        if pending is not None:
            pending.fill(self.input_ids)
        self.graphs[size].replay()
        return self.outputs[size][:batch]
