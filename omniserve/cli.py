"""`omniserve` command line: `omniserve serve [MODEL]` (the OpenAI-compatible server, `omniserve.api.serve`)
and `omniserve generate [--model M] PROMPT...` (offline).

Engine flags map one to one to the config fields (see omniserve.cli_args); with no model the built-in
demo checkpoint is built locally and used.
"""

from __future__ import annotations

import argparse
import logging
import sys

from omniserve import envs
from omniserve.api.serve import add_serve_arguments, run_serve
from omniserve.cli_args import add_engine_arguments, engine_kwargs_from_args


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--max-tokens", type=int, default=64)
    group.add_argument("--temperature", type=float, default=0.0)
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--top-k", type=int, default=0)
    group.add_argument("--min-p", type=float, default=0.0)
    group.add_argument("--sampling-seed", type=int, default=None, help="per-request sampling seed")
    group.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    group.add_argument("--repetition-penalty", type=float, default=1.0)
    group.add_argument("--presence-penalty", type=float, default=0.0)
    group.add_argument("--frequency-penalty", type=float, default=0.0)
    group.add_argument("--ignore-eos", action="store_true")


def _generate(args: argparse.Namespace) -> int:
    from omniserve import Omni, SamplingParams

    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        min_p=args.min_p, seed=args.sampling_seed, stop=args.stop, repetition_penalty=args.repetition_penalty,
        presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
        ignore_eos=args.ignore_eos,
    )
    omni = Omni(**engine_kwargs_from_args(args))
    prompts = [{"messages": [{"role": "user", "content": p}]} if args.chat else p for p in args.prompts]
    if len(prompts) == 1 and not args.no_stream:
        for delta in omni.stream(prompts, params):
            print(delta.text, end="", flush=True)
            if delta.output is not None:
                print(f"\n[{len(delta.output.token_ids)} tokens, finish_reason={delta.finish_reason}]")
        return 0
    for prompt, output in zip(args.prompts, omni.generate(prompts, params), strict=True):
        summary = f"[{len(output.token_ids)} tokens, finish_reason={output.finish_reason}]"
        print(f"### {prompt}\n{output.text}\n{summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniserve", description="Serve and run multimodal omni models.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    add_serve_arguments(serve)
    generate = commands.add_parser("generate", help="generate text offline for one or more prompts")
    generate.add_argument("prompts", nargs="+", metavar="PROMPT")
    generate.add_argument("--chat", action="store_true", help="send each prompt as a user chat message")
    generate.add_argument("--no-stream", action="store_true",
                          help="print whole outputs, not tokens as they come")
    _add_sampling_arguments(generate)
    add_engine_arguments(generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=envs.log_level(), format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "serve":
            return run_serve(args)
    except ValueError as error:  # bad input: one clear line, no traceback
        print(f"omniserve: error: {error}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
