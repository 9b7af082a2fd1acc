"""An encoder worker process: prepares media of one modality, runs its tower(s), writes rows into the pool.

    spawn(WorkerSpec, pool tensor, job queue, result pipe)
      -> build only its towers (vision: VisionTower; video: VisionTower + AudioTower for audio in video;
         audio: AudioTower) from the checkpoint folder, in the engine dtype, on `spec.device`
      -> WorkerReady (or WorkerStartupFailed)
      -> loop: EncodeTask -> decode + preprocess its source (`MediaPreparer`, checked against the plan)
               -> encode -> write rows into pool pages -> device sync -> TaskDone | TaskFailed

The pool tensor arrives once, at spawn, through torch.multiprocessing: shared memory on CPU, a CUDA IPC
handle on GPU (rows computed on another device are copied across). Writes are complete (device synced)
before TaskDone is sent, so the engine may publish the pages and read them in its next forward.
A job that raises reports TaskFailed (`invalid_input` when the media itself is unusable) and the worker
keeps serving; the process exits on StopWorker, when its queue or pipe closes, or when the engine process
dies. The media's bytes never pass through the engine: the task names the file the frontend stored.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
import traceback
from pathlib import Path

import torch

from omniserve import envs
from omniserve.core.gc_policy import freeze_startup_heap
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_prepare import MediaPreparer
from omniserve.worker.embedding_pages import embedding_view, write_rows
from omniserve.worker.encoder_messages import (
    EncodeTask,
    StopWorker,
    TaskDone,
    TaskFailed,
    WorkerReady,
    WorkerSpec,
    WorkerStartupFailed,
)

logger = logging.getLogger("omniserve")


def build_towers(spec: WorkerSpec):
    """The towers of the worker's kind, weights loaded the way the full model loads them."""
    from omniserve.models.loader import iterate_safetensors, load_hf_config
    from omniserve.models.qwen_multimodal import MediaTowers

    path = Path(spec.model_path)
    hf_config = load_hf_config(path)
    dtype, device = getattr(torch, spec.dtype), torch.device(spec.device)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            towers = MediaTowers(
                hf_config, vision=spec.kind in ("vision", "video"), audio=spec.kind != "vision"
            )
    finally:
        torch.set_default_dtype(default_dtype)
    if spec.load_format == "dummy":
        generator = torch.Generator(device=device).manual_seed(spec.seed)
        with torch.no_grad():
            for param in towers.parameters():
                param.uniform_(-0.02, 0.02, generator=generator)
    else:
        towers.load_weights(iterate_safetensors(path, towers.weight_prefixes))
    return towers.eval()


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="omniserve-parent-watch", daemon=True).start()


def _send(results, message) -> None:
    results.send_bytes(pickle.dumps(message))


def _run_task(towers, preparer: MediaPreparer, view: torch.Tensor, task: EncodeTask) -> TaskDone:
    start = time.perf_counter()
    rows = towers.encode(preparer.prepare(task.plan))  # [num_tokens, H]
    write_rows(view, task.page_ids, rows, task.num_tokens)
    if view.device.type == "cuda":
        torch.cuda.synchronize(view.device)
    if rows.device.type == "cuda" and rows.device != view.device:
        torch.cuda.synchronize(rows.device)
    return TaskDone(task.job_id, time.perf_counter() - start)


def run_encoder_worker(spec: WorkerSpec, pool: torch.Tensor, jobs, results) -> None:
    """Entry point of the worker process (spawned by `EncoderPool`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine shuts workers down
    _exit_with_parent()
    logging.basicConfig(
        level=envs.log_level(),
        format=f"%(levelname)s %(name)s [{spec.kind} encoder {spec.index}]: %(message)s",
    )
    try:
        torch.set_num_threads(spec.num_threads)
        if spec.device.startswith("cuda"):
            device = torch.device(spec.device)
            torch.cuda.set_device(device.index if device.index is not None else 0)
        towers = build_towers(spec)
        preparer = MediaPreparer.from_checkpoint(spec.model_path)
        view = embedding_view(pool, spec.rows_per_page, spec.hidden_size)
    except BaseException as error:  # noqa: BLE001 - reported to the engine as one message
        _send(results, WorkerStartupFailed(f"{type(error).__name__}: {error}", traceback.format_exc()))
        return
    # towers, preprocessors and torch's caches live as long as the worker: out of every later collection
    _send(results, WorkerReady(os.getpid(), freeze_startup_heap()))
    while True:
        try:
            task = pickle.loads(jobs.get())
        except (EOFError, OSError):
            return
        if isinstance(task, StopWorker):
            return
        try:
            with torch.inference_mode():
                outcome = _run_task(towers, preparer, view, task)
        except Exception as error:  # noqa: BLE001 - one bad item fails its job, not the worker
            logger.debug("job %d failed:\n%s", task.job_id, traceback.format_exc())
            invalid = isinstance(error, MediaError)
            message = str(error) if invalid else f"{type(error).__name__}: {error}"
            outcome = TaskFailed(task.job_id, message, invalid)
        try:
            _send(results, outcome)
        except (BrokenPipeError, OSError):
            return
