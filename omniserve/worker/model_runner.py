"""`ModelRunner`: owns the model, the KV page pool tensor and the sampler; runs one step.

In: a `SchedulerOutput` (new requests in full, running ones as diffs). Out: a `ModelRunnerOutput` with a
token for every request whose scheduled tokens reach the end of its tokens. `launch` starts a step on the
device and returns an `InFlightStep` at once; its `result()` waits for the tokens (async scheduling, see
inflight.py: a request's last token may then still be on the device when the next step is built). `execute`
is both at once (sync scheduling).

One step flattens every request's scheduled tokens (decodes and prefill chunks alike) into one batch of
host arrays (input_batch.py), copies them up without a host sync (transfer.py) and runs one forward.

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

import numpy as np
import torch

from omniserve.attention.backend import create_attention_backend
from omniserve.attention.forward_context import AttentionMetadata, ForwardContext, forward_context
from omniserve.config import EngineConfig
from omniserve.core.scheduler_output import ModelRunnerOutput, SchedulerOutput
from omniserve.models.loader import load_model
from omniserve.models.qwen_multimodal import MediaRows
from omniserve.worker.embedding_pages import embedding_view, write_rows
from omniserve.worker.inflight import PLACEHOLDER, InFlightStep, PendingInputs
from omniserve.worker.input_batch import BatchBuilder, HostBatch, RequestState
from omniserve.worker.sampler import Sampler, SamplingRow
from omniserve.worker.transfer import to_device

logger = logging.getLogger("omniserve")
SPLIT_DECODES_FROM = 8  # eager steps with chunks: decodes get their own attention launch from this many


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
        self._in_flight: list[InFlightStep] = []  # launched, maybe not resolved yet (async: one at most)
        layers = self.model.attention_layers()
        self.num_layers = len(layers)
        self.num_kv_heads, self.head_dim = layers[0].num_kv_heads, layers[0].head_dim
        self.pool: torch.Tensor | None = None
        self.decode_graphs = None  # DecodeGraphs once captured
        self.mixed_graphs = None  # MixedGraphs once captured
        self.uses_mrope = getattr(self.model, "uses_mrope", False)
        self.hidden_size = self.model.model.embed_tokens.embedding_dim
        self.embedding_view: torch.Tensor | None = None  # [num_pages, rows_per_page, H]
        self.batch_builder = BatchBuilder(self.block_size, self.uses_mrope, self.embedding_rows_per_page)

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

    def _build_batch(self, num_scheduled: dict[str, int]) -> HostBatch:
        states = [self.states[request_id] for request_id in num_scheduled]
        return self.batch_builder.build(states, list(num_scheduled.values()))

    def _device_media_rows(self, batch: HostBatch) -> MediaRows | None:
        if batch.media_dest is None:
            return None
        pages, rows = to_device(batch.media_page, self.device), to_device(batch.media_row, self.device)
        return MediaRows(to_device(batch.media_dest, self.device), self.embedding_view[pages, rows])

    def _device_inputs(
        self, batch: HostBatch
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, MediaRows | None]:
        device = self.device
        # chunks and enough decodes: the decodes get their own launch (and tile shape)
        split_decodes = batch.max_query_len > 1 and (
            np.count_nonzero(np.diff(batch.query_start_loc) == 1) >= SPLIT_DECODES_FROM
        )
        metadata = AttentionMetadata(
            query_start_loc=to_device(batch.query_start_loc, device),
            seq_lens=to_device(batch.seq_lens, device),
            block_tables=to_device(batch.block_tables, device),
            slot_mapping=to_device(batch.slot_mapping, device),
            max_query_len=batch.max_query_len,
            max_seq_len=int(batch.seq_lens.max()),
            num_tokens=int(batch.query_start_loc[-1]),
            split_decodes=bool(split_decodes),
        )
        positions = to_device(np.ascontiguousarray(batch.positions), device)
        return to_device(batch.input_ids, device), positions, metadata, self._device_media_rows(batch)

    def _forward_context(self, metadata: AttentionMetadata) -> ForwardContext:
        return ForwardContext(metadata, self.backend, self.backend.plan(metadata, self.block_size))

    def _forward(self, batch: HostBatch, pending: PendingInputs | None = None) -> torch.Tensor:
        """One forward over the flattened batch: a graph replay when one was captured for its shape
        (decode-only steps by batch size, steps with prefill chunks by token count), else eager.
        `pending`: input tokens still on the device, scattered into the device input_ids."""
        num_seqs = len(batch.seq_lens)
        if self.decode_graphs is not None and batch.max_query_len == 1:
            size = self.decode_graphs.padded_size(num_seqs)
            if size is not None:
                return self.decode_graphs.run(size, batch.input_ids, batch.positions, batch.slot_mapping,
                                              batch.seq_lens, batch.block_tables, pending)  # fmt: skip
        if self.mixed_graphs is not None and batch.max_query_len > 1:
            size = self.mixed_graphs.padded_size(len(batch.input_ids), num_seqs)
            if size is not None:
                input_ids = to_device(batch.input_ids, self.device)
                if pending is not None:
                    pending.fill(input_ids)
                return self.mixed_graphs.run(
                    size, input_ids, batch.positions, batch.slot_mapping, batch.query_start_loc,
                    batch.seq_lens, batch.block_tables, self._device_media_rows(batch),
                )  # fmt: skip
        input_ids, positions, metadata, media = self._device_inputs(batch)
        if pending is not None:
            pending.fill(input_ids)
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

    def execute(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        """Run one step and wait for its tokens (sync scheduling)."""
        return self.launch(scheduler_output).result()

    @torch.inference_mode()
    def launch(self, scheduler_output: SchedulerOutput) -> InFlightStep:
        """Start one step on the device; returns without waiting for it (see inflight.py)."""
        self._update_states(scheduler_output)
        if scheduler_output.encoder_jobs:
            self._run_encoder_jobs(scheduler_output.encoder_jobs)
        if scheduler_output.is_empty:
            return InFlightStep()
        num_scheduled = scheduler_output.num_scheduled_tokens
        previous = self._previous_step([self.states[request_id] for request_id in num_scheduled])
        batch = self._build_batch(num_scheduled)
        pending = None
        if batch.pending_rows is not None:
            assert previous is not None and previous.sampled is not None, "a token on the device, but no step"
            sources = to_device(batch.pending_sources, self.device)
            pending = PendingInputs(
                to_device(batch.pending_rows, self.device), previous.sampled.token_ids[sources]
            )
        hidden = self._forward(batch, pending)  # [T, H]

        sample_rows = batch.sample_rows
        sampling_ids = [rid for rid, row in zip(num_scheduled, sample_rows.tolist(), strict=True) if row >= 0]
        if not sampling_ids:
            return InFlightStep()
        rows = to_device(sample_rows[sample_rows >= 0], self.device)
        logits = self.model.compute_logits(hidden[rows])  # [N, V]
        states = [self.states[rid] for rid in sampling_ids]
        sampled = self.sampler.sample(
            logits,
            [
                SamplingRow(s.sampling_params, s.token_ids, s.num_prompt_tokens, s.eos_token_ids)
                for s in states
            ],
        )
        destinations = []
        for row, state in enumerate(states):  # the token is known once the step is resolved
            state.token_ids.append(PLACEHOLDER)
            state.sampled_row = row
            destinations.append((state.token_ids, len(state.token_ids) - 1))
        step = InFlightStep(sampling_ids, sampled, destinations)
        self._in_flight.append(step)
        return step

    def _previous_step(self, states: list[RequestState]) -> InFlightStep | None:
        """The step whose sampled ids feed this one's pending input tokens, if it is still in flight. Older
        steps are resolved first (so every placeholder comes from one step), and that one too when a row
        needs its token on the host (penalties read the token values)."""
        self._in_flight = [step for step in self._in_flight if not step.resolved]
        for step in self._in_flight[:-1]:
            step.result()
        previous = self._in_flight[-1] if self._in_flight else None
        if previous is not None and any(
            state.sampling_params.needs_penalties and state.token_ids[-1] == PLACEHOLDER for state in states
        ):
            previous.result()  # sync fallback for this step
            previous = None
        self._in_flight = [previous] if previous is not None else []
        return previous
