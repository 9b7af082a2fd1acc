"""A prompt's media, as the caller gave it: `multi_modal_data`, OpenAI content parts, `mm_processor_kwargs`.

In: the parts of a prompt dict. Out: `MediaInput`s in prompt order per modality (named "image 0", "audio 1",
... for error messages), `MediaOptions`, and, for messages, a copy whose media parts are normalised to
`{"type": "image" | "audio" | "video"}` so that any Qwen chat template emits one placeholder per part.
Nothing is decoded here: sources stay bytes, paths, data URLs, arrays or PIL images.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from omniserve.encoders.media_errors import MediaError

# OpenAI `input_audio.format` values we accept; the decoder sniffs the bytes, the format is only checked.
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "m4a", "aac", "webm", "mp4", "pcm16")
_PART_MODALITY = {
    "image_url": "image", "image": "image", "input_image": "image",
    "input_audio": "audio", "audio": "audio", "audio_url": "audio",
    "video_url": "video", "video": "video",
}  # fmt: skip
_MM_KWARGS = ("use_audio_in_video", "fps")


@dataclass(frozen=True)
class MediaInput:
    modality: str  # "image" | "video" | "audio"
    source: Any  # PIL image, bytes, path, data URL, uint8 array, (samples, rate): what the caller gave
    name: str  # "image 0": modality and index among the prompt's items of that modality
    audio: Any = None  # a video's audio track given explicitly (use_audio_in_video); None: decode it


@dataclass(frozen=True)
class MediaOptions:
    use_audio_in_video: bool = False  # Omni: a video's audio track joins it, interleaved in 2 s chunks
    fps: float | None = None  # video frames per second to sample (or of the given frames); None: 2.0


def parse_options(kwargs: Any) -> MediaOptions:
    if kwargs is None:
        return MediaOptions()
    if not isinstance(kwargs, dict):
        raise ValueError(f"mm_processor_kwargs must be a dict, got {type(kwargs).__name__}")
    unknown = sorted(set(kwargs) - set(_MM_KWARGS))
    if unknown:
        raise ValueError(f"unknown mm_processor_kwargs {unknown}; accepted: {list(_MM_KWARGS)}")
    use_audio_in_video = kwargs.get("use_audio_in_video", False)
    if not isinstance(use_audio_in_video, bool):
        raise ValueError(f"mm_processor_kwargs.use_audio_in_video must be a bool, got {use_audio_in_video!r}")
    fps = kwargs.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 240):
        raise ValueError(f"mm_processor_kwargs.fps must be a number in (0, 240], got {fps!r}")
    return MediaOptions(use_audio_in_video, None if fps is None else float(fps))


def _as_list(value: Any) -> list[Any]:
    """One item or a list of items. A tuple is one audio item (samples, rate); an array is one item."""
    if isinstance(value, list):
        return value
    return [value]


def media_from_data(data: Any, modalities: tuple[str, ...]) -> list[MediaInput]:
    """`multi_modal_data` -> MediaInputs, modality by modality, each in the order given."""
    if not isinstance(data, dict):
        raise ValueError(f"multi_modal_data must be a dict of modality -> item(s), got {type(data).__name__}")
    unknown = sorted(set(data) - set(modalities))
    if unknown:
        raise ValueError(f"this model takes {list(modalities)} in multi_modal_data, not {unknown}")
    inputs = []
    for modality in modalities:
        for index, value in enumerate(_as_list(data.get(modality, []))):
            name = f"{modality} {index}"
            if value is None:
                raise MediaError("no data (None)", item=name)
            audio = None
            if modality == "video" and isinstance(value, dict):
                if set(value) - {"video", "audio"} or "video" not in value:
                    raise MediaError(
                        "a video given as a dict needs 'video' (and optionally 'audio')", item=name
                    )
                value, audio = value["video"], value.get("audio")
            inputs.append(MediaInput(modality, value, name, audio))
    return inputs


def _decode_input_audio(payload: Any, name: str) -> bytes:
    if not isinstance(payload, dict) or "data" not in payload:
        raise MediaError("input_audio needs {'data': base64, 'format': 'wav' | 'mp3' | ...}", item=name)
    audio_format = str(payload.get("format", "")).lower()
    if audio_format and audio_format not in AUDIO_FORMATS:
        raise MediaError(f"unsupported audio format {audio_format!r} (supported: {AUDIO_FORMATS})", item=name)
    data = payload["data"]
    if not isinstance(data, str):
        raise MediaError("input_audio.data must be a base64 string", item=name)
    try:
        decoded = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise MediaError(f"input_audio.data is not valid base64 ({error})", item=name) from error
    if not decoded:
        raise MediaError("input_audio.data is empty", item=name)
    return decoded


def _url(part: dict[str, Any], key: str, name: str) -> str:
    value = part.get(key)
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise MediaError(f"{key} needs a url: {{'{key}': {{'url': 'data:...' or a local path}}}}", item=name)
    return url


def _part_source(kind: str, part: dict[str, Any], name: str) -> Any:
    if kind in ("image_url", "video_url", "audio_url"):
        return _url(part, kind, name)
    if kind == "input_audio":
        return _decode_input_audio(part.get("input_audio"), name)
    if kind == "input_image":  # OpenAI Responses style: {"type": "input_image", "image_url": "..."}
        return _url(part, "image_url", name)
    if kind not in part:
        raise MediaError(f"content part of type {kind!r} needs its data under {kind!r}", item=name)
    return part[kind]


def media_from_messages(messages: Any) -> tuple[list[dict[str, Any]], list[MediaInput]]:
    """OpenAI chat messages -> (messages with media parts normalised for the template, MediaInputs)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} objects")
    counts: dict[str, int] = {}
    rendered, inputs = [], []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(f"each message needs a 'role': got {message!r}")
        content = message.get("content")
        if not isinstance(content, list):
            rendered.append(message)
            continue
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append(part)
                continue
            if kind == "file":
                raise ValueError("file content parts are resolved by the API server; send image_url, ...")
            modality = _PART_MODALITY.get(kind)  # type: ignore[arg-type]
            if modality is None:
                raise ValueError(
                    f"unknown content part {part!r}; expected text, image_url, input_audio or video_url"
                )
            name = f"{modality} {counts.get(modality, 0)}"
            counts[modality] = counts.get(modality, 0) + 1
            inputs.append(MediaInput(modality, _part_source(kind, part, name), name))
            parts.append({"type": modality})
        rendered.append({**message, "content": parts})
    return rendered, inputs
