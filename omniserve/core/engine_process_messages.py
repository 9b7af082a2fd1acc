"""Messages across the API process <-> engine process boundary (`omniserve.core.engine_process`).

Two one-way pipes carry pickled dataclasses:

    API process  --EngineInput-->   engine process:  AddRequest | AbortRequests | StatsQuery | Shutdown
    API process  <--EngineEvent--   engine process:  EngineReady | EngineStartupFailed | StepOutputs
                                                     | StatsReply | EngineFailed

The engine answers with exactly one `EngineReady` or `EngineStartupFailed` first. After that, every step
that produced something is one `StepOutputs` (all requests of the step in one message, to keep the per-step
IPC cost at one pickle + one write). Messages on each pipe keep their order, so a `StatsQuery` sent after an
`AbortRequests` sees the pages that abort freed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omniserve.core.engine_core import ModelInfo
from omniserve.core.messages import EngineCoreOutput, EngineCoreRequest, EngineStats

# ----- API process -> engine process -------------------------------------------------------------------


@dataclass
class AddRequest:
    requests: list[EngineCoreRequest]  # validated by the frontend; n > 1 fans out into several


@dataclass
class AbortRequests:
    request_ids: list[str]  # unknown or finished ids are ignored


@dataclass
class StatsQuery:
    query_id: int  # echoed in the `StatsReply`


@dataclass
class Shutdown:
    pass


EngineInput = AddRequest | AbortRequests | StatsQuery | Shutdown

# ----- engine process -> API process -------------------------------------------------------------------


@dataclass
class EngineReady:
    info: ModelInfo  # what the frontend validates requests against
    pid: int  # the engine process, for logs
    gc_frozen_objects: int  # startup objects moved out of the collector's reach (core/gc_policy.py)


@dataclass
class EngineStartupFailed:
    message: str  # one line for the user (bad model path, bad option, out of memory, ...)
    traceback: str  # the full traceback, for the log


@dataclass
class StepOutputs:
    outputs: list[EngineCoreOutput]  # every request that produced a token this step
    # Requests the engine refused at admission (e.g. a duplicate id): (request id, reason). They never ran.
    rejected: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class StatsReply:
    query_id: int
    stats: EngineStats


@dataclass
class EngineFailed:
    """The engine loop raised: its state can no longer be trusted, the process exits after sending this."""

    message: str
    traceback: str


EngineEvent = EngineReady | EngineStartupFailed | StepOutputs | StatsReply | EngineFailed
