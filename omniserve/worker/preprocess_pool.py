"""`PreprocessPool`: processes that decode and preprocess media for the side-stream encoder.

In side-stream mode the towers run in the engine process, but decoding (PIL, PyAV) and preprocessing
(resize, patchify, log-mel) must not: they would take the engine thread's GIL and CPU between its steps.
So each job's `MediaPlan` goes to one of `num_processes` spawned processes, each holding a `MediaPreparer`;
the `EncoderInput` comes back as tensors in shared memory (torch.multiprocessing reductions), ready to copy
to the GPU, already in the towers' dtype (`transfer_dtype`: the towers cast their inputs first thing, so
casting here gives the same values and halves the bytes for bf16). Each process runs every preprocessing
path once when it starts (`warm_up` waits for that): a cold process spends hundreds of milliseconds on its
first image.

    submit(plan) -> Future[EncoderInput]     (MediaError: the media is unusable; other errors: ours)

A process that dies (a decoder crash) breaks the pool: every job it had in flight fails with an error that
says so, and the next `submit` starts fresh processes, so one poisoned file cannot take preprocessing down
for everyone else.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from omniserve.multimodal import EncoderInput, MediaPlan

logger = logging.getLogger("omniserve")

_preparer = None  # the MediaPreparer of this preprocess process
_dtype = None  # torch dtype of the tensors handed back


def _first_calls(preparer) -> None:
    """Run every decode and preprocessing path once on tiny inputs (lazy imports, kernel dispatch setup)."""
    import io

    import numpy as np
    from PIL import Image

    from omniserve.encoders.audio_features import log_mel_spectrogram
    from omniserve.encoders.image_io import load_image
    from omniserve.encoders.vision_preprocess import preprocess_image, preprocess_video

    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buffer, format="PNG")
    preprocess_image(load_image(buffer.getvalue()), preparer.image_config)
    preprocess_video(np.zeros((2, 64, 64, 3), np.uint8), preparer.video_config)
    log_mel_spectrogram(np.zeros(16000, np.float32), preparer.audio_config)


def _init(model_path: str, num_threads: int, dtype_name: str | None) -> None:
    global _preparer, _dtype
    import torch.multiprocessing  # noqa: F401 - registers the shared-memory tensor reductions

    from omniserve.encoders.media_prepare import MediaPreparer

    torch.set_num_threads(num_threads)
    _preparer = MediaPreparer.from_checkpoint(model_path)
    _dtype = getattr(torch, dtype_name) if dtype_name else None
    _first_calls(_preparer)


def _pid() -> int:
    return os.getpid()


def _prepare(plan: MediaPlan) -> EncoderInput:
    assert _preparer is not None
    prepared = _preparer.prepare(plan)
    for name in ("pixel_values", "features"):  # hand tensors over in shared memory, not through the pipe
        tensor = getattr(prepared, name)
        if tensor is not None:
            tensor = tensor.to(_dtype) if _dtype is not None else tensor
            setattr(prepared, name, tensor.share_memory_())
    return prepared


class PreprocessPool:
    def __init__(
        self,
        model_path: str,
        num_processes: int,
        threads_per_process: int = 1,
        transfer_dtype: torch.dtype | None = None,
    ) -> None:
        self.model_path = model_path
        self.num_processes = num_processes
        self.threads_per_process = threads_per_process
        self.dtype_name = str(transfer_dtype).removeprefix("torch.") if transfer_dtype is not None else None
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            import torch.multiprocessing  # noqa: F401 - this side must know the reductions too

            self._executor = ProcessPoolExecutor(
                self.num_processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init,
                initargs=(self.model_path, self.threads_per_process, self.dtype_name),
            )
        return self._executor

    def warm_up(self, timeout_s: float = 300.0) -> None:
        """Start every process now (imports and configs take seconds), not under the first request."""
        futures = [self._pool().submit(_pid) for _ in range(self.num_processes)]
        for future in futures:
            future.result(timeout=timeout_s)

    def submit(self, plan: MediaPlan) -> Future[EncoderInput]:
        try:
            return self._pool().submit(_prepare, plan)
        except BrokenProcessPool:
            logger.error("a media preprocessing process died; starting new ones")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            return self._pool().submit(_prepare, plan)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def failure_message(error: BaseException) -> str:
    """What a failed preprocessing future tells the request."""
    if isinstance(error, BrokenProcessPool):
        return "encoding failed: the media preprocessing process died while preparing this item"
    return f"encoding failed: {error}"
