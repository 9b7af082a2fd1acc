"""OpenAI chat messages -> a canonical prompt for the frontend, plus the media it references.

In: `messages` as sent to /v1/chat/completions. Content parts:
    {"type": "text", "text": ...}
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,..." | "https://..."}}
    {"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav" | "mp3" | ...}}
    {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..." | "https://..."}}
    {"type": "file", "file": {"file_id": "file-..."} | {"file_data": <data URL or base64>, "filename": ...}}
Out: `ParsedChat`: messages whose parts are `{"type": "text", "text"}` or `{"type": <modality>,
"media_index": k}` (the chat template's placeholders), and `media[k]` = (param path, `MediaRef`).
An uploaded text file (UTF-8, no media signature) referenced by a `file` part becomes a text part.
Every error is a 400 whose `param` names the exact part (e.g. "messages[1].content[2].image_url.url").
Blocking work (base64 decoding, reading uploads): call `parse` in a worker thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omniserve.api.errors import APIError, bad_request
from omniserve.api.file_store import FileStore, StoredFile
from omniserve.api.media import (
    MediaRef,
    audio_mime,
    content_hash,
    decode_base64,
    fetch_remote,
    modality_of,
    parse_data_url,
    sniff_mime,
)

ROLES = ("system", "developer", "user", "assistant", "tool")
_URL_PARTS = {"image_url": "image", "video_url": "video"}


@dataclass
class ParsedChat:
    messages: list[dict[str, Any]]
    media: list[tuple[str, MediaRef]] = field(default_factory=list)  # (param path, reference), prompt order

    def prompt(self) -> dict[str, Any]:
        """The frontend's prompt: messages whose media parts carry their bytes (or upload path) inline, as
        `{"type": "image", "image": <bytes | path>}` (remote URLs must have been fetched by then)."""
        if not self.media:
            return {"messages": self.messages}

        def resolve(part: Any) -> Any:
            if not (isinstance(part, dict) and "media_index" in part):
                return part
            param, ref = self.media[part["media_index"]]
            source = ref.data if ref.data is not None else (str(ref.path) if ref.path is not None else None)
            if source is None:
                raise ValueError(f"the {ref.modality} at {param} was not fetched")
            return {"type": ref.modality, ref.modality: source}

        messages = [
            {**m, "content": [resolve(p) for p in m["content"]]} if isinstance(m.get("content"), list) else m
            for m in self.messages
        ]
        return {"messages": messages}

    async def fetch_remote_media(self, max_bytes: int, timeout_s: float) -> None:
        """Load the http(s) media of this chat (only called when the server allows remote media)."""
        for index, (param, ref) in enumerate(self.media):
            if ref.data is None and ref.path is None and ref.url is not None:
                try:
                    mime, data = await fetch_remote(ref.url, max_bytes, timeout_s)
                except ValueError as error:
                    raise bad_request(str(error), param) from error
                self.media[index] = (param, dataclasses.replace(ref, data=data, mime_type=mime))


def _field(part: dict[str, Any], name: str, param: str) -> dict[str, Any]:
    value = part.get(name)
    if not isinstance(value, dict):
        raise bad_request(
            f"content part of type {part['type']!r} needs an object {name!r}", f"{param}.{name}"
        )
    return value


def _string(container: dict[str, Any], name: str, param: str) -> str:
    value = container.get(name)
    if not isinstance(value, str) or not value:
        raise bad_request(f"'{param}' must be a non-empty string", param)
    return value


def _is_text_file(record: StoredFile, data: bytes) -> bool:
    if modality_of(record.mime_type) or sniff_mime(data[:16]):
        return False
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class ChatContentParser:
    def __init__(self, files: FileStore, allow_remote_media: bool) -> None:
        self.files = files
        self.allow_remote_media = allow_remote_media

    def parse(self, messages: list[dict[str, Any]]) -> ParsedChat:
        if not messages:
            raise bad_request("messages must be a non-empty list", "messages")
        parsed = ParsedChat(messages=[])
        for i, message in enumerate(messages):
            param = f"messages[{i}]"
            role = message.get("role")
            if role not in ROLES:
                raise bad_request(
                    f"'{param}.role' must be one of {list(ROLES)}, got {role!r}", f"{param}.role"
                )
            content = message.get("content")
            if content is None and role == "assistant":
                content = ""
            if isinstance(content, str):
                parts: str | list[dict[str, Any]] = content
            elif isinstance(content, list):
                parts = [self._part(part, f"{param}.content[{j}]", parsed) for j, part in enumerate(content)]
            else:
                raise bad_request(
                    f"'{param}.content' must be a string or a list of content parts", f"{param}.content"
                )
            parsed.messages.append({"role": "system" if role == "developer" else role, "content": parts})
        return parsed

    # ----- one content part ---------------------------------------------------------------------------------
    def _part(self, part: Any, param: str, parsed: ParsedChat) -> dict[str, Any]:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(f"'{param}' must be an object with a 'type'", param)
        kind = part["type"]
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"'{param}.text' must be a string", f"{param}.text")
            return {"type": "text", "text": text}
        if kind in _URL_PARTS:
            url = _string(_field(part, kind, param), "url", f"{param}.{kind}.url")
            ref = self._url_ref(url, _URL_PARTS[kind], f"{param}.{kind}.url")
        elif kind == "input_audio":
            audio = _field(part, kind, param)
            data_text = _string(audio, "data", f"{param}.input_audio.data")
            format_name = _string(audio, "format", f"{param}.input_audio.format")
            mime = audio_mime(format_name)
            if mime is None:
                raise bad_request(
                    f"unsupported input_audio format {format_name!r}", f"{param}.input_audio.format"
                )
            data = self._base64(data_text, f"{param}.input_audio.data")
            ref = MediaRef("audio", mime, "data_url", data=data, content_hash=content_hash(data))
        elif kind == "file":
            return self._file_part(_field(part, kind, param), param, parsed)
        else:
            raise bad_request(
                f"unknown content part type {kind!r}; expected one of 'text', 'image_url', "
                f"'input_audio', 'video_url', 'file'",
                f"{param}.type",
            )
        return self._add_media(ref, param, parsed)

    @staticmethod
    def _add_media(ref: MediaRef, param: str, parsed: ParsedChat) -> dict[str, Any]:
        parsed.media.append((param, ref))
        return {"type": ref.modality, "media_index": len(parsed.media) - 1}

    @staticmethod
    def _base64(text: str, param: str) -> bytes:
        try:
            data = decode_base64(text)
        except ValueError as error:
            raise bad_request(f"'{param}': {error}", param) from error
        if not data:
            raise bad_request(f"'{param}' holds no data", param)
        return data

    def _url_ref(self, url: str, modality: str, param: str) -> MediaRef:
        if url.startswith("data:"):
            try:
                mime, data = parse_data_url(url)
            except ValueError as error:
                raise bad_request(f"'{param}': {error}", param) from error
            if modality_of(mime) not in (modality, None):
                raise bad_request(f"'{param}' holds {mime}, not {modality}", param)
            return MediaRef(modality, mime, "data_url", data=data, content_hash=content_hash(data))
        if url.startswith(("http://", "https://")):
            if not self.allow_remote_media:
                raise bad_request(
                    f"'{param}': remote media URLs are disabled on this server (start it with "
                    f"--allow-remote-media); send a data URL or upload the file",
                    param,
                )
            return MediaRef(modality, "application/octet-stream", "url", url=url)
        raise bad_request(f"'{param}' must be a data URL (data:<mime>;base64,...) or an http(s) URL", param)

    def _file_part(self, file: dict[str, Any], param: str, parsed: ParsedChat) -> dict[str, Any]:
        if "file_id" in file:
            file_id = _string(file, "file_id", f"{param}.file.file_id")
            record = self.files.get(file_id)
            if record is None:
                raise APIError(
                    400,
                    f"no file with id {file_id!r} (unknown, deleted or expired)",
                    param=f"{param}.file.file_id",
                    code="file_not_found",
                )
            data = self.files.read(record)
            if _is_text_file(record, data):
                return {"type": "text", "text": data.decode("utf-8")}
            mime = sniff_mime(data) or record.mime_type
            ref = MediaRef(
                modality_of(mime) or "file",
                mime,
                "file",
                path=self.files.blob_path(record),
                content_hash=record.sha256,
            )
        elif "file_data" in file:
            raw = _string(file, "file_data", f"{param}.file.file_data")
            if raw.startswith("data:"):
                try:
                    mime, data = parse_data_url(raw)
                except ValueError as error:
                    raise bad_request(
                        f"'{param}.file.file_data': {error}", f"{param}.file.file_data"
                    ) from error
            else:
                data, mime = self._base64(raw, f"{param}.file.file_data"), "application/octet-stream"
            mime = sniff_mime(data) or mime
            if modality_of(mime) is None and mime.startswith("text/"):
                return {"type": "text", "text": data.decode("utf-8", errors="replace")}
            ref = MediaRef(
                modality_of(mime) or "file", mime, "data_url", data=data, content_hash=content_hash(data)
            )
        else:
            raise bad_request(f"'{param}.file' needs 'file_id' or 'file_data'", f"{param}.file")
        if ref.modality == "file":
            raise bad_request(
                f"'{param}': files of type {ref.mime_type} are not supported; send text, an image, "
                f"audio or video",
                param,
            )
        return self._add_media(ref, param, parsed)
