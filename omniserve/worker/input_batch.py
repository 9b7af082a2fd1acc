"""`BatchBuilder`: one step's scheduled tokens of every request, flattened into host arrays (`HostBatch`).

Decodes and prefill chunks alike go into one batch:

    request:          A (decode)   B (prefill chunk of 3)     C (decode)
    input_ids:        [ a5 |        b0 b1 b2 |                 c9 ]       T = 5
    positions:        [ 5  |        0  1  2  |                 9  ]
    query_start_loc:  [ 0,  1,                4,                   5 ]
    seq_lens:         [ 6,          3,                         10 ]
    slot_mapping[t] = page_ids[pos // block_size] * block_size + pos % block_size

A chunk covering media placeholders takes encoder rows from embedding pages (`media_*`); M-RoPE models get
positions [3, T]: a prompt token's from the request's table, a generated token's i + delta on all three axes.
With async scheduling a request's last token may still be on the device (`PLACEHOLDER` in its state, see
inflight.py): `pending_rows` / `pending_sources` say where it goes and where the runner gathers it from.
The runner keeps one `RequestState` per running request, in sync with the scheduler's diffs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omniserve.sampling_params import SamplingParams
from omniserve.worker.inflight import PLACEHOLDER


@dataclass
class HostBatch:
    """One step's flattened inputs on the host (T tokens of B requests)."""

    input_ids: np.ndarray  # [T] int64; PLACEHOLDER where the token is still on the device
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
    pending_rows: np.ndarray | None = None  # [m] rows of T whose token is still on the device
    pending_sources: np.ndarray | None = None  # [m] their rows in the last launched step's sampled ids


@dataclass
class RequestState:
    """The runner's copy of a running request, kept in sync by scheduler diffs."""

    request_id: str
    token_ids: list[int]  # prompt + outputs; the runner appends what it samples (PLACEHOLDER until known)
    num_prompt_tokens: int
    sampling_params: SamplingParams
    eos_token_ids: list[int]
    page_ids: list[int]
    num_computed_tokens: int
    mm_spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, num_tokens) per media item
    item_page_ids: dict[int, list[int]] = field(default_factory=dict)  # item -> embedding pages
    mrope_positions: np.ndarray | None = None  # [3, num_prompt_tokens]
    mrope_delta: int = 0
    sampled_row: int = -1  # while token_ids[-1] is PLACEHOLDER: its row in the last launched step's tokens
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


class BatchBuilder:
    def __init__(self, block_size: int, uses_mrope: bool, rows_per_page: int) -> None:
        self.block_size = block_size
        self.uses_mrope = uses_mrope
        self.rows_per_page = rows_per_page  # embedding rows per page

    def _media_rows(self, state: RequestState, start: int, end: int, first_row: int, out: list) -> None:
        """Append (batch rows, pages, rows in page) for every placeholder of [start, end) of this request."""
        rows_per_page = self.rows_per_page
        for index, (offset, length) in enumerate(state.mm_spans):
            lo, hi = max(start, offset), min(end, offset + length)
            if lo >= hi:
                continue
            item_rows = np.arange(lo - offset, hi - offset)
            pages = np.asarray(state.item_page_ids[index])[item_rows // rows_per_page]
            out.append((first_row + lo - start + np.arange(hi - lo), pages, item_rows % rows_per_page))

    def build(self, states: list[RequestState], num_scheduled: list[int]) -> HostBatch:
        """Flatten the step's tokens into host arrays (one pass over the scheduled requests):
        `num_scheduled[i]` tokens of `states[i]` from its `num_computed_tokens` on."""
        if len(states) == sum(num_scheduled):  # decode only: one token each
            return self._build_decode_batch(states)
        block_size = self.block_size
        num_requests = len(states)
        input_ids: list[int] = []
        positions, slots = [], []
        query_start_loc = np.zeros(num_requests + 1, dtype=np.int32)
        seq_lens = np.zeros(num_requests, dtype=np.int32)
        sample_rows = np.full(num_requests, -1, dtype=np.int64)
        media: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        pending_rows, pending_sources = [], []
        for row, (state, num_tokens) in enumerate(zip(states, num_scheduled, strict=True)):
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
                if state.token_ids[-1] == PLACEHOLDER:  # only a last token can be: see inflight.py
                    pending_rows.append(query_start_loc[row + 1] - 1)
                    pending_sources.append(state.sampled_row)
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
            pending_rows=np.asarray(pending_rows, dtype=np.int64) if pending_rows else None,
            pending_sources=np.asarray(pending_sources, dtype=np.int64) if pending_rows else None,
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
        pending_rows = np.flatnonzero(input_ids == PLACEHOLDER)
        pending_sources = np.fromiter(
            (states[row].sampled_row for row in pending_rows), dtype=np.int64, count=len(pending_rows)
        )
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
            pending_rows=pending_rows if len(pending_rows) else None,
            pending_sources=pending_sources if len(pending_rows) else None,
        )
