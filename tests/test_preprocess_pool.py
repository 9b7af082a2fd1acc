"""`PreprocessPool` (side-stream mode's media preparation in processes) on the CPU: the tensors equal
in-process preparation, unusable media fail their job only, and a killed process fails its jobs and is
replaced."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "frontend"))
from mm_test_media import image, png_bytes, speech  # noqa: E402
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_prepare import MediaPreparer

from omniserve.worker.preprocess_pool import PreprocessPool, failure_message


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint
    from omniserve.frontend.multimodal_processor import build_multimodal_processor
    from omniserve.omni import load_tokenizer

    path = build_qwen2_5_omni_checkpoint(tmp_path_factory.mktemp("pre") / "ckpt", seed=4)
    return path, build_multimodal_processor(path, load_tokenizer(path))


def plans(mm, data: dict):
    text = "".join(
        {"image": "<|vision_bos|><|IMAGE|><|vision_eos|>", "audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"}[m]
        * (len(v) if isinstance(v, list) else 1)
        for m, v in data.items()
    )
    return [item.plan for item in mm.process({"prompt": text, "multi_modal_data": data}).mm_items]


def test_pool_prepares_like_in_process_and_survives_bad_media_and_a_crash(omni) -> None:
    path, mm = omni
    good = plans(mm, {"image": png_bytes(image(60, 90, 1)), "audio": (speech(1.0, seed=3), 16000)})
    (broken,) = plans(mm, {"image": png_bytes(image(60, 90, 2))[:80]})  # header fine, pixels truncated
    preparer = MediaPreparer.from_checkpoint(path)
    pool = PreprocessPool(str(path), num_processes=1)
    try:
        for plan, future in [(plan, pool.submit(plan)) for plan in good]:
            expected, got = preparer.prepare(plan), future.result(timeout=120)
            assert got.modality == expected.modality and got.grid_thw == expected.grid_thw
            for name in ("pixel_values", "features"):
                a, b = getattr(expected, name), getattr(got, name)
                assert (a is None and b is None) or torch.equal(a, b)
        error = pool.submit(broken).exception(timeout=120)
        assert isinstance(error, MediaError) and "image 0: corrupt or truncated" in str(error)
        assert pool.submit(good[0]).result(timeout=120).pixel_values is not None  # still serving

        # a process that dies fails what it had, and the next job gets a fresh process
        (pid,) = [p.pid for p in pool._executor._processes.values()]
        os.kill(pid, signal.SIGSTOP)
        stuck = pool.submit(good[1])
        os.kill(pid, signal.SIGKILL)
        error = stuck.exception(timeout=120)
        assert "preprocessing process died" in failure_message(error)
        after = pool.submit(good[1]).result(timeout=120)
        assert torch.equal(after.features, preparer.prepare(good[1]).features)
        assert [p.pid for p in pool._executor._processes.values()] != [pid]
    finally:
        pool.shutdown()
    assert np.isfinite(after.features.numpy()).all()


def test_pool_hands_tensors_over_in_the_towers_dtype(omni) -> None:
    """Cast where they are made (the towers cast first thing anyway): same values, half the bytes in bf16."""
    path, mm = omni
    (plan,) = plans(mm, {"image": png_bytes(image(60, 90, 6))})
    pool = PreprocessPool(str(path), num_processes=1, transfer_dtype=torch.bfloat16)
    try:
        pool.warm_up()
        got = pool.submit(plan).result(timeout=120)
    finally:
        pool.shutdown()
    expected = MediaPreparer.from_checkpoint(path).prepare(plan).pixel_values.to(torch.bfloat16)
    assert got.pixel_values.dtype == torch.bfloat16 and torch.equal(got.pixel_values, expected)
