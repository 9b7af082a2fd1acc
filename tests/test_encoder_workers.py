"""Encoder worker processes on CPU (shared-memory pool) with a tiny Qwen2.5-Omni checkpoint: the same greedy
tokens as in-process encoding; a killed worker fails its request with an error, is restarted, and the engine
keeps serving."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from PIL import Image

from omniserve.config import EngineConfig
from omniserve.core.engine_core import EngineCore
from omniserve.core.messages import EngineCoreRequest
from omniserve.sampling_params import SamplingParams

MAX_TOKENS = 6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint

    return build_qwen2_5_omni_checkpoint(tmp_path_factory.mktemp("omni") / "ckpt", weight_scale=4.0)


@pytest.fixture(scope="module")
def mm(checkpoint):
    """The checkpoint's frontend processor: plans items, stores their sources."""
    from omniserve.frontend.multimodal_processor import build_multimodal_processor
    from omniserve.omni import load_tokenizer

    return build_multimodal_processor(checkpoint, load_tokenizer(checkpoint))


def engine(checkpoint, mode: str, async_scheduling: str = "auto") -> EngineCore:
    config = EngineConfig.from_kwargs(
        model=str(checkpoint), device="cpu", dtype="float32", num_kv_blocks=96, block_size=16,
        max_num_batched_tokens=48, encoder_mode=mode, async_scheduling=async_scheduling,
    )  # fmt: skip
    return EngineCore(config)


@pytest.fixture(scope="module")
def inprocess(checkpoint):
    return engine(checkpoint, "inprocess")


@pytest.fixture(scope="module")
def workers(checkpoint):
    core = engine(checkpoint, "workers")
    yield core
    core.shutdown()


PLACEHOLDER = {
    "image": "<|vision_bos|><|IMAGE|><|vision_eos|>",
    "audio": "<|audio_bos|><|AUDIO|><|audio_eos|>",
    "video": "<|vision_bos|><|VIDEO|><|vision_eos|>",
}


def media(modality: str, seed: int):
    """A random item of `modality`; a video comes with its audio track (encoded as audio in video)."""
    rng = np.random.default_rng(seed)
    if modality == "image":
        return Image.fromarray(rng.integers(0, 256, (56 + 4 * (seed % 3), 84, 3), dtype=np.uint8))
    sound = (0.1 * rng.standard_normal(16000 + 2000 * (seed % 3))).astype(np.float32)
    if modality == "audio":
        return (sound, 16000)
    return {"video": rng.integers(0, 256, (4, 56, 84, 3), dtype=np.uint8), "audio": (sound, 16000)}


def request(mm, request_id: str, modalities: list[str], seed: int) -> EngineCoreRequest:
    """Text, then each item's placeholder and more text, through the real frontend (plans, stored sources)."""
    text, data = "look at this:", {}
    for index, modality in enumerate(modalities):
        text += f" {PLACEHOLDER[modality]} and"
        data.setdefault(modality, []).append(media(modality, seed + index))
    processed = mm.process(
        {
            "prompt": text,
            "multi_modal_data": data,
            "mm_processor_kwargs": {"use_audio_in_video": "video" in data},
        }
    )
    return EngineCoreRequest(
        request_id, processed.prompt_token_ids, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS), [],
        MAX_TOKENS, time.monotonic(), processed.mm_items, processed.mrope_positions, processed.mrope_delta,
    )  # fmt: skip


def run(core: EngineCore, requests: list[EngineCoreRequest], timeout_s: float = 60.0):
    """Add `requests`, step until nothing is left: request id -> (token ids, finish reason, error) of every
    request that produced an output (also those added before)."""
    results: dict[str, tuple[list[int], str | None, str | None]] = {}
    for r in requests:
        core.add_request(r)
    deadline = time.monotonic() + timeout_s
    while core.has_unfinished_requests():
        assert time.monotonic() < deadline, "requests did not finish"
        for output in core.step():
            tokens, _, _ = results.get(output.request_id, ([], None, None))
            results[output.request_id] = (tokens + output.new_token_ids, output.finish_reason, output.error)
    return results


def test_workers_give_the_same_greedy_tokens_as_in_process_encoding(mm, inprocess, workers) -> None:
    assert workers.encoders is not None and {w.spec.kind for w in workers.encoders.workers} == {
        "vision",
        "video",
        "audio",
    }
    # each worker froze its startup heap (towers, preprocessors) out of the garbage collector's passes
    assert all(w.ready and w.gc_frozen_objects > 10_000 for w in workers.encoders.workers)
    batch = [
        request(mm, "image", ["image"], 1),
        request(mm, "audio", ["audio"], 2),
        request(mm, "video+audio", ["video"], 3),
        request(mm, "mixed", ["image", "audio", "image"], 4),  # several chunks, items across them
    ]
    expected = run(inprocess, batch)
    got = run(workers, batch)
    assert all(len(tokens) == MAX_TOKENS and reason == "length" for tokens, reason, _ in expected.values())
    assert got == expected
    assert workers.scheduler.media.num_in_flight == 0


