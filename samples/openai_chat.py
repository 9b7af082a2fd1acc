"""The official openai client against omniserve: chat, streaming, a file used by id, completions.

    omniserve serve &                       # the demo model on http://localhost:8000
    python samples/openai_chat.py           # --base-url, --api-key if the server has one
"""

from __future__ import annotations

import argparse
from pathlib import Path

import openai

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://localhost:8000/v1")
    parser.add_argument("--api-key", default="none")
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = client.models.list().data[0].id

    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello! Who are you?"}], max_tokens=32
    )
    print("chat:", chat.choices[0].message.content, f"({chat.usage.completion_tokens} tokens)")

    print("stream: ", end="")
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count to five"}], max_tokens=32, stream=True
    )
    for chunk in stream:
        if chunk.choices:
            print(chunk.choices[0].delta.content or "", end="", flush=True)
    print()

    notes = client.files.create(file=(HERE / "notes.txt").open("rb"), purpose="user_data")
    answer = client.chat.completions.create(
        model=model,
        max_tokens=32,
        messages=[{"role": "user", "content": [
            {"type": "file", "file": {"file_id": notes.id}},
            {"type": "text", "text": "What happened on Wednesday?"},
        ]}],  # fmt: skip
    )
    print(f"with {notes.id}:", answer.choices[0].message.content)
    client.files.delete(notes.id)

    completion = client.completions.create(model=model, prompt="The lighthouse", max_tokens=16)
    print("completion:", completion.choices[0].text)


if __name__ == "__main__":
    main()
