"""The engine with attention_backend="triton" gives the torch backend's tokens (chunked prefill, preemption,
prefix hits). On CPU the kernels run in Triton's interpreter (set up by this folder's conftest)."""

from __future__ import annotations

import pytest
import torch

from omniserve import Omni, SamplingParams


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU engine runs Triton only in the interpreter; "
                    "on a GPU machine tests/test_gpu_engine.py covers the compiled path")
def test_triton_backend_matches_torch_backend(checkpoint_factory) -> None:
    path = checkpoint_factory("triton-engine", seed=1)
    generator = torch.Generator().manual_seed(0)
    prompts = [
        {"prompt_token_ids": torch.randint(0, 560, (n,), generator=generator).tolist()}
        for n in (1, 5, 12, 19)
    ]
    prompts.append({"prompt_token_ids": prompts[3]["prompt_token_ids"][:16] + [3]})  # shares 4 full blocks
    params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    setup = dict(device="cpu", dtype="float32", block_size=4, num_kv_blocks=10, max_num_batched_tokens=16)
    expected = [
        o.token_ids for o in Omni(str(path), attention_backend="torch", **setup).generate(prompts, params)
    ]
    omni = Omni(str(path), attention_backend="triton", **setup)
    assert omni.engine.runner.backend.name == "triton"
    assert [o.token_ids for o in omni.generate(prompts, params)] == expected
    stats = omni.stats()
    assert stats.num_preemptions > 0 and stats.prefix_cache_hits > 0
