"""The engine with async scheduling on, on the CPU (nothing overlaps there, but it is the same code path):
each step is launched before the step before is read back, its decode inputs come from the device. Greedy
tokens and logprobs equal sync mode through chunked prefill, preemption and prefix caching; stop tokens and
max_tokens are exact; an abort while a step is in flight frees everything; penalties (which read the step in
flight back first) and seeded sampling give sync mode's tokens; the engine process serves the same."""

from __future__ import annotations

import time

import pytest
import torch

from omniserve import Omni, SamplingParams
from omniserve.config import EngineConfig
from omniserve.core.engine_core import EngineCore
from omniserve.core.messages import EngineCoreRequest
from omniserve.core.scheduler import Scheduler
from omniserve.worker.inflight import PendingInputs

# Small budget and pool: chunked prefill (40 > 16), preemption, and prefix-cache hits (shared prefix).
TIGHT = dict(dtype="float32", block_size=4, num_kv_blocks=24, max_num_batched_tokens=16, max_num_seqs=8)


@pytest.fixture(scope="module")
def checkpoint(checkpoint_factory):
    return checkpoint_factory("gqa-untied", seed=1, num_attention_heads=4, num_key_value_heads=2)


def prompts() -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    shared = torch.randint(0, 560, (21,), generator=generator).tolist()
    ids = [torch.randint(0, 560, (n,), generator=generator).tolist() for n in (1, 3, 9, 17, 26, 40)]
    return [{"prompt_token_ids": p} for p in ids + [shared + [5, 6, 7], shared + [8]]]


def generate(checkpoint, mode: str, params, setup=TIGHT) -> tuple[list, Omni]:
    omni = Omni(str(checkpoint), async_scheduling=mode, **setup)
    assert omni.engine.async_scheduling == (mode == "on")
    return omni.generate(prompts(), params), omni


@pytest.fixture
def counters(monkeypatch) -> dict[str, int]:
    """Counts input tokens taken from the device, and preemptions of requests with a token in flight."""
    counts = {"pending_inputs": 0, "preempted_with_pending": 0}
    fill, preempt = PendingInputs.fill, Scheduler._preempt

    def counting_fill(self, input_ids):
        counts["pending_inputs"] += len(self.rows)
        return fill(self, input_ids)

    def counting_preempt(self, request):
        counts["preempted_with_pending"] += request.num_pending_tokens > 0
        return preempt(self, request)

    monkeypatch.setattr(PendingInputs, "fill", counting_fill)
    monkeypatch.setattr(Scheduler, "_preempt", counting_preempt)
    return counts


def test_auto_is_off_on_the_cpu_and_the_option_is_validated(checkpoint) -> None:
    import argparse

    from omniserve.cli_args import add_engine_arguments, engine_kwargs_from_args

    assert Omni(str(checkpoint), dtype="float32", num_kv_blocks=16).engine.async_scheduling is False
    with pytest.raises(ValueError, match="async_scheduling"):
        EngineConfig.from_kwargs(async_scheduling="yes")
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(["--async-scheduling", "on"])
    assert EngineConfig.from_kwargs(**engine_kwargs_from_args(args)).scheduler.async_scheduling == "on"


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_greedy_tokens_and_logprobs_equal_sync_mode(checkpoint, counters, prefix_caching: bool) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True, logprobs=2)
    setup = dict(TIGHT, enable_prefix_caching=prefix_caching)
    expected, _ = generate(checkpoint, "off", params, setup)
    assert counters["pending_inputs"] == 0
    got, omni = generate(checkpoint, "on", params, setup)
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    for ours, theirs in zip(got, expected, strict=True):
        assert [lp.logprob for lp in ours.logprobs] == pytest.approx([lp.logprob for lp in theirs.logprobs])
        for mine, reference in zip(ours.logprobs, theirs.logprobs, strict=True):
            assert [i for i, _ in mine.top] == [i for i, _ in reference.top]
            assert [v for _, v in mine.top] == pytest.approx([v for _, v in reference.top])
    stats = omni.stats()
    assert stats.num_kv_blocks_free == stats.num_kv_blocks_total
    assert stats.num_preemptions > 0 and (stats.prefix_cache_hits > 0) == prefix_caching
    assert counters["pending_inputs"] > 0  # decode inputs came from the device
    assert counters["preempted_with_pending"] > 0  # victims with a token in flight resumed with it


def test_stop_tokens_min_tokens_and_max_tokens_are_exact(checkpoint) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    reference, _ = generate(checkpoint, "off", greedy)
    params = []
    for index, output in enumerate(reference):
        stop = output.token_ids[index % 4]  # stops at its first occurrence: the first token, or later
        params.append(
            SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=[stop], min_tokens=index % 3)
            if index % 2 == 0
            else SamplingParams(temperature=0.0, max_tokens=1 + index % 5, ignore_eos=True)
        )
    expected = Omni(str(checkpoint), async_scheduling="off", **TIGHT).generate(prompts(), params)
    got = Omni(str(checkpoint), async_scheduling="on", **TIGHT).generate(prompts(), params)
    assert [(o.token_ids, o.finish_reason) for o in got] == [(o.token_ids, o.finish_reason) for o in expected]
    for output, param in zip(got, params, strict=True):
        if param.stop_token_ids:  # ends on its stop id, or runs to max_tokens when min_tokens masked it
            stop = param.stop_token_ids[0]
            assert stop not in output.token_ids[: param.min_tokens]
            if param.min_tokens == 0:
                assert output.finish_reason == "stop"
            if output.finish_reason == "stop":
                assert output.token_ids[-1] == stop and stop not in output.token_ids[param.min_tokens : -1]
            else:
                assert len(output.token_ids) == param.max_tokens
        else:
            assert output.finish_reason == "length" and len(output.token_ids) == param.max_tokens


