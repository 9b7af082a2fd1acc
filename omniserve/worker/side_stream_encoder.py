"""`SideStreamEncoder`: encoder jobs in the engine process, on a second CUDA stream, off the decode path.

The same contract as `EncoderPool` (the scheduler's job sink): `submit` never waits for the GPU, `poll`
never blocks, every job id comes back once as an `EncoderResult`. Jobs submitted during a step are launched
together at the next `poll` (one tower call per modality, as in-process encoding does) on the side stream,
and an event is recorded after their rows are written into the pool; a job is reported done once its event
has completed. The main stream never waits: the scheduler lets a prefill chunk cover an item only after it
is reported, so the rows a forward reads were written before it was launched.

    main stream:  [decode][decode][decode + chunk that needs item X][decode] ...
    side stream:       [encode X ....... write rows][event]
                                                    ^ poll sees the event: X done

On CUDA the towers are launched from a background thread, not from the engine loop: an eager tower call
issues hundreds of kernels (~10-20 µs of host time each), which would otherwise delay the next decode step
by milliseconds. The engine's own stream is created with a higher priority than the side stream
(`engine_stream`), so while both have work the GPU hands freed SMs to the decode kernels first; and the
interpreter's thread switch interval is shortened so the engine thread never waits long for the GIL.

Media are decoded and preprocessed off the engine thread too: on CUDA each submitted job's plan goes to a
`PreprocessPool` of processes at once, and the job is launched on the side stream at the first poll after
its tensors are back. Without CUDA (tests on the CPU) the jobs are prepared and encoded synchronously at
launch and are reported at the next poll, which exercises the same scheduling path. A job whose media fail
to prepare is reported failed (`invalid_input` for unusable media).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future

import torch

from omniserve.core.scheduler_output import EncoderJob
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_prepare import MediaPreparer
from omniserve.multimodal import EncoderInput
from omniserve.worker.embedding_pages import write_rows
from omniserve.worker.encoder_messages import EncoderResult
from omniserve.worker.preprocess_pool import PreprocessPool, failure_message

logger = logging.getLogger("omniserve")


GIL_SWITCH_INTERVAL_S = 0.0005  # the engine thread gets the GIL back within this while the encoder launches


def engine_stream(device: torch.device) -> torch.cuda.Stream:
    """A high-priority stream for the engine's forwards (lower number = higher priority in CUDA)."""
    high, _ = torch.cuda.Stream.priority_range()
    return torch.cuda.Stream(device, priority=high)


class SideStreamEncoder:
    def __init__(
        self, model, embedding_view: torch.Tensor, model_path: str, num_preprocess_processes: int = 4
    ) -> None:
        self.model = model  # has encode_many(list[EncoderInput]) -> list[[num_tokens, H]]
        self.embedding_view = embedding_view  # [num_pages, rows_per_page, H] view of the pool
        self.device = embedding_view.device
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None  # low priority
        self._preprocess = (
            PreprocessPool(model_path, num_preprocess_processes, transfer_dtype=embedding_view.dtype)
            if self.stream
            else None
        )
        if self._preprocess is not None:
            self._preprocess.warm_up()
        self._preparer = None if self.stream else MediaPreparer.from_checkpoint(model_path)
        self._preparing: list[tuple[int, EncoderJob, Future[EncoderInput]]] = []  # in the preprocess pool
        self._queued: list[tuple[int, EncoderJob]] = []  # submitted (CPU) or prepared (CUDA), not launched
        self._in_thread = 0  # jobs handed to the launch thread, not launched yet
        self._launched: list[tuple[list[int], torch.cuda.Event | None]] = []  # (job ids, event) in order
        self._finished: list[EncoderResult] = []
        self._lock = threading.Lock()  # guards _launched, _finished and _in_thread
        self._work: queue.Queue | None = None
        if self.stream is not None:
            sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
            self._work = queue.Queue()
            self._thread = threading.Thread(target=self._run, name="side-stream-encoder", daemon=True)
            self._thread.start()
            atexit.register(self.shutdown)  # stop the thread before CUDA tears down at exit

    def submit(self, job_id: int, job: EncoderJob) -> None:
        if self._preprocess is None:
            self._queued.append((job_id, job))
        else:
            self._preparing.append((job_id, job, self._preprocess.submit(job.plan)))

    @property
    def num_in_flight(self) -> int:
        with self._lock:
            launched = sum(len(ids) for ids, _ in self._launched)
            busy = len(self._preparing) + len(self._queued) + self._in_thread + launched
            return busy + len(self._finished)

    def _failed(self, job_id: int, error: BaseException) -> EncoderResult:
        return EncoderResult(job_id, failure_message(error), isinstance(error, MediaError))

    def _collect_prepared(self) -> None:
        """Prepared jobs join the launch queue; failed ones are reported."""
        still = []
        for job_id, job, future in self._preparing:
            if not future.done():
                still.append((job_id, job, future))
            elif future.exception() is not None:
                with self._lock:
                    self._finished.append(self._failed(job_id, future.exception()))
            else:
                self._queued.append((job_id, dataclasses.replace(job, encoder_input=future.result())))
        self._preparing = still

    def _prepare_now(self, queued: list[tuple[int, EncoderJob]]) -> list[tuple[int, EncoderJob]]:
        """CPU: prepare in this thread; failed jobs are reported."""
        prepared = []
        for job_id, job in queued:
            try:
                prepared.append(
                    (job_id, dataclasses.replace(job, encoder_input=self._preparer.prepare(job.plan)))
                )
            except Exception as error:  # noqa: BLE001 - bad media fail their job, not the engine
                with self._lock:
                    self._finished.append(self._failed(job_id, error))
        return prepared

    def _launch(self) -> None:
        self._collect_prepared()
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        if self._work is None:  # CPU: encode now
            queued = self._prepare_now(queued)
            if queued:
                self._encode_batch(queued, None)
            return
        # The side stream must not write pages before earlier engine work that used them is done (a page is
        # reused only after its previous request finished, but its last forward may still be in flight):
        # the thread orders its launch after everything the engine launched so far.
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(self.device))
        with self._lock:
            self._in_thread += len(queued)
        self._work.put((queued, ready))

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            queued, ready = item
            self.stream.wait_event(ready)
            with torch.cuda.stream(self.stream), torch.inference_mode():
                self._encode_batch(queued, self.stream)

    def _encode_batch(self, queued: list[tuple[int, EncoderJob]], stream) -> None:
        ids = [job_id for job_id, _ in queued]
        event = None
        try:
            self._encode(queued)
            if stream is not None:
                event = torch.cuda.Event()
                event.record(stream)
            outcome = None
        except Exception as error:  # noqa: BLE001 - a bad item fails its jobs, the engine keeps serving
            logger.exception("side-stream encoding failed")
            outcome = [EncoderResult(job_id, f"encoding failed: {error}") for job_id in ids]
        with self._lock:
            if stream is not None:
                self._in_thread -= len(ids)
            if outcome is None:
                self._launched.append((ids, event))
            else:
                self._finished += outcome

    def _encode(self, queued: list[tuple[int, EncoderJob]]) -> None:
        all_rows = self.model.encode_many([job.encoder_input for _, job in queued])  # type: ignore[misc]
        for (_, job), rows in zip(queued, all_rows, strict=True):
            write_rows(self.embedding_view, job.page_ids, rows, job.num_tokens)

    def poll(self) -> list[EncoderResult]:
        """Launch what was submitted since the last poll; report jobs whose rows are written."""
        self._launch()
        with self._lock:
            while self._launched and (self._launched[0][1] is None or self._launched[0][1].query()):
                ids, _ = self._launched.pop(0)
                self._finished += [EncoderResult(job_id) for job_id in ids]
            finished, self._finished = self._finished, []
        return finished

    def wait(self, timeout_s: float, wake_on: tuple = ()) -> None:
        """Nothing could be scheduled: wait (briefly) until the oldest launch completes."""
        del wake_on
        self._launch()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(future.done() for _, _, future in self._preparing):
                return  # the next poll launches it
            with self._lock:
                if self._finished:
                    return
                event = self._launched[0][1] if self._launched else None
                idle = not self._launched and self._in_thread == 0 and not self._preparing
            if idle or (event is not None and event.query()) or (self._launched and event is None):
                return
            time.sleep(0.0005)

    def shutdown(self) -> None:
        if self._preprocess is not None:
            self._preprocess.shutdown()
        if self._work is not None and self._thread.is_alive():
            self._work.put(None)
            self._thread.join(timeout=5)
        if self.stream is not None:
            self.stream.synchronize()
