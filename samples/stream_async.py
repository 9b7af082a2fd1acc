"""Several streaming chats at once with the asyncio SDK; each stream prints as its tokens arrive.

    omniserve serve &
    python samples/stream_async.py --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import time

from omniserve.client import AsyncClient


async def run(base_url: str, api_key: str | None, num_clients: int, max_tokens: int) -> None:
    async with AsyncClient(base_url, api_key=api_key) as client:

        async def one(index: int) -> tuple[int, float, str]:
            start, first, pieces = time.perf_counter(), None, []
            async for text in client.chat_stream(f"Tell story number {index}", max_tokens=max_tokens):
                first = first or time.perf_counter() - start
                pieces.append(text)
            return index, first or 0.0, "".join(pieces)

        start = time.perf_counter()
        for index, first_token_s, text in await asyncio.gather(*(one(i) for i in range(num_clients))):
            print(f"#{index} first token after {first_token_s * 1000:.0f} ms: {text[:60]!r}")
        print(f"{num_clients} streams in {time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://localhost:8000")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(run(args.base_url, args.api_key, args.clients, args.max_tokens))


if __name__ == "__main__":
    main()
