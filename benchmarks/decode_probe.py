"""Shared driver of the decode-kernel probes (probe_tma_decode.py, probe_packed_heads.py): each probe
supplies its variants; this times them against SDPA and our default kernel on the same inputs (H200)."""

from __future__ import annotations

import functools

import torch
import triton
from bench_kernels import (
    DTYPE,
    HEAD_DIM,
    KV_HEADS,
    ROTATE_BYTES,
    PagedBatch,
    graph_ms,
    per_second,
    rel_error,
)


def compare_decode_variants(shapes: list[tuple[int, int]], variants_of) -> None:
    """Probes of other decode kernels: for each (batch, context), SDPA, our default kernel and each
    (label, fn(PagedBatch) -> out[, checked]) of `variants_of(batch, context)`, checked against SDPA (rel
    err above 2e-2: no figure, unless the variant says checked=False: a load-only diagnostic) and timed as
    graph replays over input copies; prints TB/s of K+V as a table."""
    rows = []
    for batch, seq_len in shapes:
        kv_bytes = 2 * batch * seq_len * KV_HEADS * HEAD_DIM * DTYPE.itemsize
        tbps = functools.partial(per_second, kv_bytes, unit=1e12)
        copies = [PagedBatch(batch, seq_len, 1) for _ in range(max(1, triton.cdiv(ROTATE_BYTES, kv_bytes)))]
        reference = copies[0].sdpa()
        shape = f"{batch}x{seq_len}"
        rows.append((shape, "sdpa", tbps(graph_ms([c.sdpa for c in copies])), 0.0))
        rows.append((shape, "ours (default)", tbps(graph_ms([c.ours for c in copies])),
                     rel_error(copies[0].ours(), reference)))
        for variant in variants_of(batch, seq_len):
            label, fn, checked = (*variant, True)[:3]
            try:
                error = rel_error(fn(copies[0]).clone(), reference)
                timed = tbps(graph_ms([functools.partial(fn, c) for c in copies]))
                valid = error < 2e-2 or not checked
                rows.append((shape, label, timed if valid else float("nan"), error))
                print(f"{shape} {label}: {rows[-1][2]:.2f} TB/s", flush=True)
            except Exception as exc:  # noqa: BLE001 - a probe: report and go on
                print(f"{shape} {label}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                rows.append((shape, label, float("nan"), float("nan")))
        del copies, reference
        torch.cuda.empty_cache()
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print("| shape | variant | TB/s | rel err |\n| --- | --- | --- | --- |")
    for shape, label, value, error in rows:
        print(f"| {shape} | {label} | {value:.2f} | {error:.1e} |")
