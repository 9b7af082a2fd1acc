"""`InFlightStep`: a launched step whose sampled tokens are on their way to the host (async scheduling).

    ModelRunner.launch(step)  build inputs -> forward -> sample -> start copying ids (+ logprobs) into pinned
                              host memory -> record a CUDA event. Never waits for the device.
    InFlightStep.result()     wait on the event -> lists -> write the tokens into the runner's request
                              states -> `ModelRunnerOutput`. Idempotent: the first call does the work.

While a step is in flight, every request that samples in it has a placeholder (`PLACEHOLDER`) as the last of
its `RequestState.token_ids`, and `sampled_row`, the row of that step's sampled ids that holds the real token.
The next step, launched before `result()`, may need that token as input: the host input_ids get the
placeholder, and `PendingInputs` scatters the values, gathered on the device, into the device input_ids
(after the host arrays are copied into the decode graph's static buffers, on the graph path):

    step N sampled ids (device):   [ a7  b3  c9 ]            rows: A 0, B 1, C 2
    step N+1 input_ids (host):     [ -1 | d0 d1 d2 | -1 ]     A decodes, D prefills a chunk, C decodes
    PendingInputs:                 rows [0, 4] <- sampled[[0, 2]]

Positions, slot mappings and sequence lengths do not depend on token values, so they are built on the host as
in sync mode. Anything that reads token values on the host (penalties) makes the runner resolve the step in
flight first. In sync mode the runner's `execute` is `launch(...).result()`: the placeholder lives for
no longer than the call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from omniserve.core.scheduler_output import ModelRunnerOutput
from omniserve.worker.sampler import SampledTokens
from omniserve.worker.transfer import to_host_async

PLACEHOLDER = -1  # a token id the host does not know yet (still on the device)


@dataclass
class PendingInputs:
    """Input tokens of a step that only the device knows: the previous step sampled them."""

    rows: torch.Tensor  # [n] int64: rows of the step's input_ids
    token_ids: torch.Tensor  # [n] int64: their values, gathered from the previous step's sampled ids

    def fill(self, input_ids: torch.Tensor) -> None:
        """input_ids: [T] int64 on the device; rows < T."""
        input_ids.index_copy_(0, self.rows, self.token_ids)


class InFlightStep:
    def __init__(
        self,
        request_ids: list[str] | None = None,
        sampled: SampledTokens | None = None,
        destinations: list[tuple[list[int], int]] | None = None,
    ) -> None:
        """`request_ids[i]` sampled row i of `sampled`, whose token goes to `token_ids[index]` for
        `destinations[i] = (token_ids, index)` (the request state's list: a state dropped meanwhile takes it
        harmlessly). No `sampled`: a step that samples nothing, resolved from the start."""
        self.request_ids = request_ids or []
        self.sampled = sampled  # on the device: the next step gathers its pending inputs from here
        self._destinations = destinations or []
        self._host: SampledTokens | None = None
        self._event: torch.cuda.Event | None = None
        self._output: ModelRunnerOutput | None = None
        if sampled is None:
            self._output = ModelRunnerOutput([], [], [])
            return
        self._host = sampled.map(to_host_async)
        if sampled.token_ids.device.type == "cuda":
            self._event = torch.cuda.Event()
            self._event.record()

    @property
    def resolved(self) -> bool:
        return self._output is not None

    def result(self) -> ModelRunnerOutput:
        """Wait for the step's tokens, give them to the runner's request states, and return them."""
        if self._output is None:
            if self._event is not None:
                self._event.synchronize()
            token_ids, logprobs = self._host.to_lists()
            for (state_token_ids, index), token_id in zip(self._destinations, token_ids, strict=True):
                state_token_ids[index] = token_id
            self._output = ModelRunnerOutput(self.request_ids, token_ids, logprobs)
            self.sampled = self._host = self._event = None
            self._destinations = []
        return self._output
