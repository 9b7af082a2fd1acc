"""Prompt -> validated `EngineCoreRequest`. Every check happens here, before the engine sees anything.

Accepted prompts: a string; {"prompt": str}; {"prompt_token_ids": [int, ...]}; {"messages": [...]} in the
OpenAI chat format (rendered with the checkpoint's chat template, generation prompt appended).
For a multimodal checkpoint (a `MultimodalProcessor` passed in), every prompt goes through that processor:
media in `multi_modal_data` or content parts, placeholders expanded, M-RoPE positions computed. The checks
of `process` (vocabulary, context length, pool size) then apply to the expanded prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from omniserve.core.engine_core import ModelInfo
from omniserve.core.messages import EngineCoreRequest
from omniserve.multimodal import MediaItem
from omniserve.sampling_params import SamplingParams

if TYPE_CHECKING:
    from omniserve.frontend.media_store import MediaLease
    from omniserve.frontend.multimodal_processor import MultimodalProcessor

PromptType = str | dict[str, Any]
_MEDIA_PARTS = {"image_url", "input_audio", "video_url", "image", "audio", "video", "file"}


@dataclass
class ProcessedPrompt:
    prompt: str | None  # rendered text, if the prompt had text
    prompt_token_ids: list[int]  # placeholders already expanded to one token per embedding row
    mm_items: list[MediaItem] = field(default_factory=list)  # in prompt order
    mrope_positions: np.ndarray | None = None  # [3, num_prompt_tokens] for M-RoPE models
    mrope_delta: int = 0  # a generated token at index i has position i + mrope_delta
    media_lease: MediaLease | None = None  # store files of the media: release when the requests are done


class InputProcessor:
    def __init__(self, tokenizer, info: ModelInfo, multimodal: MultimodalProcessor | None = None) -> None:
        self.tokenizer = tokenizer
        self.info = info
        self.multimodal = multimodal  # None: a text-only model, media is refused

    def render_messages(self, messages: list[dict[str, Any]]) -> str:
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {'role', 'content'} objects")
        for message in messages:
            if not isinstance(message, dict) or "role" not in message:
                raise ValueError(f"each message needs a 'role': got {message!r}")
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    kind = part.get("type") if isinstance(part, dict) else None
                    if kind in _MEDIA_PARTS:
                        raise ValueError(
                            f"this model accepts text only: content part of type {kind!r} is not supported"
                        )
                    if kind != "text":
                        raise ValueError(
                            f"unknown content part {part!r}; expected {{'type': 'text', 'text': ...}}"
                        )
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("this model has no chat template: send a plain prompt instead of messages")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def tokenize(self, prompt: PromptType) -> ProcessedPrompt:
        if isinstance(prompt, str):
            prompt = {"prompt": prompt}
        if not isinstance(prompt, dict):
            raise ValueError(f"a prompt is a string or a dict, got {type(prompt).__name__}")
        if self.multimodal is not None:
            return self.multimodal.process(prompt)
        if prompt.get("multi_modal_data"):
            raise ValueError("this model accepts text only: multi_modal_data is not supported")
        if "prompt_token_ids" in prompt:
            ids = prompt["prompt_token_ids"]
            if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
                raise ValueError("prompt_token_ids must be a list of integers")
            return ProcessedPrompt(prompt.get("prompt"), list(ids))
        if "messages" in prompt:
            text = self.render_messages(prompt["messages"])
        elif "prompt" in prompt:
            text = prompt["prompt"]
            if not isinstance(text, str):
                raise ValueError("prompt must be a string")
        else:
            raise ValueError("a prompt dict needs one of 'prompt', 'prompt_token_ids' or 'messages'")
        return ProcessedPrompt(text, self.tokenizer.encode(text, add_special_tokens=False))

    def process(
        self, request_id: str, prompt: PromptType, params: SamplingParams
    ) -> tuple[EngineCoreRequest, ProcessedPrompt]:
        processed = self.tokenize(prompt)
        ids = processed.prompt_token_ids
        info = self.info
        if not ids:
            raise ValueError("the prompt is empty")
        bad = [t for t in ids if not 0 <= t < info.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {info.vocab_size})")
        room = info.max_model_len - len(ids)
        if room < 1:
            raise ValueError(
                f"the prompt has {len(ids)} tokens but the model's context is {info.max_model_len} "
                f"tokens (max_model_len), leaving no room for output"
            )
        if params.max_tokens is not None and params.max_tokens > room:
            raise ValueError(
                f"the model's context is {info.max_model_len} tokens, but {len(ids) + params.max_tokens} "
                f"were requested ({len(ids)} in the prompt, max_tokens={params.max_tokens})"
            )
        max_tokens = params.max_tokens if params.max_tokens is not None else room
        if len(ids) + max_tokens > info.pool_capacity_tokens:
            raise ValueError(
                f"the request needs up to {len(ids) + max_tokens} tokens of KV cache but the whole pool "
                f"holds {info.pool_capacity_tokens}; lower max_tokens or enlarge num_kv_blocks"
            )
        bad_stop = [t for t in params.stop_token_ids if t >= info.vocab_size]
        if bad_stop:
            raise ValueError(f"stop_token_ids {bad_stop} are outside the vocabulary [0, {info.vocab_size})")
        request = EngineCoreRequest(
            request_id=request_id,
            prompt_token_ids=ids,
            sampling_params=params,
            eos_token_ids=list(info.eos_token_ids),
            max_tokens=max_tokens,
            arrival_time=time.monotonic(),
            mm_items=processed.mm_items,
            mrope_positions=processed.mrope_positions,
            mrope_delta=processed.mrope_delta,
        )
        return request, processed