def test_abort_while_a_step_is_in_flight_frees_everything(checkpoint) -> None:
    config = EngineConfig.from_kwargs(model=str(checkpoint), async_scheduling="on", **TIGHT)
    engine = EngineCore(config)
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    for index, prompt in enumerate(prompts()[:4]):
        ids = prompt["prompt_token_ids"]
        engine.add_request(EngineCoreRequest(f"r{index}", ids, params, [], 20, time.monotonic()))
    first = engine.step()
    assert first == [] and engine._in_flight is not None  # its tokens come with the next step
    for _ in range(3):
        engine.step()
    assert engine._in_flight is not None
    engine.abort_requests([f"r{index}" for index in range(4)])
    stats = engine.stats()
    assert stats.num_kv_blocks_free == stats.num_kv_blocks_total and stats.num_running == 0
    assert engine.has_unfinished_requests()  # a step is still in flight
    assert engine.step() == []  # its tokens are for aborted requests: dropped
    assert not engine.has_unfinished_requests() and engine.runner.states == {}
    engine.add_request(EngineCoreRequest("after", [1, 2, 3], params, [], 3, time.monotonic()))
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    assert [len(o.new_token_ids) for o in outputs] == [1, 1, 1] and outputs[-1].finish_reason == "length"


def test_penalties_read_the_step_in_flight_back_first_and_equal_sync_mode(checkpoint, counters) -> None:
    penalized = SamplingParams(
        temperature=0.0, max_tokens=10, ignore_eos=True, repetition_penalty=1.6, presence_penalty=0.8,
        frequency_penalty=0.5,
    )  # fmt: skip
    plain = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    params = [penalized if index % 2 else plain for index in range(len(prompts()))]
    expected, _ = generate(checkpoint, "off", params)
    got, _ = generate(checkpoint, "on", params)
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    assert counters["pending_inputs"] > 0  # steps of plain requests only still take tokens from the device
    unpenalized, _ = generate(checkpoint, "off", plain)
    assert [o.token_ids for o in expected] != [o.token_ids for o in unpenalized]  # penalties do matter
    counters["pending_inputs"] = 0
    only_penalized, _ = generate(checkpoint, "on", penalized)
    assert counters["pending_inputs"] == 0  # every step read the step in flight back first
    assert [o.token_ids for o in only_penalized][1::2] == [o.token_ids for o in expected][1::2]


def test_seeded_sampling_equals_sync_mode(checkpoint) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=12, ignore_eos=True)
    expected, _ = generate(checkpoint, "off", params)
    got, omni = generate(checkpoint, "on", params)
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    assert omni.stats().num_preemptions > 0


def test_stream_deltas_arrive_one_step_later_and_join_to_the_output(checkpoint) -> None:
    omni = Omni(str(checkpoint), async_scheduling="on", **TIGHT)
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    tokens: dict[int, list[int]] = {}
    finals = {}
    for delta in omni.stream(prompts()[:3], params):
        tokens.setdefault(delta.index, []).extend(delta.token_ids)
        if delta.output is not None:
            finals[delta.index] = delta.output.token_ids
    assert tokens == finals and all(len(t) == 6 for t in tokens.values())


def test_engine_process_serves_with_async_scheduling(checkpoint) -> None:
    from omniserve.core.engine_process import EngineProcessClient
    from omniserve.core.engine_process_messages import (
        AbortRequests,
        AddRequest,
        StatsQuery,
        StatsReply,
        StepOutputs,
    )

    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    expected, _ = generate(checkpoint, "off", params)
    client = EngineProcessClient(
        EngineConfig.from_kwargs(model=str(checkpoint), async_scheduling="on", **TIGHT)
    )
    try:
        # the engine process froze its startup heap (torch, transformers, the model: far more than this)
        assert client.gc_frozen_objects > 10_000
        requests = [
            EngineCoreRequest(f"p{i}", p["prompt_token_ids"], params, [], 8, time.monotonic())
            for i, p in enumerate(prompts())
        ]
        client.send(
            AddRequest(requests + [EngineCoreRequest("doomed", [5] * 30, params, [], 8, time.monotonic())])
        )
        tokens: dict[str, list[int]] = {}
        finished: set[str] = set()
        while len(finished) < len(requests) or "doomed" not in tokens:
            event = client.recv()
            assert isinstance(event, StepOutputs), event
            for output in event.outputs:
                if output.request_id == "doomed" and "doomed" not in tokens:
                    client.send(AbortRequests(["doomed"]))  # while its next step is in flight
                tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
                if output.finish_reason is not None:
                    finished.add(output.request_id)
        assert [tokens[r.request_id] for r in requests] == [o.token_ids for o in expected]
        client.send(StatsQuery(1))
        while not isinstance(event := client.recv(), StatsReply):
            assert isinstance(event, StepOutputs)
        assert event.stats.num_kv_blocks_free == event.stats.num_kv_blocks_total
        assert 1 <= len(tokens["doomed"]) < 8
    finally:
        client.shutdown()
