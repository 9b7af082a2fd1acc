"""The start-up sweep that compiles the attention variants runs every combination with consistent shapes
(here through the Triton kernel in the interpreter, on a small sweep)."""

from __future__ import annotations

import pytest
import torch

from omniserve.attention.triton_backend import TritonAttentionBackend
from omniserve.worker.kernel_warmup import warm_up_attention


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU pool runs Triton only in the interpreter; "
                    "on a GPU machine the engine start runs the real sweep (tests/test_gpu_engine.py)")
def test_warm_up_sweep_runs_every_shape_through_the_kernel() -> None:
    backend = TritonAttentionBackend(torch.device("cpu"))
    pool = torch.randn(8, 2, 2, 4, 2, 16)  # [pages, layers, k|v, block, Hkv, D]
    outputs = []

    def attend(q, k_cache, v_cache, metadata, scale, plan):
        out = backend.attend(q, k_cache, v_cache, metadata, scale, plan)
        assert out.shape == q.shape
        outputs.append(out)
        return out

    calls = warm_up_attention(attend, pool[:, 0, 0], pool[:, 0, 1], num_q_heads=4, scale=0.25, max_seq_len=24,
                              query_lens=(1, 3, 9), batch_sizes=(1, 2), context_lens=(8, 64))  # fmt: skip
    assert calls == 20 == len(outputs)  # query_len 1: 2 x 2; 3 and 9: 2 x 2 x (one launch, two launches)
    assert all(torch.isfinite(out).all() for out in outputs)
