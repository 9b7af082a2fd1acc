"""`TokenLogprob`s -> the OpenAI logprobs objects of chat (`{"content": [...]}`) and completions
(`{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`). Token strings are decoded one id at a
time (a token that ends inside a UTF-8 character shows as U+FFFD; its `bytes` are those of that string).
"""

from __future__ import annotations

from typing import Any

from omniserve.core.messages import TokenLogprob


class LogprobFormatter:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def token(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            if len(self._cache) < 1_000_000:
                self._cache[token_id] = text
        return text

    def chat(self, logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
        if logprobs is None:
            return None
        content = []
        for entry in logprobs:
            token = self.token(entry.token_id)
            content.append(
                {
                    "token": token,
                    "logprob": entry.logprob,
                    "bytes": list(token.encode()),
                    "top_logprobs": [
                        {"token": (t := self.token(i)), "logprob": lp, "bytes": list(t.encode())}
                        for i, lp in entry.top
                    ],
                }
            )
        return {"content": content}

    def completion(self, logprobs: list[TokenLogprob] | None, text_offset: int) -> dict[str, Any] | None:
        if logprobs is None:
            return None
        tokens, token_logprobs, top, offsets = [], [], [], []
        for entry in logprobs:
            token = self.token(entry.token_id)
            tokens.append(token)
            token_logprobs.append(entry.logprob)
            top.append({self.token(i): lp for i, lp in entry.top} if entry.top else None)
            offsets.append(text_offset)
            text_offset += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top,
            "text_offset": offsets,
        }
