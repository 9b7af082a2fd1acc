"""Offline throughput: omniserve vs transformers `generate` on the same checkpoint, same prompts, same run.

    python benchmarks/bench_offline.py                    # CPU, a small random Qwen2 (the demo shape)
    python benchmarks/bench_offline.py --device cuda --model /path --dtype bfloat16

Both sides generate exactly --max-tokens greedy tokens per prompt (EOS ignored). transformers runs one static
batch of all prompts (left padding); omniserve gets all prompts at once and batches continuously. Reports
output tokens/s of each, their ratio, and the KV pages used at the peak vs allocated.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="checkpoint folder (default: build a demo-shaped one)")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--min-prompt-len", type=int, default=16)
    parser.add_argument("--max-prompt-len", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--num-kv-blocks", type=int, default=None)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from omniserve import Omni, SamplingParams
    from omniserve.demo import build_qwen2_checkpoint

    path = args.model or str(
        build_qwen2_checkpoint(
            tempfile.mkdtemp() + "/ckpt",
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
            intermediate_size=512,
        )
    )
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(
        args.min_prompt_len, args.max_prompt_len + 1, (args.num_prompts,), generator=generator
    )
    prompts = [torch.randint(0, 500, (int(n),), generator=generator).tolist() for n in lengths]
    total_new = args.num_prompts * args.max_tokens

    # transformers: one static batch, left padded.
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(args.device).eval()
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=args.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=args.device)
    with torch.no_grad():
        model.generate(
            input_ids[:2, -8:],
            attention_mask=mask[:2, -8:],
            max_new_tokens=2,
            do_sample=False,
            pad_token_id=0,
        )  # warm-up
        start = time.perf_counter()
        model.generate(
            input_ids,
            attention_mask=mask,
            max_new_tokens=args.max_tokens,
            min_new_tokens=args.max_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        hf_seconds = time.perf_counter() - start
    del model

    omni = Omni(
        path,
        device=args.device,
        dtype=args.dtype,
        block_size=args.block_size,
        num_kv_blocks=args.num_kv_blocks,
        max_num_batched_tokens=args.max_num_batched_tokens,
    )
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    omni.generate(
        [{"prompt_token_ids": prompts[0][:8]}], SamplingParams(max_tokens=2), use_tqdm=False
    )  # warm-up
    start = time.perf_counter()
    outputs = omni.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    ours_seconds = time.perf_counter() - start
    assert sum(len(o.token_ids) for o in outputs) == total_new
    stats = omni.stats()

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": args.dtype,
        "num_prompts": args.num_prompts,
        "prompt_tokens": int(lengths.sum()),
        "max_tokens": args.max_tokens,
        "hf_tok_s": total_new / hf_seconds,
        "omniserve_tok_s": total_new / ours_seconds,
        "speedup": hf_seconds / ours_seconds,
        "kv_pages_peak": stats.num_kv_blocks_used_peak,
        "kv_pages_total": stats.num_kv_blocks_total,
        "block_size": args.block_size,
        "kv_tokens_needed": int(lengths.sum()) + total_new,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print(
        f"\n| engine | output tok/s |\n| --- | --- |\n| transformers generate (static batch) | "
        f"{result['hf_tok_s']:.0f} |\n| omniserve | {result['omniserve_tok_s']:.0f} |\n"
        f"ratio {result['speedup']:.2f}x; KV pages used at peak {stats.num_kv_blocks_used_peak} of "
        f"{stats.num_kv_blocks_total} allocated (block {args.block_size}; the batch holds "
        f"{result['kv_tokens_needed']} tokens = "
        f"{-(-result['kv_tokens_needed'] // args.block_size)} pages at least)"
    )


if __name__ == "__main__":
    main()
