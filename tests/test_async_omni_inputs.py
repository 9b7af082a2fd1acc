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
