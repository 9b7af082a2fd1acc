"""Building requests shared by `Client` and `AsyncClient`: messages with local media, SSE parsing.

Local media paths become OpenAI content parts: small files are inlined (image/video as data URLs, wav/mp3
audio as `input_audio`), larger ones are uploaded first and referenced by file id (`{"type": "file"}`);
`files=` are always uploaded (a text file's content then reaches the model as text).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
from pathlib import Path
from typing import Any

from omniserve.client.errors import OmniServeError

INLINE_LIMIT_BYTES = 4 * 1024**2  # larger media are uploaded instead of inlined
_INLINE_AUDIO_FORMATS = ("wav", "mp3")
MediaPath = str | os.PathLike[str]


def mime_of(path: Path, default: str) -> str:
    return mimetypes.guess_type(path.name)[0] or default


def inline_part(kind: str, path: Path, inline_limit: int) -> dict[str, Any] | None:
    """The inline content part for a local file; None when it must be uploaded (too big, no inline form)."""
    size = path.stat().st_size
    if size > inline_limit:
        return None
    if kind == "audio":
        audio_format = path.suffix.lower().lstrip(".")
        if audio_format not in _INLINE_AUDIO_FORMATS:
            return None
        return {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(path.read_bytes()).decode(), "format": audio_format},
        }
    mime = mime_of(path, f"{kind}/*")
    url = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
    return (
        {"type": "image_url", "image_url": {"url": url}}
        if kind == "image"
        else {"type": "video_url", "video_url": {"url": url}}
    )


def file_part(file_id: str) -> dict[str, Any]:
    return {"type": "file", "file": {"file_id": file_id}}


def media_items(images, audios, videos, files) -> list[tuple[str, Path]]:
    """(kind, path) in the order the parts will appear: images, audios, videos, files."""
    items = [("image", Path(p)) for p in images] + [("audio", Path(p)) for p in audios]
    items += [("video", Path(p)) for p in videos] + [("file", Path(p)) for p in files]
    for _, path in items:
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    return items


def build_messages(
    prompt: str | list[dict[str, Any]], parts: list[dict[str, Any]], system: str | None
) -> list[dict[str, Any]]:
    """A text prompt becomes one user message (media parts first, then the text); a message list is kept
    and the parts join its last user message."""
    if isinstance(prompt, str):
        content: str | list[dict[str, Any]] = [*parts, {"type": "text", "text": prompt}] if parts else prompt
        messages = [{"role": "user", "content": content}]
    else:
        messages = [dict(m) for m in prompt]
        if parts:
            last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
            if last_user is None:
                raise ValueError("media need a user message to attach to")
            existing = messages[last_user].get("content")
            text_parts = (
                [{"type": "text", "text": existing}] if isinstance(existing, str) else list(existing or [])
            )
            messages[last_user]["content"] = [*parts, *text_parts]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def request_body(
    model: str, messages_or_prompt_key: str, value: Any, stream: bool, params: dict[str, Any]
) -> dict[str, Any]:
    body = {
        "model": model,
        messages_or_prompt_key: value,
        **{k: v for k, v in params.items() if v is not None},
    }
    if stream:
        body["stream"] = True
    return body


def parse_sse_line(line: str) -> dict[str, Any] | None:
    """One SSE line -> its JSON event; None for blank lines, comments and `[DONE]`."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    event = json.loads(data)
    if "error" in event:
        raise OmniServeError.from_body(500, event)
    return event


def delta_text(event: dict[str, Any], chat: bool) -> str:
    """The text of choice 0 in a chunk ('' when there is none)."""
    for choice in event.get("choices", ()):
        if choice.get("index", 0) == 0:
            return (choice.get("delta", {}).get("content") if chat else choice.get("text")) or ""
    return ""
