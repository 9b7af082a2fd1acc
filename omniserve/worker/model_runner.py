"""`ModelRunner`: owns the model, the KV page pool tensor and the sampler; runs one step.

In: a `SchedulerOutput` (new requests in full, running ones as diffs). Out: a `ModelRunnerOutput` with a
token for every request whose scheduled tokens reach the end of its known tokens.

One step flattens every request's scheduled tokens (decodes and prefill chunks alike) into one batch:

    request:          A (decode)   B (prefill chunk of 3)     C (decode)
    input_ids:        [ a5 |        b0 b1 b2 |                 c9 ]       T = 5
    positions:        [ 5  |        0  1  2  |                 9  ]
    query_start_loc:  [ 0,  1,                4,                   5 ]
    seq_lens:         [ 6,          3,                         10 ]
    slot_mapping[t] = page_ids[pos // block_size] * block_size + pos % block_size

The pool is one tensor of equal pages; a page holds K and V of `block_size` tokens for every layer:
    pool: [num_pages, num_layers, 2, block_size, Hkv, D]; layer l sees k = pool[:, l, 0], v = pool[:, l, 1]
or, as an embedding page, `rows_per_page` rows of encoder output:
    embedding_view: [num_pages, rows_per_page, H] = the first rows_per_page * H elements of each page
Encoder jobs of the step run first and write their rows there; a prefill chunk covering placeholders takes
those rows in place of the token embeddings. M-RoPE models get positions [3, T]: a prompt token's from the
request's table, a generated token's i + delta on all three axes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from omniserve.attention.backend import create_attention_backend
from omniserve.attention.forward_context import AttentionMetadata, ForwardContext, forward_context
from omniserve.config import EngineConfig
from omniserve.core.scheduler_output import ModelRunnerOutput, SchedulerOutput
from omniserve.models.loader import load_model
from omniserve.models.qwen_multimodal import MediaRows
from omniserve.sampling_params import SamplingParams
from omniserve.worker.embedding_pages import embedding_view, write_rows
from omniserve.worker.sampler import Sampler, SamplingRow

logger = logging.getLogger("omniserve")
SPLIT_DECODES_FROM = 8  # eager steps with chunks: decodes get their own attention launch from this many


@dataclass
class HostBatch:
    """One step's flattened inputs on the host (T tokens of B requests)."""

    input_ids: np.ndarray  # [T] int64
    positions: np.ndarray  # [T] int64
    slot_mapping: np.ndarray  # [T] int64
    query_start_loc: np.ndarray  # [B + 1] int32
    seq_lens: np.ndarray  # [B] int32, context after this step
    block_tables: np.ndarray  # [B, max_pages] int32
    sample_rows: np.ndarray  # [B] int64, row of T whose logits the request samples, -1 if none
    max_query_len: int
    media_dest: np.ndarray | None = None  # [n] rows of T that take an encoder output row
    media_page: np.ndarray | None = None  # [n] embedding page of that row
    media_row: np.ndarray | None = None  # [n] row within the page


@dataclass
class RequestState:
    """The runner's copy of a running request, kept in sync by scheduler diffs."""

    request_id: str
    token_ids: list[int]  # prompt + outputs; the runner appends what it samples
    num_prompt_tokens: int
    sampling_params: SamplingParams
    eos_token_ids: list[int]
    page_ids: list[int]
    num_computed_tokens: int
    mm_spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, num_tokens) per media item
    item_page_ids: dict[int, list[int]] = field(default_factory=dict)  # item -> embedding pages
    mrope_positions: np.ndarray | None = None  # [3, num_prompt_tokens]
    mrope_delta: int = 0
    _page_array: np.ndarray | None = None  # page_ids as int64, rebuilt only when pages are added

    def mrope(self, positions: np.ndarray) -> np.ndarray:
        """[3, n] M-RoPE positions of sequence indices `positions` (prompt: the table; outputs: + delta)."""
        table = self.mrope_positions
        if table is None:
            return np.broadcast_to(positions, (3, len(positions)))
        in_prompt = positions < table.shape[1]
        out = np.broadcast_to(positions + self.mrope_delta, (3, len(positions))).copy()
        out[:, in_prompt] = table[:, positions[in_prompt]]
        return out

    @property
    def page_array(self) -> np.ndarray:
        if self._page_array is None or len(self._page_array) != len(self.page_ids):
            self._page_array = np.asarray(self.page_ids, dtype=np.int64)
        return self._page_array


