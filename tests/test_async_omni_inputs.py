"""AsyncOmni processes prompts in a small thread pool: a prompt whose processing is slow (a long video to
decode) does not hold up the prompts submitted after it."""

from __future__ import annotations

import asyncio
import threading

from omniserve import SamplingParams
from omniserve.async_omni import INPUT_THREADS, AsyncOmni


def test_a_slow_prompt_does_not_block_the_next_one(checkpoint_factory) -> None:
    assert INPUT_THREADS > 1
    path = checkpoint_factory("async-inputs", seed=3)
    omni = AsyncOmni(str(path), device="cpu", dtype="float32", num_kv_blocks=64)
    fast_done = threading.Event()
    process = omni.input_processor.process

    def gated_process(request_id, prompt, params):
        if request_id == "slow":  # held until the request behind it went through
            assert fast_done.wait(timeout=60), "the fast prompt waited behind the slow one"
        return process(request_id, prompt, params)

    omni.input_processor.process = gated_process
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)

    async def run() -> list[str]:
        async def one(request_id: str) -> str:
            stream = await omni.add_request({"prompt_token_ids": [5, 6, 7]}, params, request_id)
            if request_id == "fast":
                fast_done.set()
            async for delta in stream:
                if delta.finish_reason is not None:
                    return request_id
            raise AssertionError("stream ended without a finish reason")

        slow = asyncio.create_task(one("slow"))
        await asyncio.sleep(0.05)  # the slow prompt is in its worker thread first
        fast = asyncio.create_task(one("fast"))
        done = []
        for next_done in asyncio.as_completed([slow, fast], timeout=120):
            done.append(await next_done)
        return done

    try:
        assert asyncio.run(run()) == ["fast", "slow"]
    finally:
        omni.shutdown()


def test_stored_media_live_until_every_sample_is_done_or_aborted(tmp_path) -> None:
    """The media store holds a prompt's files while any of its n samples runs; finishing or aborting the
    stream frees them (nothing piles up on disk)."""
    import numpy as np
    from PIL import Image

    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint

    path = build_qwen2_5_omni_checkpoint(tmp_path / "ckpt", seed=2, weight_scale=4.0)
    omni = AsyncOmni(str(path), device="cpu", dtype="float32", num_kv_blocks=128, block_size=4)
    store = omni.input_processor.multimodal.store
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8))
    prompt = {"prompt": "<|vision_bos|><|IMAGE|><|vision_eos|> what?", "multi_modal_data": {"image": picture}}
    params = SamplingParams(temperature=0.8, max_tokens=4, ignore_eos=True)

    async def run() -> None:
        stream = await omni.add_request(prompt, params, "two", n=2)
        assert store.num_files == 1
        finished = 0
        async for delta in stream:
            finished += delta.finish_reason is not None
            if finished == 1:
                assert store.num_files == 1  # the other sample still runs
        assert finished == 2 and store.num_files == 0
        stream = await omni.add_request(prompt, params, "dropped")
        assert store.num_files == 1
        stream.abort()
        assert store.num_files == 0

    try:
        asyncio.run(run())
    finally:
        omni.shutdown()
    assert store.num_files == 0
