"""Python's cyclic garbage collector in a process that holds one engine for its whole life.

After startup an engine process tracks about half a million objects: the model's modules and parameters,
torch's and Triton's caches, the tokenizer, the CUDA graphs' bookkeeping. A full (generation 2)
collection walks every one of them. On the H200 machine one such pass took 427 ms in the middle of a
batch-256 decode (benchmarks/results/decode.md), and every stream stalled for that time. Requests that
live across collections (a long decode) are promoted to generation 2 and trigger full passes again and again.

`freeze_startup_heap` collects once, then moves everything that survives into the permanent
generation (`gc.freeze`). Later collections walk only what was allocated since: the requests and
outputs in flight. The engine process calls it once the engine is built, and each encoder worker once
its towers and preprocessors are loaded (worker/encoder_worker.py).

Frozen objects are never collected. A process that builds and drops engines, such as a test run or a
notebook, must not freeze (its dropped engines' reference cycles would stay, with their GPU memory), or
must call `gc.unfreeze()` when it drops one. So `EngineCore` itself never freezes.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect garbage, then freeze what is left. Returns the number of frozen objects."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
