"""`Client`: the synchronous SDK. Every call is one HTTP request (two when media must be uploaded first).

Generation parameters are the server's (OpenAI names): max_tokens, temperature, top_p, seed, stop, n,
presence_penalty, frequency_penalty, logprobs, ... passed as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from omniserve.client import content
from omniserve.client.content import MediaPath
from omniserve.client.errors import raise_for_error
from omniserve.client.types import ChatResult, CompletionResult, FileObject


class Client:
    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 600.0,
        inline_limit_bytes: int = content.INLINE_LIMIT_BYTES,
    ) -> None:
        """`base_url` with or without the trailing `/v1`; `model` defaults to the server's only model."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._model = model
        self.inline_limit_bytes = inline_limit_bytes

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ----- service ----------------------------------------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        raise_for_error(response)
        return response.json()

    def health(self) -> bool:
        try:
            return self._http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[str]:
        return [card["id"] for card in self._json("GET", "/v1/models")["data"]]

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self.models()[0]
        return self._model

    def metrics(self) -> str:
        response = self._http.get("/metrics")
        raise_for_error(response)
        return response.text

    # ----- files ------------------------------------------------------------------------------------------
    def upload(self, path: MediaPath, purpose: str = "user_data") -> FileObject:
        path = Path(path)
        with path.open("rb") as file:
            files = {"file": (path.name, file, content.mime_of(path, "application/octet-stream"))}
            return FileObject.from_json(
                self._json("POST", "/v1/files", files=files, data={"purpose": purpose})
            )

    def files(self) -> list[FileObject]:
        return [FileObject.from_json(item) for item in self._json("GET", "/v1/files")["data"]]

    def file(self, file_id: str) -> FileObject:
        return FileObject.from_json(self._json("GET", f"/v1/files/{file_id}"))

    def delete_file(self, file_id: str) -> bool:
        return bool(self._json("DELETE", f"/v1/files/{file_id}").get("deleted"))

    # ----- generation -------------------------------------------------------------------------------------
    def _messages(self, prompt, images, audios, videos, files, system) -> list[dict[str, Any]]:
        parts = []
        for kind, path in content.media_items(images, audios, videos, files):
            part = content.inline_part(kind, path, self.inline_limit_bytes) if kind != "file" else None
            parts.append(part or content.file_part(self.upload(path).id))
        return content.build_messages(prompt, parts, system)

    def chat(
        self,
        prompt: str | list[dict[str, Any]],
        *,
        images: Sequence[MediaPath] = (),
        audios: Sequence[MediaPath] = (),
        videos: Sequence[MediaPath] = (),
        files: Sequence[MediaPath] = (),
        system: str | None = None,
        **params: Any,
    ) -> ChatResult:
        """One chat completion. `prompt`: a user message, or a whole OpenAI message list."""
        messages = self._messages(prompt, images, audios, videos, files, system)
        body = content.request_body(self.model, "messages", messages, False, params)
        return ChatResult.from_json(self._json("POST", "/v1/chat/completions", json=body))

    def chat_stream(
        self,
        prompt: str | list[dict[str, Any]],
        *,
        images: Sequence[MediaPath] = (),
        audios: Sequence[MediaPath] = (),
        videos: Sequence[MediaPath] = (),
        files: Sequence[MediaPath] = (),
        system: str | None = None,
        **params: Any,
    ) -> Iterator[str]:
        """Text deltas of the first choice as they are generated; stopping early cancels the request."""
        messages = self._messages(prompt, images, audios, videos, files, system)
        body = content.request_body(self.model, "messages", messages, True, params)
        yield from self._stream("/v1/chat/completions", body, chat=True)

    def complete(self, prompt: str | list[int], **params: Any) -> CompletionResult:
        body = content.request_body(self.model, "prompt", prompt, False, params)
        return CompletionResult.from_json(self._json("POST", "/v1/completions", json=body))

    def complete_stream(self, prompt: str | list[int], **params: Any) -> Iterator[str]:
        body = content.request_body(self.model, "prompt", prompt, True, params)
        yield from self._stream("/v1/completions", body, chat=False)

    def _stream(self, path: str, body: dict[str, Any], chat: bool) -> Iterator[str]:
        with self._http.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                response.read()
                raise_for_error(response)
            for line in response.iter_lines():
                event = content.parse_sse_line(line)
                if event is not None:
                    text = content.delta_text(event, chat)
                    if text:
                        yield text
