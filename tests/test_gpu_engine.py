"""The GPU engine path (CUDA only): Triton backend and CUDA graphs give the torch path's tokens; the pool is
sized from free memory after a profiling step."""

from __future__ import annotations

import pytest
import torch

from omniserve import Omni, SamplingParams

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def prompts() -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [
        {"prompt_token_ids": torch.randint(0, 560, (n,), generator=generator).tolist()}
        for n in (1, 3, 9, 17, 26, 40, 70, 5)
    ]


@pytest.fixture(scope="module")
def checkpoint(checkpoint_factory):
    return checkpoint_factory(
        "gpu", seed=1, hidden_size=128, num_attention_heads=4, num_key_value_heads=2, weight_scale=4.0
    )


def test_triton_backend_and_cuda_graphs_match_the_torch_path(checkpoint) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    common = dict(device="cuda", dtype="float32", block_size=4, num_kv_blocks=40, max_num_batched_tokens=32)
    reference = Omni(str(checkpoint), attention_backend="torch", **common).generate(prompts(), params)
    eager = Omni(str(checkpoint), attention_backend="triton", cuda_graphs=False, **common)
    graphed = Omni(str(checkpoint), attention_backend="triton", **common)
    assert graphed.engine.runner.decode_graphs is not None
    expected = [o.token_ids for o in reference]
    assert [o.token_ids for o in eager.generate(prompts(), params)] == expected
    assert [o.token_ids for o in graphed.generate(prompts(), params)] == expected
    assert graphed.engine.runner.mixed_graphs.num_replays > 0  # steps with chunks ran as graphs too
    assert graphed.stats().num_preemptions > 0  # the small pool forced recompute on the graph path too


def test_pool_is_sized_from_free_memory(checkpoint) -> None:
    omni = Omni(str(checkpoint), device="cuda", dtype="bfloat16", gpu_memory_utilization=0.3)
    runner = omni.engine.runner
    total = torch.cuda.get_device_properties(0).total_memory
    pool_bytes = runner.pool.numel() * runner.pool.element_size()
    assert 0.1 * total < pool_bytes < 0.3 * total
    out = omni.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_tokens=4, ignore_eos=True))[0]
    assert len(out.token_ids) == 4


def test_media_prompts_through_graphs_match_the_torch_path(tmp_path) -> None:
    """Tiny Qwen2.5-Omni: image + audio prompts beside decodes; chunks with media rows replay the graphs of
    steps with prefill chunks (embeddings merged into the static buffer) and match the torch path."""
    import numpy as np
    from PIL import Image

    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint

    path = build_qwen2_5_omni_checkpoint(tmp_path / "omni", seed=7, weight_scale=4.0)

    def prompt(index: int) -> dict:
        rng = np.random.default_rng(index)
        picture = Image.fromarray(rng.integers(0, 256, (56 + 28 * index, 84, 3), dtype=np.uint8))
        audio = (0.3 * np.sin(np.arange(16000 * (1 + index)) / (7.0 + index))).astype(np.float32)
        return {"messages": [{"role": "user", "content": [
            {"type": "image", "image": picture}, {"type": "audio", "audio": (audio, 16000)},
            {"type": "text", "text": f"Describe {index}."}]}]}  # fmt: skip

    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    common = dict(device="cuda", dtype="float32", block_size=4, num_kv_blocks=600, max_num_batched_tokens=48,
                  encoder_mode="inprocess")  # fmt: skip
    torch_path = Omni(str(path), attention_backend="torch", **common)
    reference = torch_path.generate([prompt(i) for i in range(3)], params)
    graphed = Omni(str(path), attention_backend="triton", **common)
    outputs = graphed.generate([prompt(i) for i in range(3)], params)
    assert [o.token_ids for o in outputs] == [o.token_ids for o in reference]
    assert graphed.engine.runner.mixed_graphs.num_replays > 0


def test_async_scheduling_on_cuda_equals_sync(checkpoint, monkeypatch) -> None:
    """auto = on for CUDA: decode inputs come from the device (scattered into the graph's static input_ids),
    tokens and logprobs come back through pinned memory; greedy, seeded, penalized and stopped requests give
    sync mode's tokens."""
    from omniserve.worker.inflight import PendingInputs

    filled = []
    fill = PendingInputs.fill
    monkeypatch.setattr(
        PendingInputs, "fill", lambda self, ids: (filled.append(len(self.rows)), fill(self, ids))
    )
    common = dict(device="cuda", dtype="float32", block_size=4, num_kv_blocks=40, max_num_batched_tokens=32)
    sync = Omni(str(checkpoint), async_scheduling="off", **common)
    overlapped = Omni(str(checkpoint), **common)
    assert overlapped.engine.async_scheduling and overlapped.engine.runner.decode_graphs is not None
    greedy = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, logprobs=2)
    expected = sync.generate(prompts(), greedy)
    got = overlapped.generate(prompts(), greedy)
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    for ours, theirs in zip(got, expected, strict=True):
        assert [lp.logprob for lp in ours.logprobs] == pytest.approx(
            [lp.logprob for lp in theirs.logprobs], abs=1e-4
        )
    assert sum(filled) > 0 and overlapped.stats().num_preemptions > 0
    mixed = [
        SamplingParams(temperature=1.0, top_p=0.9, seed=7, max_tokens=10, ignore_eos=True),
        SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True, repetition_penalty=1.5),
        SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=[expected[2].token_ids[3]]),
        SamplingParams(temperature=0.8, seed=3, max_tokens=3, min_tokens=2, ignore_eos=True),
    ] * 2
    assert [o.token_ids for o in overlapped.generate(prompts(), mixed)] == [
        o.token_ids for o in sync.generate(prompts(), mixed)
    ]
    stats = overlapped.stats()
    assert stats.num_kv_blocks_free == stats.num_kv_blocks_total


def test_skinny_gemm_and_pdl_match_cublas_without_pdl(checkpoint, monkeypatch) -> None:
    """Decode-sized projections on the Triton skinny GEMM with programmatic dependent launch (the default
    on Hopper) give cuBLAS's tokens; PDL on and off give bit-identical logprobs (a missing gdc_wait would
    let a kernel read its predecessor's output early and show up here)."""
    common = dict(device="cuda", dtype="float32", block_size=4, num_kv_blocks=40, max_num_batched_tokens=32)
    greedy = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, logprobs=2)
    runs = {}
    for skinny, pdl in (("0", "0"), ("1", "0"), ("1", "1")):
        monkeypatch.setenv("OMNISERVE_SKINNY_GEMM", skinny)
        monkeypatch.setenv("OMNISERVE_PDL", pdl)
        runs[skinny, pdl] = Omni(str(checkpoint), **common).generate(prompts(), greedy)
    cublas, no_pdl, with_pdl = runs["0", "0"], runs["1", "0"], runs["1", "1"]
    assert [o.token_ids for o in no_pdl] == [o.token_ids for o in cublas]
    for ours, theirs in zip(no_pdl, cublas, strict=True):
        assert [lp.logprob for lp in ours.logprobs] == pytest.approx(
            [lp.logprob for lp in theirs.logprobs], abs=1e-4
        )
    assert [o.token_ids for o in with_pdl] == [o.token_ids for o in no_pdl]
    assert [[lp.logprob for lp in o.logprobs] for o in with_pdl] == [
        [lp.logprob for lp in o.logprobs] for o in no_pdl
    ]
