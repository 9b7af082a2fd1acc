"""CUDA graphs for steps with prefill chunks: one captured forward per padded token count.

A step that carries prefill chunks (alone or beside decodes) run eagerly pays the host cost of every
launch: ~50 µs per Triton kernel, ~300 launches for a 28-layer model, so a 256-token step that needs 7 ms
of GPU time took 17-30 ms on the H200 (benchmarks/profile_step_kernels.py). Its kernels depend only on the
token count T and request count B, not on how the tokens split into requests, so whole forwards are
captured for T in `capture_sizes` (up to 512 tokens) and replayed with T and B padded up:

    static rows        real                              padding
    inputs_embeds      token embeddings + media rows     stale (rows never read by a real row)
    positions          positions ([T] or [3, T])         0
    slot_mapping       slots                             -1 (nothing written)
    query_start_loc    [B + 1] prefix sums               T for every padding request (q_len 0: skipped)
    seq_lens           context lengths                   1
    block_tables       pages (columns in use refreshed)  stale (never read)

B_pad = min(T_pad, max_num_seqs): a step has no more requests than tokens. The attention grids come from
T_pad, B_pad, max_query_len = T_pad and max_seq_len = the model's context (upper bounds), and decodes and
chunks attend in separate launches (`split_decodes`), since the graph does not know its mix. The token
embedding runs outside the graph (one gather into the static buffer), so media rows can replace
placeholder rows before the replay. Needs an attention backend with no host syncs (triton).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from omniserve.attention.backend import AttentionBackend
from omniserve.attention.forward_context import AttentionMetadata, ForwardContext, forward_context
from omniserve.models.qwen_multimodal import MediaRows
from omniserve.worker.cuda_graphs import capture_forwards

MAX_GRAPH_TOKENS = 512


def default_mixed_capture_sizes(max_tokens: int) -> list[int]:
    sizes = [16, 32, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512]
    return [s for s in sizes if s < max_tokens] + [max_tokens]


class MixedGraphs:
    def __init__(
        self,
        model: nn.Module,
        backend: AttentionBackend,
        device: torch.device,
        max_tokens: int,
        max_num_seqs: int,
        max_seq_len: int,
        block_size: int,
        mrope: bool = False,
    ) -> None:
        self.decoder = model.model  # Qwen2Model: forward(input_ids, positions, inputs_embeds)
        self.backend = backend
        self.device = device
        self.max_seq_len = max_seq_len
        self.max_num_seqs = max_num_seqs
        self.capture_sizes = default_mixed_capture_sizes(max_tokens)
        max_seqs = min(max_tokens, max_num_seqs)
        max_pages = -(-max_seq_len // block_size)
        embed = self.decoder.embed_tokens
        self.embed_weight = embed.weight  # [V, H]
        self.inputs_embeds = torch.zeros(
            max_tokens, embed.embedding_dim, dtype=embed.weight.dtype, device=device
        )  # [T_max, H]
        self.positions = torch.zeros(
            (3, max_tokens) if mrope else (max_tokens,), dtype=torch.long, device=device
        )  # [T_max] or [3, T_max]
        self.slot_mapping = torch.full((max_tokens,), -1, dtype=torch.long, device=device)
        self.query_start_loc = torch.zeros(max_seqs + 1, dtype=torch.int32, device=device)
        self.seq_lens = torch.ones(max_seqs, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros((max_seqs, max_pages), dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}  # size -> static hidden [size, H]
        self.num_replays = 0

    def num_seqs_for(self, size: int) -> int:
        return min(size, self.max_num_seqs)

    def _metadata(self, size: int) -> AttentionMetadata:
        num_seqs = self.num_seqs_for(size)
        return AttentionMetadata(
            query_start_loc=self.query_start_loc[: num_seqs + 1],
            seq_lens=self.seq_lens[:num_seqs],
            block_tables=self.block_tables[:num_seqs],
            slot_mapping=self.slot_mapping[:size],
            max_query_len=size,
            max_seq_len=self.max_seq_len,
            num_tokens=size,
            split_decodes=True,
        )

    def _forward(self, size: int) -> torch.Tensor:
        metadata = self._metadata(size)
        with forward_context(ForwardContext(metadata, self.backend, self.backend.plan(metadata, 0))):
            return self.decoder(None, self.positions[..., :size], inputs_embeds=self.inputs_embeds[:size])

    def capture(self, pool=None) -> None:
        """Capture every size, largest first; each warm-up runs a valid batch (see `_prepare`)."""
        capture_forwards(self.capture_sizes, self._forward, self.device, pool, self.graphs, self.outputs,
                         prepare=self._prepare)  # fmt: skip

    def _prepare(self, size: int) -> None:
        """Static inputs of one request of `size` tokens at positions 0..size-1 that writes nowhere."""
        num_seqs = self.num_seqs_for(size)
        self.query_start_loc[: num_seqs + 1].fill_(size)
        self.query_start_loc[0] = 0
        self.seq_lens[:num_seqs].fill_(1)
        self.seq_lens[0] = size
        self.positions[..., :size].copy_(torch.arange(size, device=self.device))
        self.slot_mapping[:size].fill_(-1)

    def padded_size(self, num_tokens: int, num_seqs: int) -> int | None:
        for size in self.capture_sizes:
            if size >= num_tokens:
                return size if num_seqs <= self.num_seqs_for(size) else None
        return None

    def run(
        self,
        size: int,
        input_ids: torch.Tensor,
        positions: np.ndarray,
        slot_mapping: np.ndarray,
        query_start_loc: np.ndarray,
        seq_lens: np.ndarray,
        block_tables: np.ndarray,
        media: MediaRows | None,
    ) -> torch.Tensor:
        """Replay the graph of `size` (>= T) on this step. input_ids: [T] on the device; the host arrays as
        in `HostBatch`. Returns hidden [T, H]."""
        num_tokens, num_seqs = input_ids.shape[0], seq_lens.shape[0]
        padded_seqs = self.num_seqs_for(size)
        embeds = self.inputs_embeds[:num_tokens]
        torch.index_select(self.embed_weight, 0, input_ids, out=embeds)
        if media is not None:
            embeds.index_copy_(0, media.dest, media.embeddings)

        def to_device(array: np.ndarray, target: torch.Tensor) -> None:  # pinned: no host wait
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)).pin_memory(), non_blocking=True)

        to_device(positions, self.positions[..., :num_tokens])
        if size > num_tokens:  # earlier replays left real slots there: padding must write nowhere
            self.positions[..., num_tokens:size].zero_()
            self.slot_mapping[num_tokens:size].fill_(-1)
        to_device(slot_mapping, self.slot_mapping[:num_tokens])
        starts = np.full(padded_seqs + 1, num_tokens, dtype=np.int32)
        starts[: num_seqs + 1] = query_start_loc
        to_device(starts, self.query_start_loc[: padded_seqs + 1])
        lens = np.ones(padded_seqs, dtype=np.int32)
        lens[:num_seqs] = seq_lens
        to_device(lens, self.seq_lens[:padded_seqs])
        columns = block_tables.shape[1]
        to_device(block_tables, self.block_tables[:num_seqs, :columns])
        self.graphs[size].replay()
        self.num_replays += 1
        return self.outputs[size][:num_tokens]
