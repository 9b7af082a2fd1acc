"""Programmatic dependent launch (PDL, Hopper and later): let a kernel start while its predecessor drains.

A kernel launched with `launch_pdl=True` may be scheduled before the previous kernel in its stream has
finished; it must execute `gdc_wait()` (griddepcontrol.wait: the predecessor has completed and its writes
are visible) before it touches any memory the predecessor reads or writes, which for our kernels means
before any load of activations and before any store (an output buffer may reuse memory the predecessor
is still reading). Only reads of weights, which nothing writes during a forward, may come before the wait.
`gdc_launch_dependents()`, once a kernel's main work is done (before its epilogue stores), lets the next
PDL kernel be scheduled; triggered at the start instead, the waiting programs of the next kernel slowed
large grids on the H200 (16x4096 decode attention 41.9 -> 47.7 us, RMSNorm of 4096 rows 34 -> 67 us).
Kernels launched without the attribute (cuBLAS, torch) keep full stream ordering on both sides, so a chain
may mix the two freely.

Stream capture records the launches as programmatic graph edges, so decode CUDA graphs keep the overlap.
Only launches of decode-sized batches (at most MAX_ROWS tokens or rows) use it: there a kernel runs a few
microseconds and the launch gap is a large share; on big grids it cost time on the H200 even with a late
trigger (prefill attention 374 -> 345 TFLOP/s, engine decode at batch 256 -5%).
Off on CPU (the interpreter has no griddepcontrol), before sm_90, and with OMNISERVE_PDL=0.
"""

from __future__ import annotations

import torch

from omniserve import envs

MAX_ROWS = 16
_ENABLED: dict[int, bool] = {}


def pdl_enabled(device: torch.device, num_rows: int) -> bool:
    """Whether a launch over `num_rows` tokens (rows) of a batch uses PDL."""
    if device.type != "cuda" or num_rows > MAX_ROWS or not envs.pdl():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _ENABLED:
        _ENABLED[index] = torch.cuda.get_device_capability(index)[0] >= 9
    return _ENABLED[index]
