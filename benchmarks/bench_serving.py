"""Concurrent streaming clients against `omniserve serve`: throughput, latency percentiles, errors, metrics.

    python benchmarks/bench_serving.py --num-clients 64 --max-tokens 64            # starts the demo server
    python benchmarks/bench_serving.py --base-url http://localhost:8000 --api-key KEY  # an existing server

Every client sends `--requests-per-client` streaming chat requests back to back (ignore_eos, so each
produces exactly max_tokens). Reported: requests/s, output tokens/s, time to first token and inter-token
latency percentiles measured at the client (one SSE chunk ~ one token), errors, and the server's /metrics
afterwards (omniserve_* samples without histogram buckets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import httpx


@dataclass
class RequestResult:
    ok: bool
    error: str = ""
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    output_tokens: int = 0
    gaps_s: list[float] = field(default_factory=list)  # between consecutive content chunks


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def one_request(
    client: httpx.AsyncClient, index: int, max_tokens: int, prompt_words: int
) -> RequestResult:
    words = " ".join(f"word{(index * 7 + i) % 97}" for i in range(prompt_words))
    body = {
        "messages": [{"role": "user", "content": f"Client {index}: {words}"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    chunk_times: list[float] = []
    usage = None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return RequestResult(
                    False, f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                )
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return RequestResult(False, event["error"]["message"])
                if event["choices"]:
                    if event["choices"][0]["delta"].get("content"):
                        chunk_times.append(time.perf_counter())
                elif event.get("usage"):
                    usage = event["usage"]
    except httpx.HTTPError as error:
        return RequestResult(False, f"{type(error).__name__}: {error}")
    end = time.perf_counter()
    if usage is None or not chunk_times:
        return RequestResult(False, "stream ended without usage or content")
    gaps = [b - a for a, b in zip(chunk_times, chunk_times[1:], strict=False)]
    return RequestResult(
        True,
        ttft_s=chunk_times[0] - start,
        e2e_s=end - start,
        output_tokens=usage["completion_tokens"],
        gaps_s=gaps,
    )


async def run_clients(args: argparse.Namespace, base_url: str) -> tuple[list[RequestResult], float]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(
        max_connections=args.num_clients + 8, max_keepalive_connections=args.num_clients + 8
    )
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600, limits=limits) as client:

        async def client_loop(index: int) -> list[RequestResult]:
            return [
                await one_request(client, index * 1000 + r, args.max_tokens, args.prompt_words)
                for r in range(args.requests_per_client)
            ]

        start = time.perf_counter()
        per_client = await asyncio.gather(*(client_loop(i) for i in range(args.num_clients)))
        return [r for results in per_client for r in results], time.perf_counter() - start


def metrics_excerpt(base_url: str) -> str:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    keep = [line for line in text.splitlines() if line.startswith("omniserve_") and "_bucket{" not in line]
    return "\n".join(keep)


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "omniserve",
        "serve",
        *([args.model] if args.model else []),
        "--port",
        str(port),
        "--device",
        args.device,
        "--no-access-log",
        "--log-level",
        "warning",
        *args.server_arg,
    ]
    process = subprocess.Popen(command, env=dict(os.environ))
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not start in 300 s")


def _stats(values: list[float], digits: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"p{q}": round(percentile(values, q), digits) for q in (50, 90, 99)}
    out["mean"] = round(statistics.fmean(values), digits) if values else None
    return out


def report(results: list[RequestResult], duration_s: float, args: argparse.Namespace) -> dict:
    good = [r for r in results if r.ok]
    errors = [r.error for r in results if not r.ok]
    tokens = sum(r.output_tokens for r in good)
    ttft = [r.ttft_s * 1000 for r in good]
    gaps = [g * 1000 for r in good for g in r.gaps_s]
    e2e = [r.e2e_s for r in good]
    summary = {
        "num_clients": args.num_clients,
        "requests": len(results),
        "ok": len(good),
        "errors": len(errors),
        "max_tokens": args.max_tokens,
        "duration_s": round(duration_s, 3),
        "requests_per_s": round(len(good) / duration_s, 3),
        "output_tokens_per_s": round(tokens / duration_s, 1),
        "ttft_ms": _stats(ttft, 1),
        "itl_ms": _stats(gaps, 2),
        "e2e_s": {f"p{q}": round(percentile(e2e, q), 3) for q in (50, 99)},
    }
    print(json.dumps(summary, indent=2))
    for error in sorted(set(errors))[:10]:
        print("error:", error)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=None, help="an existing server; none = start `omniserve serve`")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--model", default=None, help="when starting a server: its MODEL (none = demo)")
    parser.add_argument("--device", default="cpu", help="when starting a server")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra `omniserve serve` flag (repeatable)"
    )
    parser.add_argument("--num-clients", type=int, default=64)
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=16)
    parser.add_argument("--json-out", default=None, help="also write the summary here")
    args = parser.parse_args()
    process = None
    base_url = args.base_url
    if base_url is None:
        process, base_url = start_server(args)
    try:
        asyncio.run(
            run_clients(
                argparse.Namespace(
                    **{**vars(args), "num_clients": 2, "requests_per_client": 1, "max_tokens": 4}
                ),
                base_url,
            )
        )  # warm-up
        results, duration = asyncio.run(run_clients(args, base_url))
        summary = report(results, duration, args)
        print("\n/metrics after the run:\n" + metrics_excerpt(base_url))
        if args.json_out:
            with open(args.json_out, "w") as file:
                json.dump(
                    {**summary, "results": [asdict(r) | {"gaps_s": None} for r in results]}, file, indent=1
                )
        if summary["errors"]:
            raise SystemExit(1)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
