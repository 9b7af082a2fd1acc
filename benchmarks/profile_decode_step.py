"""Where a decode step's time goes (schedule, build inputs, forward, logits+sample, update) per batch.

    python benchmarks/profile_decode_step.py --batches 64 256

Same model and prompts as bench_decode.py. After the prefill, times STEPS decode steps with a device sync at
each phase boundary (the syncs cost a little; the phases then add up to the step). The phases are those of a
sync step (async scheduling off): with it on, the host phases overlap the forward (bench_decode.py).
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_decode import NEW_TOKENS, PROMPT_LEN, make_checkpoint_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    from omniserve.config import EngineConfig
    from omniserve.core.engine_core import EngineCore
    from omniserve.core.messages import EngineCoreRequest
    from omniserve.sampling_params import SamplingParams

    config = EngineConfig.from_kwargs(
        model=make_checkpoint_dir(),
        load_format="dummy",
        dtype="bfloat16",
        num_kv_blocks=12288,
        max_num_seqs=max(args.batches),
        max_num_batched_tokens=16384,
        async_scheduling="off",  # this script drives the phases of one step itself
    )
    engine = EngineCore(config)
    runner, scheduler = engine.runner, engine.scheduler
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    rows = []
    for batch in args.batches:
        for i in range(batch):
            ids = torch.randint(0, 150000, (PROMPT_LEN,)).tolist()
            engine.add_request(
                EngineCoreRequest(f"{batch}-{i}", ids, params, [], NEW_TOKENS, time.monotonic())
            )
        while any(r.num_output_tokens == 0 for r in scheduler.requests.values()):
            engine.step()
        phases = {"schedule": 0.0, "build": 0.0, "forward": 0.0, "sample": 0.0, "update": 0.0}
        for _ in range(args.steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            scheduler_output = scheduler.schedule()
            t1 = time.perf_counter()
            runner._update_states(scheduler_output)
            batch_inputs = runner._build_batch(scheduler_output.num_scheduled_tokens)
            t2 = time.perf_counter()
            hidden = runner._forward(batch_inputs)
            torch.cuda.synchronize()
            t3 = time.perf_counter()
            ids = list(scheduler_output.num_scheduled_tokens)
            logits = runner.model.compute_logits(hidden)
            states = [runner.states[i] for i in ids]
            from omniserve.worker.sampler import SamplingRow

            tokens, logprobs = runner.sampler(
                logits,
                [
                    SamplingRow(s.sampling_params, s.token_ids, s.num_prompt_tokens, s.eos_token_ids)
                    for s in states
                ],
            )
            for state, token in zip(states, tokens, strict=True):
                state.token_ids.append(token)
            t4 = time.perf_counter()
            from omniserve.core.scheduler_output import ModelRunnerOutput

            scheduler.update_from_output(scheduler_output, ModelRunnerOutput(ids, tokens, logprobs))
            t5 = time.perf_counter()
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                phases[name] += seconds / args.steps
        graphed = runner.decode_graphs is not None and runner.decode_graphs.padded_size(batch) is not None
        rows.append((batch, graphed, phases))
        engine.abort_requests(list(scheduler.requests))
        engine.step()
    print("| batch | graph | " + " | ".join(f"{p} ms" for p in rows[0][2]) + " | step ms |")
    print("| --- | --- |" + " --- |" * (len(rows[0][2]) + 1))
    for batch, graphed, phases in rows:
        cells = " | ".join(f"{1e3 * v:.2f}" for v in phases.values())
        print(f"| {batch} | {graphed} | {cells} | {1e3 * sum(phases.values()):.2f} |")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
