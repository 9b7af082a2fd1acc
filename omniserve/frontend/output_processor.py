"""`EngineCoreOutput`s -> text deltas and final `RequestOutput`s; stop strings end requests here.

In: new token ids per request from the engine core. Out: `StreamDelta`s, and the ids of requests that a
stop string finished (the caller aborts them in the engine core so their pages are freed at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omniserve.core.messages import EngineCoreOutput, TokenLogprob
from omniserve.frontend.detokenizer import IncrementalDetokenizer
from omniserve.frontend.input_processor import ProcessedPrompt
from omniserve.outputs import RequestOutput, StreamDelta
from omniserve.sampling_params import SamplingParams


@dataclass
class RequestState:
    request_id: str
    index: int
    prompt: ProcessedPrompt
    detokenizer: IncrementalDetokenizer
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    num_cached_tokens: int = 0


class OutputProcessor:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.states: dict[str, RequestState] = {}

    def add_request(
        self, request_id: str, index: int, prompt: ProcessedPrompt, params: SamplingParams
    ) -> None:
        detokenizer = IncrementalDetokenizer(
            self.tokenizer, prompt.prompt_token_ids, params.skip_special_tokens, params.stop
        )
        self.states[request_id] = RequestState(
            request_id, index, prompt, detokenizer, logprobs=[] if params.logprobs is not None else None
        )

    def abort(self, request_id: str) -> StreamDelta | None:
        state = self.states.get(request_id)
        return self._finish(state, "abort", None) if state else None

    def process(self, outputs: list[EngineCoreOutput]) -> tuple[list[StreamDelta], list[str]]:
        """Returns the deltas, and ids finished by a stop string (to abort in the engine core)."""
        deltas, stopped = [], []
        for output in outputs:
            state = self.states.get(output.request_id)
            if state is None:  # finished by a stop string while this step ran
                continue
            state.token_ids.extend(output.new_token_ids)
            state.num_cached_tokens = output.num_cached_tokens
            if state.logprobs is not None and output.new_logprobs:
                state.logprobs.extend(output.new_logprobs)
            hit_stop = state.detokenizer.add_tokens(output.new_token_ids)
            if hit_stop:
                stopped.append(output.request_id)
                deltas.append(self._finish(state, "stop", state.detokenizer.stop_reason, output))
            elif output.finish_reason is not None:
                deltas.append(self._finish(state, output.finish_reason, output.stop_token_id, output))
            else:
                text = state.detokenizer.take_delta(finished=False)
                deltas.append(
                    StreamDelta(
                        state.request_id,
                        state.index,
                        list(output.new_token_ids),
                        text,
                        logprobs=output.new_logprobs,
                        num_prompt_tokens=len(state.prompt.prompt_token_ids),
                        num_cached_tokens=state.num_cached_tokens,
                    )
                )
        return deltas, stopped

    def _finish(
        self, state: RequestState, reason: str, stop_reason, output: EngineCoreOutput | None = None
    ) -> StreamDelta:
        del self.states[state.request_id]
        final = RequestOutput(
            request_id=state.request_id,
            prompt=state.prompt.prompt,
            prompt_token_ids=state.prompt.prompt_token_ids,
            token_ids=state.token_ids,
            text=state.detokenizer.text,
            finish_reason=reason,
            stop_reason=stop_reason if reason == "stop" else None,
            logprobs=state.logprobs,
            num_cached_tokens=state.num_cached_tokens,
            error=output.error if output else None,
            invalid_input=output.invalid_input if output else False,
        )
        return StreamDelta(
            state.request_id,
            state.index,
            list(output.new_token_ids) if output else [],
            state.detokenizer.take_delta(finished=True),
            finish_reason=reason,
            stop_reason=final.stop_reason,
            logprobs=output.new_logprobs if output else None,
            num_prompt_tokens=len(state.prompt.prompt_token_ids),
            num_cached_tokens=state.num_cached_tokens,
            output=final,
            error=final.error,
            invalid_input=final.invalid_input,
        )
