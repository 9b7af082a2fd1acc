"""Engine decode throughput on the GPU vs transformers `generate`, same shapes, same run.

    python benchmarks/bench_decode.py --batches 1 16 64 256 --out benchmarks/results

Model: `qwen2.5-7b` shapes (../shared/notes/gpu-anchors.md) with random bf16 weights (`load_format="dummy"`).
Each batch: B prompts of 512 random tokens, 128 new tokens each (EOS ignored), all submitted at once.
Reported per batch: transformers tok/s (static batch), omniserve tok/s (B*128 / wall time of all steps, the
prefill included), omniserve decode-only tok/s (steps after the first token), and the bandwidth floor:
weights + KV bytes read per decode step over the measured copy bandwidth (anchor: 4.23 TB/s). The json also
keeps each run's Python garbage-collector passes (per generation) and their total time, and what one full
collection costs after engine start. The startup heap is frozen out of the collector's reach, as the engine
process does (omniserve/core/gc_policy.py); `--no-gc-freeze` leaves it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import tempfile
import time

import torch

QWEN25_7B = dict(
    architectures=["Qwen2ForCausalLM"],
    model_type="qwen2",
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    hidden_act="silu",
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    bos_token_id=151643,
    eos_token_id=151645,
    dtype="bfloat16",
    use_sliding_window=False,
)
PROMPT_LEN, NEW_TOKENS = 512, 128


def model_bytes(config: dict = QWEN25_7B) -> tuple[int, int]:
    """bf16 bytes a decode step reads of weights (embedding and lm_head counted whole) and of KV per token."""
    h, layers, inter = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    kv_dim = config["num_key_value_heads"] * h // config["num_attention_heads"]
    per_layer = h * h * 2 + 2 * h * kv_dim + 3 * h * inter  # q, o; k, v; gate, up, down
    weights = 2 * (config["vocab_size"] * h * 2 + layers * per_layer)
    return weights, 2 * layers * 2 * kv_dim


def make_checkpoint_dir() -> str:
    """config.json of the real shapes + the demo tokenizer (weights come from load_format='dummy')."""
    from omniserve.demo import build_tokenizer

    path = tempfile.mkdtemp(prefix="qwen2.5-7b-")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(QWEN25_7B, f)
    build_tokenizer().save_pretrained(path)
    return path


def copy_bandwidth() -> float:
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        y.copy_(x)
    torch.cuda.synchronize()
    return 2 * x.numel() * 2 * 20 / (time.perf_counter() - start)


def floor_tok_s(batch: int, weight_bytes: int, kv_bytes_per_token: int, bandwidth: float) -> float:
    """Bandwidth floor averaged over the decode steps: every step reads all weights + each sequence's KV."""
    seconds = 0.0
    for step in range(NEW_TOKENS - 1):
        context = PROMPT_LEN + step + 1
        seconds += (weight_bytes + batch * context * kv_bytes_per_token) / bandwidth
    return batch * (NEW_TOKENS - 1) / seconds


def run_hf(path: str, batches: list[int]) -> dict[int, float]:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    results = {}
    for batch in batches:
        ids = torch.randint(0, 150000, (batch, PROMPT_LEN), device="cuda")
        with torch.no_grad():
            model.generate(ids[:, :16], max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
            torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=0,
            )
            torch.cuda.synchronize()
        results[batch] = batch * NEW_TOKENS / (time.perf_counter() - start)
        print(f"hf batch {batch}: {results[batch]:.0f} tok/s", flush=True)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return results


class GcTimer:
    """Python garbage-collector passes and their wall time, per generation, while `active`."""

    def __init__(self) -> None:
        self.active = False
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if not self.active:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self._started

    def reset(self) -> None:
        self.count, self.seconds = [0, 0, 0], [0.0, 0.0, 0.0]


def full_collection_ms() -> float:
    start = time.perf_counter()
    gc.collect()
    return 1e3 * (time.perf_counter() - start)


