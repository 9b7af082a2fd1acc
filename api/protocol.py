"""Request bodies of the OpenAI-compatible endpoints (pydantic, OpenAI field names) and their mapping to
`SamplingParams`.

In: the JSON a client sends to /v1/chat/completions or /v1/completions. Out: a validated request and a
`SamplingParams` (bad values answer 400 with the engine's own message). `messages` stays raw JSON here:
`omniserve.api.chat_content` parses content parts so that its errors can name the exact part.
Extensions beyond OpenAI use vLLM's names (top_k, min_p, repetition_penalty, ignore_eos, ...).
"""

from __future__ import annotations

import re
from typing import Any

from omniserve.api.errors import bad_request
from pydantic import BaseModel, ConfigDict

from omniserve.sampling_params import SamplingParams

AUDIO_OUTPUT_FORMATS = ("wav", "mp3", "flac", "opus", "aac", "pcm16")
OUTPUT_MODALITIES = ("text", "audio")
_PARAM_IN_MESSAGE = re.compile(r"invalid sampling parameter (\w+)=")


class StreamOptions(BaseModel):
    include_usage: bool = False  # one more chunk before [DONE] with the usage of the whole request


class AudioOutput(BaseModel):
    voice: str  # speaker name of the talker
    format: str  # one of AUDIO_OUTPUT_FORMATS


class _GenerationRequest(BaseModel):
    """Fields shared by chat and completions."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # must name the served model when given
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None  # not supported: must be empty
    user: str | None = None
    # Extensions (vLLM names).
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True

    def _sampling_params(self, max_tokens: int | None, logprobs: int | None, max_n: int) -> SamplingParams:
        if not 1 <= self.n <= max_n:
            raise bad_request(f"n must be in [1, {max_n}], got {self.n}", "n")
        if self.logit_bias:
            raise bad_request("logit_bias is not supported", "logit_bias")
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed with stream=true", "stream_options")
        given: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "min_tokens": self.min_tokens,
        }
        options = {name: value for name, value in given.items() if value is not None}
        try:
            return SamplingParams(
                max_tokens=max_tokens,
                seed=self.seed,
                logprobs=logprobs,
                ignore_eos=self.ignore_eos,
                stop=self.stop or [],
                stop_token_ids=self.stop_token_ids or [],
                skip_special_tokens=self.skip_special_tokens,
                **options,
            )
        except ValueError as error:
            match = _PARAM_IN_MESSAGE.match(str(error))
            raise bad_request(str(error), match.group(1) if match else None) from error


class ChatCompletionRequest(_GenerationRequest):
    messages: list[dict[str, Any]]  # OpenAI chat messages; parts parsed by api.chat_content
    max_tokens: int | None = None  # deprecated OpenAI name of max_completion_tokens
    max_completion_tokens: int | None = None  # None = up to the model's context
    logprobs: bool = False
    top_logprobs: int | None = None  # with logprobs=true: alternatives per token, in [0, 20]
    modalities: list[str] | None = None  # ["text"] or ["text", "audio"]
    audio: AudioOutput | None = None  # required when "audio" is in modalities
    response_format: dict[str, Any] | None = None  # only {"type": "text"}
    tools: list[dict[str, Any]] | None = None  # not supported yet: must be empty
    tool_choice: str | dict[str, Any] | None = None

    def sampling_params(self, max_n: int) -> SamplingParams:
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise bad_request("max_tokens and max_completion_tokens disagree: send only one", "max_tokens")
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return self._sampling_params(max_tokens, logprobs, max_n)

    def output_modalities(self) -> list[str]:
        """Validated output modalities; audio output needs `audio: {voice, format}`."""
        modalities = self.modalities or ["text"]
        unknown = [m for m in modalities if m not in OUTPUT_MODALITIES]
        if unknown or not modalities:
            raise bad_request(
                f"modalities must be a non-empty subset of {list(OUTPUT_MODALITIES)}, got {modalities}",
                "modalities",
            )
        if "audio" in modalities and self.audio is None:
            raise bad_request(
                'modalities includes "audio": the audio parameter ({"voice", "format"}) is required', "audio"
            )
        if self.audio is not None:
            if self.audio.format not in AUDIO_OUTPUT_FORMATS:
                raise bad_request(
                    f"audio.format must be one of {list(AUDIO_OUTPUT_FORMATS)}, got {self.audio.format!r}",
                    "audio.format",
                )
            if not self.audio.voice.strip():
                raise bad_request("audio.voice must not be empty", "audio.voice")
        if self.tools:
            raise bad_request("tool calling is not supported by this server yet", "tools")
        if self.response_format is not None and self.response_format.get("type", "text") != "text":
            raise bad_request("only response_format {'type': 'text'} is supported", "response_format")
        return modalities


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]  # one or several prompts, text or token ids
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = None  # alternatives per token, in [0, 20]
    echo: bool = False  # prepend the prompt to the text
    suffix: str | None = None  # not supported
    best_of: int | None = None  # only best_of == n (or unset) is supported

    def sampling_params(self, max_n: int) -> SamplingParams:
        if self.suffix:
            raise bad_request("suffix is not supported", "suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise bad_request("best_of other than n is not supported", "best_of")
        return self._sampling_params(self.max_tokens, self.logprobs, max_n)

    def prompts(self) -> list[str | list[int]]:
        """The prompts, each a string or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise bad_request("prompt must not be empty", "prompt")
        if all(isinstance(item, int) for item in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]
