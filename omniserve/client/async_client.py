"""`AsyncClient`: the asyncio SDK, the same calls as `Client`, awaited (streams are async iterators).

async with AsyncClient("http://localhost:8000") as client:
    async for text in client.chat_stream("Hello", max_tokens=32):
        print(text, end="")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from omniserve.client import content
from omniserve.client.content import MediaPath
from omniserve.client.errors import raise_for_error
from omniserve.client.types import ChatResult, CompletionResult, FileObject


class AsyncClient:
    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 600.0,
        inline_limit_bytes: int = content.INLINE_LIMIT_BYTES,
        max_connections: int = 1000,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, limits=limits
        )
        self._model = model
        self.inline_limit_bytes = inline_limit_bytes

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # ----- service ----------------------------------------------------------------------------------------
    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        raise_for_error(response)
        return response.json()

    async def health(self) -> bool:
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def models(self) -> list[str]:
        return [card["id"] for card in (await self._json("GET", "/v1/models"))["data"]]

    async def model(self) -> str:
        if self._model is None:
            self._model = (await self.models())[0]
        return self._model

    async def metrics(self) -> str:
        response = await self._http.get("/metrics")
        raise_for_error(response)
        return response.text

    # ----- files ------------------------------------------------------------------------------------------
    async def upload(self, path: MediaPath, purpose: str = "user_data") -> FileObject:
        path = Path(path)
        files = {"file": (path.name, path.read_bytes(), content.mime_of(path, "application/octet-stream"))}
        return FileObject.from_json(
            await self._json("POST", "/v1/files", files=files, data={"purpose": purpose})
        )

    async def files(self) -> list[FileObject]:
        return [FileObject.from_json(item) for item in (await self._json("GET", "/v1/files"))["data"]]

    async def file(self, file_id: str) -> FileObject:
        return FileObject.from_json(await self._json("GET", f"/v1/files/{file_id}"))

    async def delete_file(self, file_id: str) -> bool:
        return bool((await self._json("DELETE", f"/v1/files/{file_id}")).get("deleted"))

    # ----- generation -------------------------------------------------------------------------------------
    async def _messages(self, prompt, images, audios, videos, files, system) -> list[dict[str, Any]]:
        parts = []
        for kind, path in content.media_items(images, audios, videos, files):
            part = content.inline_part(kind, path, self.inline_limit_bytes) if kind != "file" else None
            parts.append(part or content.file_part((await self.upload(path)).id))
        return content.build_messages(prompt, parts, system)

    async def chat(
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
        messages = await self._messages(prompt, images, audios, videos, files, system)
        body = content.request_body(await self.model(), "messages", messages, False, params)
        return ChatResult.from_json(await self._json("POST", "/v1/chat/completions", json=body))

    async def chat_stream(
        self,
        prompt: str | list[dict[str, Any]],
        *,
        images: Sequence[MediaPath] = (),
        audios: Sequence[MediaPath] = (),
        videos: Sequence[MediaPath] = (),
        files: Sequence[MediaPath] = (),
        system: str | None = None,
        **params: Any,
    ) -> AsyncIterator[str]:
        messages = await self._messages(prompt, images, audios, videos, files, system)
        body = content.request_body(await self.model(), "messages", messages, True, params)
        async for text in self._stream("/v1/chat/completions", body, chat=True):
            yield text

    async def complete(self, prompt: str | list[int], **params: Any) -> CompletionResult:
        body = content.request_body(await self.model(), "prompt", prompt, False, params)
        return CompletionResult.from_json(await self._json("POST", "/v1/completions", json=body))

    async def complete_stream(self, prompt: str | list[int], **params: Any) -> AsyncIterator[str]:
        body = content.request_body(await self.model(), "prompt", prompt, True, params)
        async for text in self._stream("/v1/completions", body, chat=False):
            yield text

    async def _stream(self, path: str, body: dict[str, Any], chat: bool) -> AsyncIterator[str]:
        async with self._http.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_error(response)
            async for line in response.aiter_lines():
                event = content.parse_sse_line(line)
                if event is not None:
                    text = content.delta_text(event, chat)
                    if text:
                        yield text
