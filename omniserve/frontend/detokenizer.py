"""Incremental detokenization with stop strings.

Decoding ids one by one breaks multi-byte characters and merge-dependent spacing, so each step decodes
a short window: `prefix_offset..read_offset` (already emitted) and `prefix_offset..end`; the text past the
first decode is new, unless it ends in U+FFFD (an incomplete UTF-8 sequence: wait for more tokens).
The window starts with a few prompt tokens so the first output token is decoded in context.

    ids:  [ ...prompt tail | o0 o1 o2 o3 o4 ]
            ^prefix_offset       ^read_offset ^end
"""

from __future__ import annotations

_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_token_ids: list[int], skip_special_tokens: bool, stop: list[str]):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        context = prompt_token_ids[-_CONTEXT_TOKENS:]
        self.ids: list[int] = list(context)
        self.prefix_offset = 0
        self.read_offset = len(context)
        self.text = ""  # all output text so far (cut at a stop string once matched)
        self.stop = stop
        self.max_stop_len = max((len(s) for s in stop), default=0)
        self.stop_reason: str | None = None
        self.emitted = 0  # characters of `text` already handed out

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add_tokens(self, token_ids: list[int]) -> bool:
        """Decode new ids into `text`; return True when a stop string matched (text is cut before it)."""
        for token_id in token_ids:
            self.ids.append(token_id)
            prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
            new_text = self._decode(self.ids[self.prefix_offset :])
            if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
                continue
            delta = new_text[len(prefix_text) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            self.text += delta
            if self.stop and self._match_stop(len(delta)):
                return True
        return False

    def _match_stop(self, delta_len: int) -> bool:
        search_from = max(0, len(self.text) - delta_len - self.max_stop_len + 1)
        best = None
        for stop in self.stop:
            index = self.text.find(stop, search_from)
            if index != -1 and (best is None or index < best[0]):
                best = (index, stop)
        if best is None:
            return False
        self.text = self.text[: best[0]]
        self.stop_reason = best[1]
        return True

    def take_delta(self, finished: bool) -> str:
        """Text not yet handed out; while running, hold back a tail that may start a stop string."""
        end = (
            len(self.text)
            if finished or not self.stop
            else max(self.emitted, len(self.text) - self.max_stop_len + 1)
        )
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta
