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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from omniserve.attention.backend import create_attention_backend
from omniserve.attention.forward_context import AttentionMetadata, ForwardContext, forward_context
from omniserve.config import EngineConfig
from omniserve.core.scheduler_output import ModelRunnerOutput, SchedulerOutput
from omniserve.models.loader import load_model
from omniserve.sampling_params import SamplingParams
from omniserve.worker.sampler import Sampler, SamplingRow

logger = logging.getLogger("omniserve")


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


class ModelRunner:
    def __init__(self, config: EngineConfig, model_path, hf_config, device: torch.device, dtype: torch.dtype):
        self.config = config
        self.device = device
        self.dtype = dtype
        self.block_size = config.cache.block_size
        self.model = load_model(model_path, hf_config, dtype, device, config.model.load_format, config.model.seed)
        self.backend = create_attention_backend(config.device.attention_backend, device)
        self.sampler = Sampler(device)
        self.states: dict[str, RequestState] = {}
        layers = self.model.attention_layers()
        self.num_layers = len(layers)
        self.num_kv_heads, self.head_dim = layers[0].num_kv_heads, layers[0].head_dim
        self.pool: torch.Tensor | None = None

    # ----- the page pool ---------------------------------------------------------------------------
    @property
    def page_bytes(self) -> int:
        element_size = torch.empty((), dtype=self.dtype).element_size()
        return self.num_layers * 2 * self.block_size * self.num_kv_heads * self.head_dim * element_size

    def determine_num_pages(self) -> int:
        """Pages that fit the memory budget: a byte budget on CPU; on GPU, the configured fraction of
        device memory minus weights and the activation peak of a profiling step at full token budget."""
        cache = self.config.cache
        if cache.num_kv_blocks is not None:
            return cache.num_kv_blocks
        if self.device.type != "cuda":
            return max(cache.cpu_kv_cache_bytes // self.page_bytes, 1)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        self._profile_step()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        free, total = torch.cuda.mem_get_info(self.device)
        outside_torch = (total - free) - torch.cuda.memory_reserved(self.device)
        available = total * cache.gpu_memory_utilization - peak - outside_torch
        num_pages = int(available // self.page_bytes)
        if num_pages < 1:
            raise RuntimeError(f"no GPU memory left for the KV pool (weights + activations use {peak / 2**30:.1f} "
                               f"GiB); raise gpu_memory_utilization or lower max_num_batched_tokens")
        return num_pages

    def _profile_step(self) -> None:
        """A forward at the full token budget, on a throwaway pool, to measure the activation peak."""
        num_tokens = self.config.scheduler.max_num_batched_tokens
        num_pages = -(-num_tokens // self.block_size)
        self.allocate_pool(num_pages)
        state = RequestState("profile", [0] * num_tokens, num_tokens, SamplingParams(max_tokens=1), [],
                             list(range(num_pages)), 0)
        self.states[state.request_id] = state
        num_rows = min(self.config.scheduler.max_num_seqs, num_tokens)
        with torch.inference_mode():
            input_ids, positions, metadata, _ = self._prepare_inputs({"profile": num_tokens})
            with forward_context(self._forward_context(metadata)):
                hidden = self.model(input_ids, positions)
            self.model.compute_logits(hidden[:num_rows])
        del self.states["profile"]
        self.pool = None

    def allocate_pool(self, num_pages: int) -> None:
        # [num_pages, num_layers, 2, block_size, Hkv, D]
        self.pool = torch.zeros(
            (num_pages, self.num_layers, 2, self.block_size, self.num_kv_heads, self.head_dim),
            dtype=self.dtype, device=self.device,
        )
        for index, layer in enumerate(self.model.attention_layers()):
            layer.bind_kv_cache(self.pool[:, index, 0], self.pool[:, index, 1])

    # ----- one step --------------------------------------------------------------------------------
    def _update_states(self, scheduler_output: SchedulerOutput) -> None:
        for request_id in scheduler_output.dropped_request_ids:
            self.states.pop(request_id, None)
        for new in scheduler_output.new_requests:
            self.states[new.request_id] = RequestState(
                new.request_id, list(new.token_ids), new.num_prompt_tokens, new.sampling_params,
                new.eos_token_ids, list(new.page_ids), new.num_computed_tokens,
            )
        for cached in scheduler_output.cached_requests:
            state = self.states[cached.request_id]
            state.page_ids.extend(cached.new_page_ids)
            state.num_computed_tokens = cached.num_computed_tokens

    def _prepare_inputs(
        self, num_scheduled: dict[str, int]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        """Flatten the step's tokens; also return, per request, the row whose logits it samples from
        (-1 when its chunk ends before its known tokens do)."""
        block_size = self.block_size
        input_ids, positions, slots, sample_rows = [], [], [], []
        query_start_loc, seq_lens = [0], []
        max_pages = 0
        for request_id, num_tokens in num_scheduled.items():
            state = self.states[request_id]
            start, end = state.num_computed_tokens, state.num_computed_tokens + num_tokens
            input_ids.extend(state.token_ids[start:end])
            pos = np.arange(start, end)
            positions.append(pos)
            slots.append(np.asarray(state.page_ids)[pos // block_size] * block_size + pos % block_size)
            query_start_loc.append(query_start_loc[-1] + num_tokens)
            seq_lens.append(end)
            sample_rows.append(query_start_loc[-1] - 1 if end == len(state.token_ids) else -1)
            max_pages = max(max_pages, -(-end // block_size))
        block_tables = np.zeros((len(seq_lens), max_pages), dtype=np.int32)
        for row, request_id in enumerate(num_scheduled):
            pages = self.states[request_id].page_ids[:max_pages]
            block_tables[row, : len(pages)] = pages

        device = self.device
        metadata = AttentionMetadata(
            query_start_loc=torch.tensor(query_start_loc, dtype=torch.int32, device=device),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
            block_tables=torch.from_numpy(block_tables).to(device),
            slot_mapping=torch.from_numpy(np.concatenate(slots)).to(device=device, dtype=torch.int64),
            max_query_len=max(np.diff(query_start_loc)),
            max_seq_len=max(seq_lens),
            num_tokens=query_start_loc[-1],
        )
        input_ids_t = torch.tensor(input_ids, dtype=torch.long, device=device)
        positions_t = torch.from_numpy(np.concatenate(positions)).to(device=device, dtype=torch.long)
        return input_ids_t, positions_t, metadata, sample_rows

    def _forward_context(self, metadata: AttentionMetadata) -> ForwardContext:
        return ForwardContext(metadata, self.backend, self.backend.plan(metadata, self.block_size))

    @torch.inference_mode()
    def execute(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(scheduler_output)
        if scheduler_output.is_empty:
            return ModelRunnerOutput([], [], [])
        num_scheduled = scheduler_output.num_scheduled_tokens
        input_ids, positions, metadata, sample_rows = self._prepare_inputs(num_scheduled)
        with forward_context(self._forward_context(metadata)):
            hidden = self.model(input_ids, positions)  # [T, H]

        sampling_ids = [rid for rid, row in zip(num_scheduled, sample_rows) if row >= 0]
        if not sampling_ids:
            return ModelRunnerOutput([], [], [])
        rows = torch.tensor([row for row in sample_rows if row >= 0], device=self.device)
        logits = self.model.compute_logits(hidden[rows])  # [N, V]
        states = [self.states[rid] for rid in sampling_ids]
        token_ids, logprobs = self.sampler(
            logits,
            [SamplingRow(s.sampling_params, s.token_ids, s.num_prompt_tokens, s.eos_token_ids) for s in states],
        )
        for state, token_id in zip(states, token_ids):
            state.token_ids.append(token_id)
        return ModelRunnerOutput(sampling_ids, token_ids, logprobs)
