"""What the SDK returns: small dataclasses over the server's JSON (the whole JSON stays in `.raw`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FileObject:
    id: str
    filename: str
    bytes: int
    purpose: str
    created_at: int
    expires_at: int | None = None
    mime_type: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FileObject:
        return cls(
            id=body["id"],
            filename=body.get("filename", ""),
            bytes=body.get("bytes", 0),
            purpose=body.get("purpose", ""),
            created_at=body.get("created_at", 0),
            expires_at=body.get("expires_at"),
            mime_type=body.get("mime_type"),
        )


@dataclass
class ChatResult:
    text: str  # the first choice's text
    finish_reason: str | None
    texts: list[str]  # every choice's text (n > 1)
    usage: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ChatResult:
        choices = sorted(body.get("choices", []), key=lambda c: c.get("index", 0))
        texts = [c.get("message", {}).get("content") or "" for c in choices]
        return cls(
            text=texts[0] if texts else "",
            finish_reason=choices[0].get("finish_reason") if choices else None,
            texts=texts,
            usage=body.get("usage") or {},
            raw=body,
        )


@dataclass
class CompletionResult:
    text: str
    finish_reason: str | None
    texts: list[str]
    usage: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> CompletionResult:
        choices = sorted(body.get("choices", []), key=lambda c: c.get("index", 0))
        texts = [c.get("text") or "" for c in choices]
        return cls(
            text=texts[0] if texts else "",
            finish_reason=choices[0].get("finish_reason") if choices else None,
            texts=texts,
            usage=body.get("usage") or {},
            raw=body,
        )
