"""Where a decode step's wall time goes beyond its GPU work: host phases and GPU idle gaps.

    python benchmarks/trace_step_gaps.py --batch 256 [--steps 20] [--trace-out trace.json]

Same model and prompts as bench_decode.py (`qwen2.5-7b` shapes, dummy bf16, prompt 512). After the batch has
prefilled, decode steps of the engine's own loop (async scheduling as configured) are measured three ways:

1. Host phases, no profiler: each engine phase is timed by wrapping it (schedule, launch and its parts,
   waiting for the step in flight, update). With async scheduling the host is the bottleneck when the wait
   is near zero: the GPU then idles while the host builds the next step.
2. GPU timeline, torch profiler: every kernel / copy / memset interval; the idle gaps between them, summed by
   (kernel before -> kernel after), and for each gap whether the next launch was late (its launch call
   started after the gap began: the host was busy) and in which annotated host phase the gap began.
3. Windows of steps without the profiler, before and after it: wall time per step and the GPU's own
   step-to-step interval (a CUDA event after each launch); equal when the GPU is the bottleneck.
Prints the tables; `--trace-out` also keeps the chrome trace.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import tempfile
import time

import torch
from bench_decode import NEW_TOKENS, PROMPT_LEN, make_checkpoint_dir
from profile_step_kernels import family

PHASES = [  # (label, owner attribute path, method)
    ("schedule", "scheduler", "schedule"),
    ("update", "scheduler", "update_from_output"),
    ("launch", "runner", "launch"),
    ("build_batch", "runner", "_build_batch"),
    ("forward_call", "runner", "_forward"),
    ("sample_call", "runner.sampler", "sample"),
]


def resolve(root, path: str):
    for name in path.split("."):
        root = getattr(root, name)
    return root


def instrument(engine, totals: dict[str, float]) -> None:
    """Wrap each phase in a timer and a profiler annotation (`phase:<label>`)."""
    for label, owner_path, method in PHASES:
        owner = resolve(engine, owner_path)
        fn = getattr(owner, method)

        def wrapped(*args, _fn=fn, _label=label, **kwargs):
            start = time.perf_counter()
            with torch.profiler.record_function(f"phase:{_label}"):
                result = _fn(*args, **kwargs)
            totals[_label] += time.perf_counter() - start
            return result

        setattr(owner, method, functools.wraps(fn)(wrapped))
    # the wait for the step in flight: InFlightStep.result's event synchronize
    from omniserve.worker import inflight

    original = inflight.InFlightStep.result

    def result(self):
        start = time.perf_counter()
        with torch.profiler.record_function("phase:wait_result"):
            out = original(self)
        totals["wait_result"] += time.perf_counter() - start
        return out

    inflight.InFlightStep.result = result


def gpu_intervals(trace: dict) -> tuple[list[dict], dict[int, float]]:
    """GPU activity (kernels, copies, memsets) sorted by start; launch-call start time per correlation id."""
    gpu, launches = [], {}
    for event in trace["traceEvents"]:
        cat = event.get("cat", "")
        if event.get("ph") != "X":
            continue
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            gpu.append(event)
        elif cat == "cuda_runtime" and "correlation" in event.get("args", {}):
            launches[event["args"]["correlation"]] = event["ts"]
    gpu.sort(key=lambda e: e["ts"])
    return gpu, launches


def host_phase_at(annotations: list[dict], ts: float) -> str:
    """The innermost `phase:` annotation covering host time `ts` (or 'outside phases')."""
    inner = None
    for a in annotations:
        if a["ts"] <= ts <= a["ts"] + a["dur"] and (inner is None or a["dur"] < inner["dur"]):
            inner = a
    return inner["name"][len("phase:"):] if inner else "outside phases"


def step_table(gpu: list[dict]) -> list[str]:
    """Per decode step on the GPU (a step ends with its argmax): span from the end of the step before,
    time inside kernels/copies, idle split by gap size, and the number of GPU events."""
    ends = [i for i, e in enumerate(gpu) if "ArgMax" in e["name"] or "argmax" in e["name"]]
    pairs: dict[str, float] = collections.defaultdict(float)  # all idle of whole steps, by family pair
    lines = ["| step | span ms | busy ms | idle ms: gaps < 2 us | 2-5 us | > 5 us | events |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for n, (a, b) in enumerate(zip(ends, ends[1:], strict=False)):
        start = gpu[a]["ts"] + gpu[a]["dur"]
        busy, idle, end, count, prev = 0.0, [0.0, 0.0, 0.0], start, 0, gpu[a]
        for event in gpu[a + 1 : b + 1]:
            gap = event["ts"] - end
            if gap > 0:
                idle[0 if gap < 2 else 1 if gap < 5 else 2] += gap
                pairs[f"{family(prev['name'])} -> {family(event['name'])}"] += gap
            prev = event
            busy += max(0.0, event["ts"] + event["dur"] - max(end, event["ts"]))
            end = max(end, event["ts"] + event["dur"])
            count += 1
        lines.append(f"| {n} | {(end - start) / 1e3:.2f} | {busy / 1e3:.2f} | {idle[0] / 1e3:.2f} | "
                     f"{idle[1] / 1e3:.2f} | {idle[2] / 1e3:.2f} | {count} |")
    num_steps = max(1, len(ends) - 1)
    lines += ["", "| idle between (all gaps) | us/step |", "| --- | --- |"]
    for pair, us in sorted(pairs.items(), key=lambda kv: -kv[1])[:12]:
        lines.append(f"| {pair} | {us / num_steps:.1f} |")
    return lines


def gap_report(trace: dict, steps: int, min_gap_us: float = 3.0) -> list[str]:
    gpu, launches = gpu_intervals(trace)
    annotations = [
        e for e in trace["traceEvents"] if e.get("ph") == "X" and e.get("name", "").startswith("phase:")
    ]
    by_pair: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0, 0.0])
    by_phase: dict[str, float] = collections.defaultdict(float)
    end, prev = gpu[0]["ts"] + gpu[0]["dur"], gpu[0]
    for event in gpu[1:]:
        gap = event["ts"] - end
        if gap > min_gap_us:
            launch = launches.get(event.get("args", {}).get("correlation"))
            late = launch is not None and launch > end  # launched only after the GPU ran dry
            key = tuple(f"{family(e['name'])}:{e['name'][:40]}" for e in (prev, event))
            entry = by_pair[key]
            entry[0] += gap
            entry[1] += 1
            entry[2] += gap if late else 0.0
            by_phase[host_phase_at(annotations, end) if late else "launched in time (device-side)"] += gap
        if event["ts"] + event["dur"] > end:
            end, prev = event["ts"] + event["dur"], event
    lines = step_table(gpu) + ["", f"gaps > {min_gap_us:.0f} us over the profiled window, per engine step:",
             "", "| host phase when the GPU ran dry | idle us/step |", "| --- | --- |"]
    for phase, us in sorted(by_phase.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {phase} | {us / steps:.1f} |")
    lines += ["", "| kernel before | kernel after | gaps/step | idle us/step | late-launch us/step |",
              "| --- | --- | --- | --- | --- |"]
    for (before, after), (us, count, late_us) in sorted(by_pair.items(), key=lambda kv: -kv[1][0])[:15]:
        lines.append(f"| {before} | {after} | {count / steps:.1f} | {us / steps:.1f} | "
                     f"{late_us / steps:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--profile-steps", type=int, default=6)
    parser.add_argument("--trace-out", default=None)
    parser.add_argument("--async-scheduling", default="auto", choices=["auto", "on", "off"])
    args = parser.parse_args()
    from omniserve.config import EngineConfig
    from omniserve.core.engine_core import EngineCore
    from omniserve.core.messages import EngineCoreRequest
    from omniserve.sampling_params import SamplingParams

    start = time.perf_counter()
    engine = EngineCore(EngineConfig.from_kwargs(
        model=make_checkpoint_dir(), load_format="dummy", dtype="bfloat16", num_kv_blocks=12288,
        max_num_seqs=args.batch, max_num_batched_tokens=16384, mixed_step_token_budget=0,
        async_scheduling=args.async_scheduling,
    ))  # fmt: skip
    print(f"engine start {time.perf_counter() - start:.1f} s", flush=True)
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    for index in range(args.batch):
        ids = torch.randint(0, 150000, (PROMPT_LEN,)).tolist()
        engine.add_request(EngineCoreRequest(f"r{index}", ids, params, [], NEW_TOKENS, time.monotonic()))
    while any(r.num_output_tokens == 0 for r in engine.scheduler.requests.values()):
        engine.step()
    for _ in range(5):
        engine.step()

    totals: dict[str, float] = collections.defaultdict(float)
    instrument(engine, totals)
    marks: list[torch.cuda.Event] = []  # one per launched step, after its last queued GPU work
    launch = engine.runner.launch

    def marked_launch(*a, **k):
        result = launch(*a, **k)
        marks.append(torch.cuda.Event(enable_timing=True))
        marks[-1].record()
        return result

    engine.runner.launch = marked_launch

    def window(label: str) -> str:
        marks.clear()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            engine.step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) * 1e3 / args.steps
        gpu = [a.elapsed_time(b) for a, b in zip(marks, marks[1:], strict=False)]
        return (f"{label}: wall {wall:.2f} ms/step; GPU end-to-end step intervals (CUDA events) median "
                f"{sorted(gpu)[len(gpu) // 2]:.2f} ms, min {min(gpu):.2f}, max {max(gpu):.2f}")

    windows = [window("window 1 (no profiler)")]
    phase_totals = dict(totals)
    windows.append(window("window 2 (no profiler)"))
    phase_lines = [f"decode batch {args.batch}", "", "| host phase (window 1) | ms/step |", "| --- | --- |"]
    phase_lines += [f"| {label} | {sec * 1e3 / args.steps:.2f} |" for label, sec in phase_totals.items()]

    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(args.profile_steps):
            engine.step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) * 1e3 / args.profile_steps
        windows.append(f"profiled window: wall {wall:.2f} ms/step")
    windows.append(window("window 3 (no profiler, after)"))
    path = args.trace_out or os.path.join(tempfile.mkdtemp(), "trace.json")
    prof.export_chrome_trace(path)
    with open(path) as f:
        trace = json.load(f)
    print("\n".join(gap_report(trace, args.profile_steps)))
    print("\n" + "\n".join(phase_lines))
    print("\n".join(windows))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
