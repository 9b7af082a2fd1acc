"""Multimodal serving on the engine: image + audio prompts; decode latency of text requests under media load.

    python benchmarks/bench_media.py --shapes omni-7b --out benchmarks/results     # H200
    python benchmarks/bench_media.py --shapes tiny --device cpu                     # smoke test

Model: a Qwen2.5-Omni checkpoint folder (tokenizer and processor configs of the tiny demo builder) whose
config.json is rewritten to the `qwen2.5-omni-7b` anchor shapes, random bf16 weights (`load_format="dummy"`).
Request: a 448x448 image + 10 s of audio + a line of text (the anchor request, ~556 prompt tokens), every
request with its own media (no cache hits). Reported:
  1. one request: time to first token and output tokens/s (transformers: 14.1 tok/s on this request);
  2. 32 concurrent: output tokens/s, TTFT p50 / p99;
  3. decode inter-token latency of 16 text requests, idle vs while media requests arrive (one every 8 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HF_ONE_REQUEST_TOK_S = 14.1  # ../shared/notes/gpu-anchors.md, same request, transformers generate
OMNI_7B = {
    "text_config": dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    ),
    "vision_config": dict(
        depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420, out_hidden_size=3584,
        fullatt_block_indexes=[7, 15, 23, 31],
    ),
    "audio_config": dict(encoder_layers=32, d_model=1280, encoder_attention_heads=20, encoder_ffn_dim=5120,
                         output_dim=3584),
}  # fmt: skip


def make_model_dir(shapes: str) -> str:
    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint

    path = build_qwen2_5_omni_checkpoint(Path(tempfile.mkdtemp(prefix="omni-bench-")) / "ckpt", seed=0)
    if shapes == "omni-7b":
        config = json.loads((path / "config.json").read_text())
        for part, values in OMNI_7B.items():
            config["thinker_config"][part].update(values)
        config["thinker_config"]["text_config"].pop("layer_types", None)  # sized for the tiny layer count
        (path / "config.json").write_text(json.dumps(config))
    for file in path.glob("*.json"):  # let a 448x448 image keep its size (1024 patches -> 256 tokens)
        if file.name == "config.json":
            continue
        text = file.read_text()
        data = json.loads(text)

        def widen(node):
            if isinstance(node, dict):
                for key in list(node):
                    if key == "max_pixels":
                        node[key] = 12845056
                    elif key in ("min_pixels",):
                        node[key] = 3136
                    else:
                        widen(node[key])
            elif isinstance(node, list):
                for value in node:
                    widen(value)

        widen(data)
        file.write_text(json.dumps(data))
    return str(path)


def media_prompt(seed: int) -> dict:
    from PIL import Image

    rng = np.random.default_rng(seed)
    picture = Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8))
    t = np.arange(160000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.shape)).astype(
        np.float32
    )
    return {"messages": [{"role": "user", "content": [
        {"type": "image", "image": picture}, {"type": "audio", "audio": (audio, 16000)},
        {"type": "text", "text": "What do you see and hear? Answer in detail."}]}]}  # fmt: skip


class Harness:
    """EngineCore + the multimodal input processor, driven step by step with timestamps."""

    def __init__(
        self,
        path: str,
        device: str,
        num_kv_blocks: int,
        max_num_seqs: int,
        encoder_mode: str,
        mixed_step_token_budget: int = -1,
    ) -> None:
        from omniserve.config import EngineConfig
        from omniserve.core.engine_core import EngineCore
        from omniserve.frontend.input_processor import InputProcessor
        from omniserve.frontend.multimodal_processor import build_multimodal_processor
        from omniserve.omni import load_tokenizer

        dtype = "bfloat16" if device != "cpu" else "float32"
        config = EngineConfig.from_kwargs(
            model=path,
            load_format="dummy",
            dtype=dtype,
            device=device,
            num_kv_blocks=num_kv_blocks or None,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=8192,
            encoder_mode=encoder_mode,
            mixed_step_token_budget=mixed_step_token_budget,
        )
        start = time.perf_counter()
        self.engine = EngineCore(config)
        print(f"engine start: {time.perf_counter() - start:.1f} s", flush=True)
        tokenizer = load_tokenizer(path)
        self.inputs = InputProcessor(tokenizer, self.engine.info, build_multimodal_processor(path, tokenizer))
        self.ids = 0
        # (seconds, running, tokens, encoder jobs, side-stream encoder state after the step)
        self.step_log: list[tuple[float, int, int, int, str]] = []
        schedule = self.engine.scheduler.schedule

        def observed_schedule():  # keep the step's SchedulerOutput for the log
            self._last_output = schedule()
            return self._last_output

        self.engine.scheduler.schedule = observed_schedule

    def submit(self, prompt, max_tokens: int) -> str:
        from omniserve.sampling_params import SamplingParams

        self.ids += 1
        request_id = f"r{self.ids}"
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        request, _ = self.inputs.process(request_id, prompt, params)
        self.engine.add_request(request)
        return request_id

    def prepare(self, prompt, max_tokens: int):
        """Tokenize and plan now (the API process does this off the engine loop; media go to its store and
        are decoded and preprocessed on the encoder side); submit later."""
        from omniserve.sampling_params import SamplingParams

        self.ids += 1
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        return self.inputs.process(f"r{self.ids}", prompt, params)[0]

    def _encoder_state(self) -> str:
        """Side-stream encoder, after the step: jobs preparing / launching in the thread / on the GPU."""
        encoders = self.engine.encoders
        if encoders is None or not hasattr(encoders, "_preparing"):
            return ""
        return f"prep {len(encoders._preparing)} thread {encoders._in_thread} gpu {len(encoders._launched)}"

    def step(self) -> tuple[float, list]:
        start = time.perf_counter()
        scheduler = self.engine.scheduler
        outputs = self.engine.step()  # returns once these tokens are on the host; no device sync here, so
        now = time.perf_counter()  # the host work of the next step overlaps the GPU as in the server loop
        last = self._last_output
        self.step_log.append(
            (
                now - start,
                len(scheduler.running),
                last.total_num_scheduled_tokens,
                len(last.encoder_jobs),
                self._encoder_state(),
            )
        )
        return now, outputs


def run_batch(harness: Harness, prompts: list, max_tokens: int) -> dict:
    requests = [harness.prepare(p, max_tokens) for p in prompts]
    start = time.perf_counter()
    for request in requests:
        request.arrival_time = time.monotonic()
        harness.engine.add_request(request)
    first: dict[str, float] = {}
    produced = 0
    while harness.engine.has_unfinished_requests():
        now, outputs = harness.step()
        for output in outputs:
            first.setdefault(output.request_id, now - start)
            produced += len(output.new_token_ids)
    total = time.perf_counter() - start
    ttft = np.array(sorted(first.values()))
    return {
        "tok_s": produced / total,
        "ttft_p50": float(np.percentile(ttft, 50)),
        "ttft_p99": float(np.percentile(ttft, 99)),
        "seconds": total,
        "prompt_tokens": len(requests[0].prompt_token_ids),
    }


def run_latency(harness: Harness, num_text: int, media_every: int, steps: int) -> dict:
    """ITL of text decodes: `steps` idle steps, then `steps` steps with a media request every `media_every`
    (text token ids below the tokenizer's special tokens, so no placeholder appears by accident)."""
    text = [
        harness.prepare({"prompt_token_ids": list(range(40, 552))}, 4 * steps + 64) for _ in range(num_text)
    ]
    for request in text:
        harness.engine.add_request(request)
    text_ids = {r.request_id for r in text}
    while any(r.num_output_tokens == 0 for r in harness.engine.scheduler.requests.values()):
        harness.step()
    media = [harness.prepare(media_prompt(1000 + i), 16) for i in range(steps // media_every + 1)]
    gaps: dict[str, list[float]] = {"idle": [], "media": []}
    last = time.perf_counter()
    for phase in ("idle", "media"):
        for index in range(steps):
            if phase == "media" and index % media_every == 0:
                harness.engine.add_request(media[index // media_every])
            now, outputs = harness.step()
            if any(o.request_id in text_ids for o in outputs):
                gaps[phase].append(now - last)
                last = now
    harness.engine.abort_requests(list(harness.engine.scheduler.requests))
    while harness.engine.has_unfinished_requests():  # async scheduling: a step may still be in flight
        harness.step()
    result = {}
    for phase, values in gaps.items():
        array = np.array(values) * 1e3
        result[f"itl_{phase}_p50_ms"] = float(np.percentile(array, 50))
        result[f"itl_{phase}_p99_ms"] = float(np.percentile(array, 99))
    result["p99_ratio"] = result["itl_media_p99_ms"] / result["itl_idle_p99_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", choices=["tiny", "omni-7b"], default="omni-7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-steps", type=int, default=64)
    parser.add_argument("--num-kv-blocks", type=int, default=8192, help="0 = size the pool from free memory")
    parser.add_argument(
        "--encoder-mode", default="auto", choices=["auto", "inprocess", "side_stream", "workers"]
    )
    parser.add_argument("--mixed-step-token-budget", type=int, default=-1, help="-1 = the engine's auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    harness = Harness(
        make_model_dir(args.shapes),
        args.device,
        args.num_kv_blocks,
        max(args.concurrency, 17),
        args.encoder_mode,
        args.mixed_step_token_budget,
    )
    # Every phase runs once unmeasured first: Triton and cuBLAS pick and compile kernels per batch shape.
    run_batch(harness, [media_prompt(0)], 4)
    one = run_batch(harness, [media_prompt(100)], args.max_tokens)
    run_batch(harness, [media_prompt(300 + i) for i in range(args.concurrency)], 8)
    many = run_batch(harness, [media_prompt(200 + i) for i in range(args.concurrency)], args.max_tokens)
    run_latency(harness, 16, 8, args.latency_steps)  # as long as the measured run: every step shape seen
    harness.step_log.clear()
    latency = run_latency(harness, 16, 8, args.latency_steps)
    slowest = sorted(harness.step_log, reverse=True)[:8]
    print(
        "slowest steps (ms, running, scheduled tokens, encoder jobs, encoder state):",
        [(round(1e3 * s, 1), r, t, j, e) for s, r, t, j, e in slowest],
        flush=True,
    )
    busy = [1e3 * s for s, *_, e in harness.step_log if "thread 0 " not in e and e]
    quiet = [1e3 * s for s, *_, e in harness.step_log if "thread 0 " in e or not e]
    if busy:
        print(
            f"steps while the launch thread is busy: {len(busy)}, mean {np.mean(busy):.2f} ms, "
            f"max {max(busy):.1f}; others: {len(quiet)}, mean {np.mean(quiet):.2f} ms",
            flush=True,
        )

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "shapes": args.shapes,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "commit": os.environ.get("OMNISERVE_COMMIT", "unknown"),
        "encoder_mode": args.encoder_mode,
        "mixed_step_token_budget": harness.engine.config.scheduler.mixed_step_token_budget,
        "one": one,
        "many": many,
        **latency,
    }
    lines = [
        f"Media serving, {args.shapes} shapes (dummy weights), 448x448 image + 10 s audio + text "
        f"({one['prompt_tokens']} prompt tokens), {args.max_tokens} new tokens, "
        f"encoder_mode={args.encoder_mode}, mixed_step_token_budget={report['mixed_step_token_budget']}; "
        f"{report['gpu']}, "
        f"commit {report['commit']}",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| 1 request: output tok/s | {one['tok_s']:.1f} "
        f"({one['tok_s'] / HF_ONE_REQUEST_TOK_S:.1f}x transformers' {HF_ONE_REQUEST_TOK_S}) |",
        f"| 1 request: time to first token | {1e3 * one['ttft_p50']:.0f} ms |",
        f"| {args.concurrency} concurrent: output tok/s | {many['tok_s']:.0f} |",
        f"| {args.concurrency} concurrent: TTFT p50 / p99 | {1e3 * many['ttft_p50']:.0f} / "
        f"{1e3 * many['ttft_p99']:.0f} ms |",
        f"| 16 text decodes, ITL idle p50 / p99 | {latency['itl_idle_p50_ms']:.1f} / "
        f"{latency['itl_idle_p99_ms']:.1f} ms |",
        f"| same, media request every 8 steps, p50 / p99 | {latency['itl_media_p50_ms']:.1f} / "
        f"{latency['itl_media_p99_ms']:.1f} ms (p99 ratio {latency['p99_ratio']:.2f}) |",
    ]
    table = "\n".join(lines)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        name = f"media_{args.encoder_mode}" + (
            f"_budget{args.mixed_step_token_budget}" if args.mixed_step_token_budget >= 0 else ""
        )
        Path(args.out, f"{name}.json").write_text(json.dumps(report, indent=2))
        Path(args.out, f"{name}.md").write_text(table + "\n")
    print(table)
    harness.engine.shutdown()


if __name__ == "__main__":
    main()
