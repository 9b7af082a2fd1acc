"""What users get back: a whole `RequestOutput` per request, or `StreamDelta`s while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from omniserve.core.messages import TokenLogprob


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None  # the rendered prompt text (None when given as token ids)
    prompt_token_ids: list[int]
    token_ids: list[int]  # generated ids (a stop string's tokens included; its text is not)
    text: str  # generated text, cut before a matched stop string
    finish_reason: str | None  # "stop" | "length" | "abort" | "error"
    stop_reason: str | int | None = None  # the stop string or stop token id that matched, if any
    logprobs: list[TokenLogprob] | None = None  # one per generated token when requested
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache
    error: str | None = None  # with finish_reason "error": why the engine could not serve it
    invalid_input: bool = False  # with an error: the request's media is unusable (the caller's fault)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class StreamDelta:
    request_id: str
    index: int  # position of the prompt in the `stream(...)` call
    token_ids: list[int]  # ids new since the last delta
    text: str  # text new since the last delta (held back while it could start a stop string)
    finish_reason: str | None = None  # set on the request's last delta
    logprobs: list[TokenLogprob] | None = None
    stop_reason: str | int | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    output: RequestOutput | None = field(default=None, repr=False)  # the whole result, on the last delta
    error: str | None = None  # with finish_reason "error": why the engine could not serve it
    invalid_input: bool = False  # with an error: the request's media is unusable (the caller's fault)
