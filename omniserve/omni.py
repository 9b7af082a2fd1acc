"""`Omni`: the offline Python API.

    omni = Omni("Qwen/Qwen2.5-0.5B-Instruct")            # or a local folder; no model = the demo model
    outputs = omni.generate(["Hello"], SamplingParams(max_tokens=32))
    for delta in omni.stream([{"messages": [{"role": "user", "content": "Hi"}]}]): print(delta.text, end="")

Flow: InputProcessor (tokenize, validate: all prompts before any work) -> EngineCore.step() until done ->
OutputProcessor (detokenize, stop strings) -> RequestOutput / StreamDelta.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from omniserve.config import EngineConfig
from omniserve.core.engine_core import EngineCore
from omniserve.core.messages import EngineStats
from omniserve.frontend.input_processor import InputProcessor, PromptType
from omniserve.frontend.media_store import MediaLease
from omniserve.frontend.multimodal_processor import build_multimodal_processor
from omniserve.frontend.output_processor import OutputProcessor
from omniserve.outputs import RequestOutput, StreamDelta
from omniserve.sampling_params import SamplingParams

logger = logging.getLogger("omniserve")


def load_tokenizer(path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as error:
        raise ValueError(f"cannot load the tokenizer of {str(path)!r}: {error}") from error


class Omni:
    def __init__(self, model: str | None = None, **engine_options: Any) -> None:
        """`engine_options` are the fields of `EngineConfig`'s sub-configs, flat: device, dtype, block_size,
        num_kv_blocks, max_num_batched_tokens, max_num_seqs, attention_backend, enable_prefix_caching,
        load_format, max_model_len, seed, ..."""
        # offline batches want throughput: prompts prefill in whole steps even while others decode
        engine_options.setdefault("mixed_step_token_budget", 0)
        self.config = EngineConfig.from_kwargs(model=model, **engine_options)
        self.engine = EngineCore(self.config)
        self.tokenizer = load_tokenizer(self.engine.info.model_path)
        mm = build_multimodal_processor(self.engine.info.model_path, self.tokenizer)
        self.input_processor = InputProcessor(self.tokenizer, self.engine.info, mm)
        self.output_processor = OutputProcessor(self.tokenizer)
        self._ids = itertools.count()
        self._media_store = mm.store if mm is not None else None
        self._leases: dict[str, MediaLease] = {}  # request id -> its prompt's stored media

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def _submit(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None,
    ) -> list[str]:
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        params_list = (
            [sampling_params] * len(prompts)
            if isinstance(sampling_params, SamplingParams)
            else list(sampling_params)
        )
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(params_list)} sampling params for {len(prompts)} prompts")
        # Validate everything first: a bad prompt fails the call before any work starts.
        processed = []
        try:
            for prompt, params in zip(prompts, params_list, strict=True):
                request_id = f"offline-{next(self._ids)}"
                processed.append(
                    (request_id, params, *self.input_processor.process(request_id, prompt, params))
                )
        except BaseException:
            for *_, prompt in processed:
                self._release_media(prompt.media_lease)
            raise
        for index, (request_id, params, request, prompt) in enumerate(processed):
            self.output_processor.add_request(request_id, index, prompt, params)
            self.engine.add_request(request)
            if prompt.media_lease is not None:
                self._leases[request_id] = prompt.media_lease
        return [request_id for request_id, *_ in processed]

    def _release_media(self, lease: MediaLease | None) -> None:
        if lease is not None and self._media_store is not None:
            self._media_store.release(lease)

    def stream(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> Iterator[StreamDelta]:
        """Yield deltas as tokens are produced; the last delta of each request has `finish_reason` and
        `output`. Closing the iterator early aborts what is still running."""
        request_ids = self._submit(prompts, sampling_params)
        pending = set(request_ids)
        try:
            while pending:
                deltas, stopped = self.output_processor.process(self.engine.step())
                if stopped:
                    self.engine.abort_requests(stopped)
                for delta in deltas:
                    if delta.finish_reason is not None:
                        pending.discard(delta.request_id)
                    yield delta
        finally:
            if pending:  # consumer stopped early, or an error: free everything this call holds
                self.engine.abort_requests(list(pending))
                for request_id in pending:
                    self.output_processor.abort(request_id)
            for request_id in request_ids:
                self._release_media(self._leases.pop(request_id, None))

    def generate(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool | None = None,
    ) -> list[RequestOutput]:
        """Run prompts to completion; outputs come back in prompt order. A progress bar shows for long
        batches (use_tqdm=None: when there are 32 prompts or more)."""
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        results: list[RequestOutput | None] = [None] * len(prompts)
        show = use_tqdm if use_tqdm is not None else len(prompts) >= 32
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prompts), desc="generate", unit="req", dynamic_ncols=True)
        for delta in self.stream(prompts, sampling_params):
            if delta.output is not None:
                results[delta.index] = delta.output
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return results  # type: ignore[return-value]