def run_engine(
    path: str, batches: list[int], num_kv_blocks: int, async_scheduling: str = "auto", block_size: int = 16,
    gc_freeze: bool = True,
) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
    from omniserve.config import EngineConfig
    from omniserve.core.engine_core import EngineCore
    from omniserve.core.gc_policy import freeze_startup_heap
    from omniserve.core.messages import EngineCoreRequest
    from omniserve.sampling_params import SamplingParams

    config = EngineConfig.from_kwargs(
        model=path,
        load_format="dummy",
        dtype="bfloat16",
        num_kv_blocks=num_kv_blocks,
        block_size=block_size,
        max_num_seqs=max(batches),
        max_num_batched_tokens=16384,
        mixed_step_token_budget=0,  # offline batch, as `Omni` runs it: throughput first
        async_scheduling=async_scheduling,
    )
    start = time.perf_counter()
    engine = EngineCore(config)
    print(
        f"engine start (load dummy weights, capture graphs): {time.perf_counter() - start:.1f} s", flush=True
    )
    print(f"gc: {len(gc.get_objects())} tracked objects after engine start", flush=True)
    # what one full collection costs with the startup heap, and after freezing it as the engine process
    # does (omniserve/core/gc_policy.py)
    full_gc = {"tracked_objects": len(gc.get_objects())}
    full_collection_ms()  # frees startup garbage; the next pass is the steady cost
    full_gc["full_pass_ms"] = full_collection_ms()
    if gc_freeze:
        full_gc["frozen_objects"] = freeze_startup_heap()
        full_gc["full_pass_ms_frozen"] = full_collection_ms()
    print(f"gc: {full_gc}", flush=True)
    gc_timer = GcTimer()
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    results = {}
    counter = 0
    for batch in [b for b in batches for _ in range(2)]:  # each batch twice: the first compiles its shapes
        for _ in range(batch):
            ids = torch.randint(0, 150000, (PROMPT_LEN,)).tolist()
            engine.add_request(
                EngineCoreRequest(f"b{counter}", ids, params, [], NEW_TOKENS, time.monotonic())
            )
            counter += 1
        torch.cuda.synchronize()
        start = time.perf_counter()
        first_token_at, steps, produced, started = None, 0, 0, set()
        produced_before_decode = 0
        gc_timer.reset()
        gc_timer.active = True
        while engine.has_unfinished_requests():
            outputs = engine.step()
            steps += 1
            produced += sum(len(o.new_token_ids) for o in outputs)
            started.update(o.request_id for o in outputs)
            if first_token_at is None and len(started) == batch:  # every prompt prefilled: decode from here
                first_token_at, produced_before_decode = time.perf_counter(), produced
        total = time.perf_counter() - start
        gc_timer.active = False
        assert produced == batch * NEW_TOKENS, (produced, batch)
        results[batch] = {  # the second (warm) run of each batch overwrites the first
            "tok_s": batch * NEW_TOKENS / total,
            "decode_tok_s": (produced - produced_before_decode) / (total - (first_token_at - start)),
            "prefill_s": first_token_at - start,
            "steps": steps,
            "gc_collections": list(gc_timer.count),  # per generation, during this run
            "gc_ms": round(1e3 * sum(gc_timer.seconds), 2),
        }
        print(f"omniserve batch {batch}: {results[batch]}", flush=True)
    if gc_freeze:
        gc.unfreeze()
    return results, full_gc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--kv-tokens", type=int, default=196608)  # KV pool size in tokens (11 GB)
    parser.add_argument("--block-size", type=int, default=16, help="tokens per KV page")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="leave the startup heap to the collector (the engine process freezes it)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--async-scheduling", default="auto", choices=["auto", "on", "off"])
    args = parser.parse_args()

    path = make_checkpoint_dir()
    bandwidth = copy_bandwidth()
    hf = {} if args.skip_hf else run_hf(path, args.batches)
    ours, full_gc = run_engine(
        path, args.batches, args.kv_tokens // args.block_size, args.async_scheduling, args.block_size,
        gc_freeze=not args.no_gc_freeze,
    )
    weight_bytes, kv_bytes_per_token = model_bytes()

    try:
        commit = os.environ.get("OMNISERVE_COMMIT") or subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], text=True
        ).strip()
    except Exception:
        commit = "unknown"
    rows = []
    for batch in args.batches:
        floor = floor_tok_s(batch, weight_bytes, kv_bytes_per_token, bandwidth)
        rows.append(
            {
                "batch": batch,
                "hf_tok_s": hf.get(batch),
                "omniserve_tok_s": ours[batch]["tok_s"],
                "omniserve_decode_tok_s": ours[batch]["decode_tok_s"],
                "prefill_s": ours[batch]["prefill_s"],
                "floor_tok_s": floor,
                "fraction_of_floor": ours[batch]["decode_tok_s"] / floor,
                "speedup_vs_hf": ours[batch]["tok_s"] / hf[batch] if batch in hf else None,
            }
        )
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "commit": commit,
        "async_scheduling": args.async_scheduling,
        "block_size": args.block_size,
        "gc": full_gc,
        "copy_bandwidth_TBps": bandwidth / 1e12,
        "weight_bytes": weight_bytes,
        "rows": rows,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "decode.json"), "w") as f:
        json.dump(report, f, indent=2)
    if "full_pass_ms_frozen" in full_gc:
        heap = f"startup heap frozen (a full GC pass {full_gc['full_pass_ms']:.0f} ms before, " \
               f"{full_gc['full_pass_ms_frozen']:.0f} ms after)"
    else:
        heap = f"startup heap not frozen (a full GC pass {full_gc['full_pass_ms']:.0f} ms)"
    lines = [
        f"Decode, qwen2.5-7b shapes (dummy bf16), prompt {PROMPT_LEN}, {NEW_TOKENS} new tokens; "
        f"{report['gpu']}, torch {report['torch']}, triton {report['triton']}, commit {commit}, "
        f"async scheduling {args.async_scheduling}, KV block {args.block_size}, {heap}, "
        f"copy bandwidth {bandwidth / 1e12:.2f} TB/s",
        "",
        "| batch | HF tok/s | omniserve tok/s | x HF | decode tok/s | floor tok/s | % floor | prefill s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        hf_cell = f"{r['hf_tok_s']:.0f}" if r["hf_tok_s"] else "-"
        ratio = f"{r['speedup_vs_hf']:.1f}" if r["speedup_vs_hf"] else "-"
        lines.append(
            f"| {r['batch']} | {hf_cell} | {r['omniserve_tok_s']:.0f} | {ratio} | "
            f"{r['omniserve_decode_tok_s']:.0f} | {r['floor_tok_s']:.0f} | "
            f"{100 * r['fraction_of_floor']:.0f}% | {r['prefill_s']:.3f} |"
        )
    table = "\n".join(lines)
    with open(os.path.join(args.out, "decode.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
