"""`EngineCore`: the loop body. `step()` is schedule -> execute -> update_from_output.

In: `EngineCoreRequest`s and aborts from a frontend. Out: `EngineCoreOutput`s (new tokens, finish).
Loads the checkpoint, sizes the page pool, and owns the scheduler (CPU bookkeeping) and the model runner
(tensors). It knows nothing of text: tokenization and detokenization live in the frontend.

Async scheduling (`async_scheduling`, on by default on CUDA) overlaps the host's work with the forward:

    sync:   schedule N | launch N, wait for its tokens | update N | schedule N+1 | ...
    async:  schedule N+1 | launch N+1 | wait for N's tokens (N+1 runs meanwhile) | update N | schedule N+2 ...

`step()` then returns the outputs of the step launched by the call before; a call that schedules nothing only
resolves the step in flight, and `has_unfinished_requests()` stays true while one is. Encoder jobs for worker
processes, submitted while a step is in flight, are only sent once that step is done: their pages may have
been freed under it (finish, abort, preemption) while it still writes KV into them, and a worker writes
outside the engine's stream order. In-process and side-stream encoding run in stream order and need nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from omniserve.config import EngineConfig
from omniserve.core.messages import EngineCoreOutput, EngineCoreRequest, EngineStats
from omniserve.core.scheduler import Scheduler
from omniserve.core.scheduler_output import EncoderJob, SchedulerOutput
from omniserve.models.loader import load_hf_config, resolve_dtype, resolve_model_path
from omniserve.models.qwen_multimodal import text_config_of
from omniserve.request import Request
from omniserve.worker.encoder_messages import WorkerSpec
from omniserve.worker.encoder_pool import EncoderPool, worker_specs
from omniserve.worker.inflight import InFlightStep
from omniserve.worker.memory_sizing import determine_num_pages, hand_towers_to_workers
from omniserve.worker.model_runner import ModelRunner
from omniserve.worker.side_stream_encoder import SideStreamEncoder, engine_stream

logger = logging.getLogger("omniserve")
ENCODER_WAIT_S = 0.05  # longest sleep of a step that waits on encoder workers
# mixed_step_token_budget on CUDA (see SchedulerConfig); bench_media on the H200: p99 ITL under media load
# 1.41x idle at 96, 1.52x at 128 (idle ITL 4.5 ms), one request 15.5x vs 16.0x transformers
AUTO_MIXED_STEP_TOKENS = 96


class HeldJobs:
    """Holds the encoder jobs submitted to a sink until `send()` (async scheduling with worker processes)."""

    def __init__(self, sink: EncoderPool) -> None:
        self.sink = sink
        self.held: list[tuple[int, EncoderJob]] = []

    def submit(self, job_id: int, job: EncoderJob) -> None:
        self.held.append((job_id, job))

    def send(self) -> None:
        held, self.held = self.held, []
        for job_id, job in held:
            self.sink.submit(job_id, job)


@dataclass(frozen=True)
class ModelInfo:
    """What a frontend needs to know to validate requests for this engine."""

    model_path: Path
    max_model_len: int  # context length: prompt + outputs
    vocab_size: int
    eos_token_ids: tuple[int, ...]  # from generation_config.json, else config.json
    num_kv_blocks: int
    block_size: int

    @property
    def pool_capacity_tokens(self) -> int:
        return self.num_kv_blocks * self.block_size


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available on this machine")
    return device


def read_eos_token_ids(path: Path, hf_config) -> tuple[int, ...]:
    eos = None
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(path).eos_token_id
    except Exception:  # no generation_config.json
        pass
    if eos is None:
        eos = getattr(hf_config, "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)


class EngineCore:
    def __init__(self, config: EngineConfig) -> None:
        from omniserve.demo import demo_model_path

        model_path = (
            resolve_model_path(config.model.model, config.model.revision)
            if config.model.model
            else demo_model_path()
        )
        hf_config = load_hf_config(model_path)
        text_config = text_config_of(hf_config)
        max_positions = getattr(text_config, "max_position_embeddings", None) or 2**31
        max_model_len = config.model.max_model_len or max_positions
        if max_model_len > max_positions:
            raise ValueError(
                f"max_model_len={max_model_len} exceeds the model's max_position_embeddings ({max_positions})"
            )
        device = resolve_device(config.device.device)
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)
        torch.manual_seed(config.model.seed)
        dtype = resolve_dtype(config.model.dtype, hf_config, device)

        if (
            config.encoder.encoder_mode == "auto"
        ):  # resolved once, here: everything downstream sees the choice
            config = config.replace(encoder_mode="side_stream" if device.type == "cuda" else "inprocess")
        if config.scheduler.mixed_step_token_budget == -1:
            auto_budget = AUTO_MIXED_STEP_TOKENS if device.type == "cuda" else 0
            config = config.replace(mixed_step_token_budget=auto_budget)
        if config.scheduler.async_scheduling == "auto":
            config = config.replace(async_scheduling="on" if device.type == "cuda" else "off")
        self.config = config
        self.async_scheduling = config.scheduler.async_scheduling == "on"
        self._in_flight: tuple[SchedulerOutput, InFlightStep] | None = None  # async: launched, not read
        if config.encoder.encoder_mode == "side_stream" and device.type == "cuda":
            # forwards on a high-priority stream: the encoder's side stream yields SMs to them
            torch.cuda.set_stream(engine_stream(device))
        started = time.perf_counter()
        self.runner = ModelRunner(config, model_path, hf_config, device, dtype)
        loaded = time.perf_counter()
        worker_kinds = self._encoder_worker_kinds()
        reserved = 0
        if worker_kinds:  # workers hold the towers: drop ours, leave room for theirs on this device
            encoder_device = config.encoder.encoder_device
            same_device = encoder_device == "auto" or torch.device(encoder_device) == device
            reserved = hand_towers_to_workers(self.runner, worker_kinds, same_device)
        num_pages = determine_num_pages(self.runner, reserved)
        self.runner.allocate_pool(num_pages, shared=bool(worker_kinds))  # shared before workers start
        sized = time.perf_counter()
        self.runner.warm_up_kernels(max_model_len)
        warmed = time.perf_counter()
        self.runner.capture_cuda_graphs(max_model_len)
        logger.info(
            "engine start: load %.1f s, pool sizing %.1f s, kernel warm-up %.1f s, CUDA graphs %.1f s",
            loaded - started, sized - loaded, warmed - sized, time.perf_counter() - warmed,
        )  # fmt: skip
        self.encoders: EncoderPool | SideStreamEncoder | None = None
        if config.encoder.encoder_mode == "side_stream":
            self.encoders = SideStreamEncoder(
                self.runner.model,
                self.runner.embedding_view,
                str(model_path),
                config.encoder.num_preprocess_workers,
            )
        if worker_kinds:
            encoder_device = config.encoder.encoder_device
            base = WorkerSpec(
                kind="", index=0, model_path=str(model_path),
                device=str(device) if encoder_device == "auto" else encoder_device,
                dtype=str(dtype).removeprefix("torch."), load_format=config.model.load_format,
                seed=config.model.seed, rows_per_page=self.runner.embedding_rows_per_page,
                hidden_size=self.runner.hidden_size, num_threads=1,
            )  # fmt: skip
            self.encoders = EncoderPool(worker_specs(worker_kinds, base), self.runner.pool)
        self._held_jobs = HeldJobs(self.encoders) if worker_kinds and self.async_scheduling else None
        self.scheduler = Scheduler(
            config.scheduler,
            config.cache,
            num_pages,
            self.runner.embedding_rows_per_page,
            encoder_sink=self._held_jobs or self.encoders,
            max_encoder_jobs_in_flight=config.encoder.max_encoder_jobs_in_flight,
            prepare_media=self._in_process_preparer(model_path),
        )
        self.info = ModelInfo(
            model_path=model_path,
            max_model_len=max_model_len,
            vocab_size=text_config.vocab_size,
            eos_token_ids=read_eos_token_ids(model_path, hf_config),
            num_kv_blocks=num_pages,
            block_size=config.cache.block_size,
        )
        logger.info(
            "engine ready: %s on %s (%s), %d KV pages of %d tokens (%.1f MiB), backend %s",
            model_path,
            device,
            dtype,
            num_pages,
            config.cache.block_size,
            num_pages * self.runner.page_bytes / 2**20,
            self.runner.backend.name,
        )

    def _in_process_preparer(self, model_path: Path):
        """In-process mode of a multimodal model: the engine decodes and preprocesses items itself."""
        if self.encoders is not None or getattr(self.runner.model, "encode_many", None) is None:
            return None
        from omniserve.encoders.media_prepare import MediaPreparer  # decoders: only for media models

        return MediaPreparer.from_checkpoint(model_path).prepare

    def _encoder_worker_kinds(self) -> dict[str, int]:
        """Worker kind -> count, for the towers this model has (none in-process or for text models)."""
        encoder = self.config.encoder
        if encoder.encoder_mode != "workers":
            return {}
        model = self.runner.model
        kinds = {}
        if getattr(model, "visual", None) is not None:
            kinds.update(vision=encoder.num_vision_workers, video=encoder.num_video_workers)
        if getattr(model, "audio_tower", None) is not None:
            kinds["audio"] = encoder.num_audio_workers
        return kinds

    def add_request(self, request: EngineCoreRequest) -> None:
        self.scheduler.add_request(
            Request(
                request_id=request.request_id,
                prompt_token_ids=list(request.prompt_token_ids),
                sampling_params=request.sampling_params,
                eos_token_ids=frozenset(request.eos_token_ids),
                max_tokens=request.max_tokens,
                arrival_time=request.arrival_time,
                mm_items=list(request.mm_items),
                mrope_positions=request.mrope_positions,
                mrope_delta=request.mrope_delta,
            )
        )

    def abort_requests(self, request_ids: list[str]) -> None:
        self.scheduler.abort_requests(request_ids)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests() or self._in_flight is not None

    def step(self, wake_on: tuple = ()) -> list[EngineCoreOutput]:
        """One engine step. With encoder workers: their reports are applied first (a failed item finishes
        its request with an error), and a step that could schedule nothing while jobs are in flight then
        sleeps until a worker reports (at most `ENCODER_WAIT_S`, or until a `wake_on` connection, e.g. the
        engine process's input pipe, is readable) instead of spinning. Async: outputs of the step before."""
        outputs = self.scheduler.on_encoder_results(self.encoders.poll() if self.encoders else [])
        read_back_a_step = self._in_flight is not None  # (async) then there are outputs: do not sleep
        scheduler_output = self.scheduler.schedule()
        step: tuple[SchedulerOutput, InFlightStep] | None = (
            scheduler_output,
            self.runner.launch(scheduler_output),
        )
        if self.async_scheduling and not scheduler_output.is_empty:
            step, self._in_flight = self._in_flight, step  # read the step before back while this one runs
        elif self._in_flight is not None:  # nothing new runs: read back the step in flight first
            outputs += self._update_from(self._in_flight)
            self._in_flight = None
        if step is not None:
            outputs += self._update_from(step)
        if self._held_jobs is not None:
            self._held_jobs.send()  # no step was in flight while they were scheduled
        if (
            self.encoders
            and scheduler_output.is_empty
            and not read_back_a_step
            and self.scheduler.media.num_in_flight
        ):
            self.encoders.wait(ENCODER_WAIT_S, wake_on)
        return outputs

    def _update_from(self, step: tuple[SchedulerOutput, InFlightStep]) -> list[EngineCoreOutput]:
        scheduler_output, in_flight = step
        runner_output = in_flight.result()  # waits for the device
        if self._held_jobs is not None:
            self._held_jobs.send()  # the step in flight while they were scheduled is done
        return self.scheduler.update_from_output(scheduler_output, runner_output)

    def shutdown(self) -> None:
        """Stop the encoder workers (also done at exit and when the engine is garbage collected)."""
        if self.encoders is not None:
            self.encoders.shutdown()

    def stats(self) -> EngineStats:
        pool = self.scheduler.pool
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            num_kv_blocks_total=pool.num_pages,
            num_kv_blocks_free=pool.num_free_pages,
            num_kv_blocks_used_peak=pool.peak_used_pages,
            num_preemptions=self.scheduler.num_preemptions,
            prefix_cache_queries=pool.prefix_queries,
            prefix_cache_hits=pool.prefix_hits,
            encoder_cache_queries=pool.encoder_cache_queries,
            encoder_cache_hits=pool.encoder_cache_hits,
        )
