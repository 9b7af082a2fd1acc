"""The omniserve SDK: chat, streaming, files, and local media paths that it inlines or uploads.

    omniserve serve &
    python samples/sdk_chat.py              # --base-url, --api-key if the server has one
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omniserve.client import Client, OmniServeError

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://localhost:8000")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    with Client(args.base_url, api_key=args.api_key) as client:
        print("healthy:", client.health(), "models:", client.models())
        result = client.chat("Hello! Who are you?", max_tokens=32, temperature=0.7, seed=1)
        print("chat:", result.text, f"[{result.finish_reason}, {result.usage['completion_tokens']} tokens]")

        print("stream: ", end="")
        for text in client.chat_stream("Count to five", max_tokens=32):
            print(text, end="", flush=True)
        print()

        # A text file is uploaded and referenced by id; its content reaches the model as text.
        answer = client.chat("What happened on Wednesday?", files=[HERE / "notes.txt"], max_tokens=32)
        print("about notes.txt:", answer.text)

        # Media: small files are inlined (data URLs / input_audio), big ones uploaded. The demo model is
        # text-only, so the server answers 400 with a clear message until the multimodal models land.
        for media in ({"images": [HERE / "image.png"]}, {"audios": [HERE / "speech.wav"]},
                      {"videos": [HERE / "video.mp4"]}):
            try:
                print(client.chat("Describe this.", max_tokens=32, **media).text)
            except OmniServeError as error:
                print(f"{list(media)[0]}: server said {error.status_code}: {error.message}")


if __name__ == "__main__":
    main()
