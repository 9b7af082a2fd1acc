"""Messages across the engine core <-> encoder worker boundary (`encoder_pool` <-> `encoder_worker`).

    engine process  --WorkerSpec (spawn args) + shared pool tensor-->  worker process (builds its towers)
    engine process  <--WorkerReady | WorkerStartupFailed--             (first message, exactly one)
    engine process  --EncodeTask | StopWorker-->      job queue        (one queue per worker)
    engine process  <--TaskDone | TaskFailed--        result pipe      (one pipe per worker)

Tasks and results travel as plain pickles; a task names its media source (a file), never carries it. Only
the pool tensor is shared memory / CUDA IPC, once, at spawn. The engine pool turns results and worker
deaths into `EncoderResult`s for the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

from omniserve.multimodal import MediaPlan

# Worker kinds and the media item modalities each one encodes.
WORKER_KINDS = ("vision", "video", "audio")
KIND_OF_MODALITY = {"image": "vision", "video": "video", "video_with_audio": "video", "audio": "audio"}


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build its towers (picklable; no tensors)."""

    kind: str  # "vision" | "video" | "audio"
    index: int  # among the workers of its kind (for names and logs)
    model_path: str  # checkpoint folder (config.json + safetensors)
    device: str  # "cpu", "cuda", "cuda:N": where the towers run
    dtype: str  # engine dtype name ("float32", "bfloat16", ...): towers and pool rows
    load_format: str  # "auto" (safetensors) | "dummy" (random, seeded: differs from the in-process towers)
    seed: int
    rows_per_page: int  # embedding rows per pool page
    hidden_size: int  # H of an embedding row
    num_threads: int  # torch CPU threads of the worker


@dataclass
class EncodeTask:
    job_id: int  # echoed in the result
    plan: MediaPlan  # the worker decodes and preprocesses the item's source (`MediaPreparer`)
    page_ids: list[int]  # row r goes to page page_ids[r // rows_per_page], row r % rows_per_page
    num_tokens: int  # rows the item must have


@dataclass
class StopWorker:
    pass


@dataclass
class WorkerReady:
    pid: int
    gc_frozen_objects: int  # startup objects moved out of the collector's reach (core/gc_policy.py)


@dataclass
class WorkerStartupFailed:
    message: str
    traceback: str


@dataclass
class TaskDone:
    job_id: int
    seconds: float  # encode + write + device sync, measured in the worker


@dataclass
class TaskFailed:
    job_id: int
    message: str  # "ExceptionType: text", for the request's error
    invalid_input: bool = False  # the media itself is unusable (MediaError), not the encoder


@dataclass
class EncoderResult:
    """What the scheduler learns about one submitted job."""

    job_id: int
    error: str | None = None  # None: the rows are in the pool (device synced); else why the item failed
    invalid_input: bool = False  # with an error: the media is unusable (the client's fault: HTTP 400)