class ModelRunner:
    def __init__(self, config: EngineConfig, model_path, hf_config, device: torch.device, dtype: torch.dtype):
        self.config = config
        self.device = device
        self.dtype = dtype
        self.block_size = config.cache.block_size
        self.model = load_model(
            model_path, hf_config, dtype, device, config.model.load_format, config.model.seed
        )
        self.backend = create_attention_backend(config.device.attention_backend, device)
        self.sampler = Sampler(device)
        self.states: dict[str, RequestState] = {}
        layers = self.model.attention_layers()
        self.num_layers = len(layers)
        self.num_kv_heads, self.head_dim = layers[0].num_kv_heads, layers[0].head_dim
        self.pool: torch.Tensor | None = None
        self.decode_graphs = None  # DecodeGraphs once captured
        self.mixed_graphs = None  # MixedGraphs once captured
        self.uses_mrope = getattr(self.model, "uses_mrope", False)
        self.hidden_size = self.model.model.embed_tokens.embedding_dim
        self.embedding_view: torch.Tensor | None = None  # [num_pages, rows_per_page, H]

    # ----- the page pool ---------------------------------------------------------------------------
    @property
    def page_bytes(self) -> int:
        return self.num_layers * 2 * self.block_size * self.num_kv_heads * self.head_dim * self.dtype.itemsize

    def allocate_pool(self, num_pages: int, shared: bool = False) -> None:
        """`shared`: the pool is written by encoder worker processes too. On CPU it then lives in shared
        memory (moved there before any worker starts); a CUDA tensor is shared by CUDA IPC when passed to
        a worker through torch.multiprocessing, so nothing changes here."""
        # [num_pages, num_layers, 2, block_size, Hkv, D]
        self.pool = torch.zeros(
            (num_pages, self.num_layers, 2, self.block_size, self.num_kv_heads, self.head_dim),
            dtype=self.dtype,
            device=self.device,
        )
        if shared and self.device.type == "cpu":
            self.pool.share_memory_()
        for index, layer in enumerate(self.model.attention_layers()):
            layer.bind_kv_cache(self.pool[:, index, 0], self.pool[:, index, 1])
        self.embedding_view = embedding_view(self.pool, self.embedding_rows_per_page, self.hidden_size)

    @property
    def embedding_rows_per_page(self) -> int:
        return self.page_bytes // (self.hidden_size * self.dtype.itemsize)

    # ----- one step --------------------------------------------------------------------------------
    def _update_states(self, scheduler_output: SchedulerOutput) -> None:
        for request_id in scheduler_output.dropped_request_ids:
            self.states.pop(request_id, None)
        for new in scheduler_output.new_requests:
            self.states[new.request_id] = RequestState(
                new.request_id,
                list(new.token_ids),
                new.num_prompt_tokens,
                new.sampling_params,
                new.eos_token_ids,
                list(new.page_ids),
                new.num_computed_tokens,
                list(new.mm_spans),
                dict(new.item_page_ids),
                new.mrope_positions,
                new.mrope_delta,
            )
        for cached in scheduler_output.cached_requests:
            state = self.states[cached.request_id]
            state.page_ids.extend(cached.new_page_ids)
            state.num_computed_tokens = cached.num_computed_tokens
            state.item_page_ids.update(cached.new_item_page_ids)

    def _run_encoder_jobs(self, jobs) -> None:
        """Encode the step's items (one tower call per modality) and write each item's rows into its embedding
        pages (in-process encoding)."""
        all_rows = self.model.encode_many([job.encoder_input for job in jobs])
        for job, rows in zip(jobs, all_rows, strict=True):  # rows: [num_tokens, H]
            write_rows(self.embedding_view, job.page_ids, rows, job.num_tokens)

    def _media_rows(self, state: RequestState, start: int, end: int, first_row: int, out: list) -> None:
        """Append (batch rows, pages, rows in page) for every placeholder of [start, end) of this request."""
        rows_per_page = self.embedding_rows_per_page
        for index, (offset, length) in enumerate(state.mm_spans):
            lo, hi = max(start, offset), min(end, offset + length)
            if lo >= hi:
                continue
            item_rows = np.arange(lo - offset, hi - offset)
            pages = np.asarray(state.item_page_ids[index])[item_rows // rows_per_page]
            out.append((first_row + lo - start + np.arange(hi - lo), pages, item_rows % rows_per_page))

    def _build_batch(self, num_scheduled: dict[str, int]) -> HostBatch:
        """Flatten the step's tokens into host arrays (one pass over the scheduled requests)."""
        states = [self.states[request_id] for request_id in num_scheduled]
        if len(num_scheduled) == sum(num_scheduled.values()):  # decode only: one token each
            return self._build_decode_batch(states)
        block_size = self.block_size
        num_requests = len(num_scheduled)
        input_ids: list[int] = []
        positions, slots = [], []
        query_start_loc = np.zeros(num_requests + 1, dtype=np.int32)
        seq_lens = np.zeros(num_requests, dtype=np.int32)
        sample_rows = np.full(num_requests, -1, dtype=np.int64)
        media: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for row, (state, num_tokens) in enumerate(zip(states, num_scheduled.values(), strict=True)):
            start, end = state.num_computed_tokens, state.num_computed_tokens + num_tokens
            input_ids.extend(state.token_ids[start:end])
            pos = np.arange(start, end)
            positions.append(state.mrope(pos) if self.uses_mrope else pos)
            if state.mm_spans:
                self._media_rows(state, start, end, int(query_start_loc[row]), media)
            slots.append(state.page_array[pos // block_size] * block_size + pos % block_size)
            query_start_loc[row + 1] = query_start_loc[row] + num_tokens
            seq_lens[row] = end
            if end == len(state.token_ids):
                sample_rows[row] = query_start_loc[row + 1] - 1
        media_dest = media_page = media_row = None
        if media:
            media_dest, media_page, media_row = (np.concatenate(parts) for parts in zip(*media, strict=True))
        return HostBatch(
            input_ids=np.asarray(input_ids, dtype=np.int64),
            positions=np.concatenate(positions, axis=-1),
            slot_mapping=np.concatenate(slots).astype(np.int64),
            query_start_loc=query_start_loc,
            seq_lens=seq_lens,
            block_tables=self._block_tables(states, int(seq_lens.max())),
            sample_rows=sample_rows,
            max_query_len=int(np.diff(query_start_loc).max()),
            media_dest=media_dest,
            media_page=media_page,
            media_row=media_row,
        )

    def _block_tables(self, states: list[RequestState], max_seq_len: int) -> np.ndarray:
        max_pages = -(-max_seq_len // self.block_size)
        block_tables = np.zeros((len(states), max_pages), dtype=np.int32)
        for row, state in enumerate(states):
            pages = state.page_array[:max_pages]
            block_tables[row, : len(pages)] = pages
        return block_tables

    def _build_decode_batch(self, states: list[RequestState]) -> HostBatch:
        """The common steady state, without per-request numpy calls: token i of request i sits at
        position num_computed_tokens, in page page_ids[position // block_size]."""
        block_size = self.block_size
        num = len(states)
        positions = np.fromiter((s.num_computed_tokens for s in states), dtype=np.int64, count=num)
        input_ids = np.fromiter(
            (s.token_ids[s.num_computed_tokens] for s in states), dtype=np.int64, count=num
        )
        pages = np.fromiter(
            (s.page_ids[s.num_computed_tokens // block_size] for s in states), dtype=np.int64, count=num
        )
        seq_lens = (positions + 1).astype(np.int32)
        rope_positions = positions
        if (
            self.uses_mrope
        ):  # a generated token sits at index + delta on all axes; a prompt token's is in the table
            deltas = np.fromiter((s.mrope_delta for s in states), dtype=np.int64, count=num)
            rope_positions = np.broadcast_to(positions + deltas, (3, num)).copy()  # [3, B]
            for i, state in enumerate(states):
                table = state.mrope_positions
                if table is not None and positions[i] < table.shape[1]:  # last prompt token, chunked alone
                    rope_positions[:, i] = table[:, positions[i]]
        return HostBatch(
            input_ids=input_ids,
            positions=rope_positions,
            slot_mapping=pages * block_size + positions % block_size,
            query_start_loc=np.arange(num + 1, dtype=np.int32),
            seq_lens=seq_lens,
            block_tables=self._block_tables(states, int(seq_lens.max())),
            sample_rows=np.arange(num, dtype=np.int64),
            max_query_len=1,
        )

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    def _device_media_rows(self, batch: HostBatch) -> MediaRows | None:
        if batch.media_dest is None:
            return None
        pages, rows = self._to_device(batch.media_page), self._to_device(batch.media_row)
        return MediaRows(self._to_device(batch.media_dest), self.embedding_view[pages, rows])

    def _device_inputs(
        self, batch: HostBatch
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, MediaRows | None]:
        to_device = self._to_device
        num_decodes = int(np.count_nonzero(np.diff(batch.query_start_loc) == 1))
        metadata = AttentionMetadata(
            query_start_loc=to_device(batch.query_start_loc),
            seq_lens=to_device(batch.seq_lens),
            block_tables=to_device(batch.block_tables),
            slot_mapping=to_device(batch.slot_mapping),
            max_query_len=batch.max_query_len,
            max_seq_len=int(batch.seq_lens.max()),
            num_tokens=int(batch.query_start_loc[-1]),
            split_decodes=num_decodes >= SPLIT_DECODES_FROM,
        )
        positions = to_device(np.ascontiguousarray(batch.positions))
        return to_device(batch.input_ids), positions, metadata, self._device_media_rows(batch)

    def _forward_context(self, metadata: AttentionMetadata) -> ForwardContext:
        return ForwardContext(metadata, self.backend, self.backend.plan(metadata, self.block_size))

    def _forward(self, batch: HostBatch) -> torch.Tensor:
        """One forward over the flattened batch: a graph replay when one was captured for its shape
        (decode-only steps by batch size, steps with prefill chunks by token count), else eager."""
        num_seqs = len(batch.seq_lens)
        if self.decode_graphs is not None and batch.max_query_len == 1:
            size = self.decode_graphs.padded_size(num_seqs)
            if size is not None:
                return self.decode_graphs.run(
                    size, batch.input_ids, batch.positions, batch.slot_mapping, batch.seq_lens,
                    batch.block_tables,
                )  # fmt: skip
        if self.mixed_graphs is not None and batch.max_query_len > 1:
            size = self.mixed_graphs.padded_size(len(batch.input_ids), num_seqs)
            if size is not None:
                return self.mixed_graphs.run(
                    size, self._to_device(batch.input_ids), batch.positions, batch.slot_mapping,
                    batch.query_start_loc, batch.seq_lens, batch.block_tables, self._device_media_rows(batch),
                )  # fmt: skip
        input_ids, positions, metadata, media = self._device_inputs(batch)
        with forward_context(self._forward_context(metadata)):
            if media is not None:
                return self.model(input_ids, positions, media)
            return self.model(input_ids, positions)

    def warm_up_kernels(self, max_model_len: int) -> None:
        """CUDA + Triton: compile the attention variants now (see kernel_warmup.py), before serving."""
        if self.device.type != "cuda" or self.backend.name != "triton":
            return
        from omniserve.worker.kernel_warmup import warm_up_attention

        layer = self.model.attention_layers()[0]
        try:
            with torch.inference_mode():
                calls = warm_up_attention(self.backend.attend, layer.k_cache, layer.v_cache, layer.num_heads,
                                          layer.scale, max_model_len)  # fmt: skip
            torch.cuda.synchronize(self.device)
        except Exception:  # noqa: BLE001 - an optimisation only: kernels then compile on first use, as before
            logger.warning("attention warm-up failed; variants compile on first use", exc_info=True)
            return
        logger.info("attention kernels warmed up (%d shapes)", calls)

    def capture_cuda_graphs(self, max_model_len: int) -> None:
        """Capture decode-only forwards by batch size and forwards with prefill chunks by token count
        (CUDA with a sync-free attention backend only), sharing one memory pool."""
        if self.device.type != "cuda" or not self.config.device.cuda_graphs or self.backend.name != "triton":
            return
        from omniserve.worker.cuda_graphs import DecodeGraphs
        from omniserve.worker.mixed_graphs import MAX_GRAPH_TOKENS, MixedGraphs

        scheduler = self.config.scheduler
        pool = torch.cuda.graph_pool_handle()
        max_tokens = min(scheduler.max_num_batched_tokens, MAX_GRAPH_TOKENS)
        self.mixed_graphs = MixedGraphs(
            self.model, self.backend, self.device, max_tokens, scheduler.max_num_seqs, max_model_len,
            self.block_size, self.uses_mrope,
        )  # fmt: skip
        self.mixed_graphs.capture(pool)
        max_batch = min(scheduler.max_num_seqs, 512)
        self.decode_graphs = DecodeGraphs(
            self.model, self.backend, self.device, max_batch, max_model_len, self.block_size, self.uses_mrope
        )
        self.decode_graphs.capture(pool)

    @torch.inference_mode()
    def execute(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(scheduler_output)
        if scheduler_output.encoder_jobs:
            self._run_encoder_jobs(scheduler_output.encoder_jobs)
        if scheduler_output.is_empty:
            return ModelRunnerOutput([], [], [])
        num_scheduled = scheduler_output.num_scheduled_tokens
        batch = self._build_batch(num_scheduled)
        hidden = self._forward(batch)  # [T, H]
        sample_rows = batch.sample_rows.tolist()

        sampling_ids = [rid for rid, row in zip(num_scheduled, sample_rows, strict=True) if row >= 0]
        if not sampling_ids:
            return ModelRunnerOutput([], [], [])
        rows = torch.tensor([row for row in sample_rows if row >= 0], device=self.device)
        logits = self.model.compute_logits(hidden[rows])  # [N, V]
        states = [self.states[rid] for rid in sampling_ids]
        token_ids, logprobs = self.sampler(
            logits,
            [
                SamplingRow(s.sampling_params, s.token_ids, s.num_prompt_tokens, s.eos_token_ids)
                for s in states
            ],
        )
        for state, token_id in zip(states, token_ids, strict=True):
            state.token_ids.append(token_id)
        return ModelRunnerOutput(sampling_ids, token_ids, logprobs)
