"""Compile the paged attention kernel for sm_90 on any machine (no GPU needed) and report what it became.

    python benchmarks/inspect_attention_compile.py [--dump DIR]

For each config (decode and prefill tiles of the Qwen2.5-7B shapes: Hq 28 / Hkv 4, D 128, bf16, block 16):
shared memory, registers and spills (Triton's bundled ptxas), programs per SM that those allow, K/V buffers
and how many tile loads stay in flight (the `async_wait {num = N}` of the pipelined loops: 0 = the next
tile is waited for at the top of every iteration). Arguments are specialised as the runtime JIT does (unit
strides as constants, 16-byte divisibility), so the code matches what runs on the H200.
This is how the indirect-load pipelining limit behind `AttentionConfig.pages_ahead` was found.

`--compare DIR` checks a refactor without a GPU: DIR is a `--dump` of another commit (run this script in
a worktree of it); each case's TTGIR is compared up to value names and source locations, and a case that
compiles the same runs the same.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import tempfile

import triton
from bench_kernels import attention
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

POINTERS = {"q_ptr": "*bf16", "k_cache_ptr": "*bf16", "v_cache_ptr": "*bf16", "out_ptr": "*bf16",
            "partial_out_ptr": "*fp32", "partial_lse_ptr": "*fp32", "query_start_loc_ptr": "*i32",
            "seq_lens_ptr": "*i32", "block_tables_ptr": "*i32"}
# (label, AttentionConfig, split-K) as the engine launches them on the H200
CASES = [
    ("decode, big grid", attention.AttentionConfig(16, 1, 64, 4, 2), False),
    ("decode, 1-4 programs per SM", attention.AttentionConfig(16, 1, 128, 4, 2), False),
    ("decode, split-K", attention.AttentionConfig(16, 1, 64, 4, 3, True), True),
    ("decode, split-K, ids in-iteration", attention.AttentionConfig(16, 1, 64, 4, 3), True),
    ("decode, split-K, one loop", attention.AttentionConfig(16, 1, 64, 4, 3, True, one_loop=True), True),
    ("decode, big grid, one loop", attention.AttentionConfig(16, 1, 64, 4, 2, one_loop=True), False),
    ("decode, 1-4 programs per SM, one loop", attention.AttentionConfig(16, 1, 128, 4, 2, one_loop=True),
     False),
    *((f"decode, {grid}, overlapped, {order}",
       attention.AttentionConfig(16, 1, block_n, 4, stages, ahead, one_loop=True, overlap=overlap), split_k)
      for grid, block_n, stages, ahead, split_k in (("big grid", 64, 2, False, False),
                                                    ("1-4 programs per SM", 128, 2, False, False),
                                                    ("split-K", 64, 3, True, True))
      for order, overlap in (("scores first", attention.SCORES_FIRST), ("fold first", attention.FOLD_FIRST),
                             ("V behind", attention.V_BEHIND))),
    ("prefill 256 rows, 16 warps", attention.AttentionConfig(256, 36, 64, 16, 3, True), False),
    ("prefill 128 rows", attention.AttentionConfig(128, 18, 64, 8, 3, True), False),
    ("prefill 128 rows, one loop", attention.AttentionConfig(128, 18, 64, 8, 3, True, one_loop=True), False),
    ("prefill 128 rows, ids in-iteration", attention.AttentionConfig(128, 18, 64, 8, 3), False),
    ("short chunk 64 rows", attention.AttentionConfig(64, 9, 64, 4, 3), False),
]


def compile_case(config, split_k: bool):
    kernel = attention._paged_attention_kernel
    params = list(inspect.signature(kernel.fn).parameters)
    constants = dict(NUM_KV_HEADS=4, QUERIES_PER_KV=7, HEAD_DIM=128, HEAD_DIM_PAD=128, BLOCK_Q=config.block_q,
                     BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_SIZE=16, DIRECT_GRID=True,
                     SPLIT_K=split_k, QUERY_FILTER=0, DOT_PRECISION="tf32", USE_PDL=False,
                     PAGES_AHEAD=config.pages_ahead, ONE_LOOP=config.one_loop, OVERLAP=config.overlap)
    signature, specialised, attrs = {}, {}, {}
    for index, name in enumerate(params):
        if name in POINTERS:
            signature[name] = POINTERS[name]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif name in constants or name.endswith("_dim") or name == "stride_bt_block":
            signature[name] = "constexpr"
            specialised[(index,)] = constants.get(name, 1)  # unit strides: constants, as the JIT makes them
        elif name == "scale_log2":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if name.startswith("stride"):
                attrs[(index,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn=kernel, signature=signature, constexprs=specialised, attrs=attrs)
    options = dict(num_warps=config.num_warps, num_stages=config.num_stages)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def normalized_ttgir(text: str) -> str:
    """TTGIR without source locations, values renamed %v0, %v1, ... in order of appearance."""
    text = re.sub(r" loc\([^)]*\)", "", text)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("#loc"))
    names: dict[str, str] = {}
    return re.sub(r"%[A-Za-z_]\w*", lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dump", default=None, help="also write each case's TTGIR and PTX here")
    parser.add_argument("--compare", default=None, help="a --dump folder of another commit: same TTGIR?")
    args = parser.parse_args()
    verdicts = []
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    lines = ["| case | config | shared KB | registers | spill stores B | programs/SM (regs, smem) | "
             "tiles waited in flight |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, config, split_k in CASES:
        compiled = compile_case(config, split_k)
        ttgir, ptx = compiled.asm["ttgir"], compiled.asm["ptx"]
        with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
            f.write(ptx)
            f.flush()
            report = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull],
                                    capture_output=True, text=True).stderr
        registers = int(re.findall(r"Used (\d+) registers", report)[-1])
        spills = int(re.findall(r"(\d+) bytes spill stores", report)[-1])
        shared = compiled.metadata.shared
        threads = 32 * config.num_warps
        by_regs, by_smem = 65536 // (registers * threads), (228 * 1024) // (shared + 1024)
        in_flight = sorted({int(n) for n in re.findall(r"async_wait .*?\{num = (\d+)", ttgir)})
        lines.append(f"| {label} | {config.block_m}x{config.block_n}, {config.num_warps} warps, "
                     f"{config.num_stages} stages{', ids ahead' if config.pages_ahead else ''} | "
                     f"{shared // 1024} | {registers} | {spills} | {by_regs}, {by_smem} | {in_flight} |")
        stem_name = re.sub(r"\W+", "_", label)
        if args.compare:
            other = os.path.join(args.compare, f"{stem_name}.ttgir")
            if not os.path.exists(other):
                verdicts.append(f"{label}: not in {args.compare}")
            else:
                with open(other) as f:
                    same = normalized_ttgir(f.read()) == normalized_ttgir(ttgir)
                verdicts.append(f"{label}: {'same TTGIR' if same else 'TTGIR DIFFERS'}")
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            stem = os.path.join(args.dump, stem_name)
            for ext, text in (("ttgir", ttgir), ("ptx", ptx)):
                with open(f"{stem}.{ext}", "w") as out:
                    out.write(text)
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    if verdicts:
        print("\nAgainst " + args.compare + ":\n" + "\n".join(verdicts))


if __name__ == "__main__":
    main()