@pytest.mark.parametrize("mode", ["inprocess", "workers", "side_stream"])
def test_async_scheduling_gives_the_same_tokens_with_every_encoder_mode(
    checkpoint, mm, inprocess, mode
) -> None:
    """Async scheduling: in-process jobs run in the launched step, side-stream jobs in stream order, worker
    jobs are sent once the step in flight is done (pages freed under it may be theirs)."""
    batch = [
        request(mm, "image", ["image"], 1),
        request(mm, "video+audio", ["video"], 3),
        request(mm, "mixed", ["image", "audio", "image"], 4),
    ]
    expected = run(inprocess, batch)
    core = engine(checkpoint, mode, async_scheduling="on")
    try:
        assert run(core, batch) == expected
        assert core.scheduler.media.num_in_flight == 0 and core._in_flight is None
        assert core.stats().num_kv_blocks_free == core.stats().num_kv_blocks_total
        if mode == "workers":
            assert core._held_jobs is not None and core._held_jobs.held == []
    finally:
        core.shutdown()


def test_a_killed_worker_fails_its_request_is_restarted_and_serving_goes_on(mm, inprocess, workers) -> None:
    vision = next(w for w in workers.encoders.workers if w.spec.kind == "vision")
    old_pid = vision.process.pid
    os.kill(old_pid, signal.SIGSTOP)  # it cannot take the job: the job is surely in flight when it dies
    try:
        victim = request(mm, "victim", ["image"], 10)
        workers.add_request(victim)
        workers.step()
        assert workers.scheduler.media.num_in_flight == 1
    finally:
        os.kill(old_pid, signal.SIGKILL)
    bystander = make_plain_request("bystander")
    results = run(workers, [bystander])  # the victim is already in; it finishes within this run too
    tokens, reason, error = results["victim"]
    assert reason == "error" and "vision encoder worker 0" in error and "died" in error, error
    assert vision.process.pid != old_pid  # restarted
    assert len(results["bystander"][0]) == MAX_TOKENS
    follow = request(mm, "follow", ["image"], 11)
    assert run(workers, [follow]) == run(inprocess, [request(mm, "follow", ["image"], 11)])
    assert workers.scheduler.media.num_in_flight == 0


def make_plain_request(request_id: str) -> EngineCoreRequest:
    return EngineCoreRequest(
        request_id,
        [31, 32, 33, 34],
        SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS),
        [],
        MAX_TOKENS,
        time.monotonic(),
    )


def test_encoder_options_are_validated_and_become_cli_flags() -> None:
    import argparse

    from omniserve.cli_args import add_engine_arguments, engine_kwargs_from_args

    with pytest.raises(ValueError, match="encoder_mode"):
        EngineConfig.from_kwargs(encoder_mode="threads")
    with pytest.raises(ValueError, match="num_audio_workers"):
        EngineConfig.from_kwargs(num_audio_workers=0)
    with pytest.raises(ValueError, match="encoder_device"):
        EngineConfig.from_kwargs(encoder_device="tpu")
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(["--encoder-mode", "workers", "--num-video-workers", "2"])
    config = EngineConfig.from_kwargs(**engine_kwargs_from_args(args))
    assert (config.encoder.encoder_mode, config.encoder.num_video_workers) == ("workers", 2)


def test_side_stream_mode_gives_the_inprocess_tokens(tmp_path) -> None:
    """encoder_mode="side_stream" goes through the asynchronous scheduling path (on the CPU its jobs run at
    launch and are reported at the next poll); outputs equal in-process encoding."""
    import numpy as np
    from PIL import Image

    from omniserve import Omni, SamplingParams
    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint

    path = build_qwen2_5_omni_checkpoint(tmp_path / "ckpt", seed=5, weight_scale=4.0)
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    sound = (0.1 * rng.standard_normal(24000)).astype(np.float32)
    prompts = [
        {"prompt": "<|vision_bos|><|IMAGE|><|vision_eos|> what?", "multi_modal_data": {"image": picture}},
        {
            "prompt": "hear <|audio_bos|><|AUDIO|><|audio_eos|> now",
            "multi_modal_data": {"audio": (sound, 16000)},
        },
        "plain text meanwhile",
    ]
    params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    setup = dict(dtype="float32", block_size=4, num_kv_blocks=256, max_num_batched_tokens=24)
    expected = [o.token_ids for o in Omni(str(path), **setup).generate(prompts, params)]
    side = Omni(str(path), encoder_mode="side_stream", **setup)
    assert [o.token_ids for o in side.generate(prompts, params)] == expected
    assert side.stats().num_kv_blocks_free == side.stats().num_kv_blocks_total
    for mode in ("inprocess", "side_stream"):  # M-RoPE positions and media rows with async scheduling too
        overlapped = Omni(str(path), encoder_mode=mode, async_scheduling="on", **setup)
        assert [o.token_ids for o in overlapped.generate(prompts, params)] == expected


def test_memory_profile_runs_the_encoders_at_the_full_encoder_budget(tmp_path, monkeypatch) -> None:
    """The GPU pool is sized after a profiling step; for in-process encoding that step also runs both towers
    at `max_num_encoder_tokens` rows, so their activation peak is accounted for."""
    from omniserve import Omni
    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint
    from omniserve.models.qwen_multimodal import QwenMultimodalForCausalLM
    from omniserve.worker.memory_sizing import profile_encoders

    path = build_qwen2_5_omni_checkpoint(tmp_path / "ckpt", seed=6)
    omni = Omni(str(path), num_kv_blocks=64, max_num_encoder_tokens=96)
    encoded: list[list[int]] = []
    original = QwenMultimodalForCausalLM.encode_many

    def counting(self, items):
        rows = original(self, items)
        encoded.append([r.shape[0] for r in rows])
        return rows

    monkeypatch.setattr(QwenMultimodalForCausalLM, "encode_many", counting)
    profile_encoders(omni.engine.runner)
    ((image_rows, audio_rows),) = encoded
    assert image_rows >= 96 and 90 <= audio_rows <= 100
