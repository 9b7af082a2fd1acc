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

Without CUDA (tests on the CPU) the jobs run synchronously at launch and are reported at the next poll,
which exercises the same scheduling path.
"""

from __future__ import annotations

import logging
import time

import torch

from omniserve.core.scheduler_output import EncoderJob
from omniserve.worker.embedding_pages import write_rows
from omniserve.worker.encoder_messages import EncoderResult

logger = logging.getLogger("omniserve")


class SideStreamEncoder:
    def __init__(self, model, embedding_view: torch.Tensor) -> None:
        self.model = model  # has encode_many(list[EncoderInput]) -> list[[num_tokens, H]]
        self.embedding_view = embedding_view  # [num_pages, rows_per_page, H] view of the pool
        self.device = embedding_view.device
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._queued: list[tuple[int, EncoderJob]] = []  # submitted, not launched yet
        self._launched: list[tuple[list[int], torch.cuda.Event | None]] = []  # (job ids, event) in order
        self._finished: list[EncoderResult] = []

    def submit(self, job_id: int, job: EncoderJob) -> None:
        self._queued.append((job_id, job))

    @property
    def num_in_flight(self) -> int:
        return len(self._queued) + sum(len(ids) for ids, _ in self._launched) + len(self._finished)

    def _launch(self) -> None:
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        ids = [job_id for job_id, _ in queued]
        try:
            if self.stream is not None:
                # The side stream must not write pages before earlier main-stream work that used them is done
                # (a page is reused only after its previous request finished, but its last forward may still
                # be in flight): order after everything launched so far, then run concurrently from here on.
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self.stream):
                    self._encode(queued)
                    event = torch.cuda.Event()
                    event.record(self.stream)
            else:
                self._encode(queued)
                event = None
            self._launched.append((ids, event))
        except Exception as error:  # noqa: BLE001 - a bad item fails its jobs, the engine keeps serving
            logger.exception("side-stream encoding failed")
            self._finished += [EncoderResult(job_id, f"encoding failed: {error}") for job_id in ids]

    def _encode(self, queued: list[tuple[int, EncoderJob]]) -> None:
        all_rows = self.model.encode_many([job.encoder_input for _, job in queued])
        for (_, job), rows in zip(queued, all_rows, strict=True):
            write_rows(self.embedding_view, job.page_ids, rows, job.num_tokens)

    def poll(self) -> list[EncoderResult]:
        """Launch what was submitted since the last poll; report jobs whose rows are written."""
        self._launch()
        while self._launched and (self._launched[0][1] is None or self._launched[0][1].query()):
            ids, _ = self._launched.pop(0)
            self._finished += [EncoderResult(job_id) for job_id in ids]
        finished, self._finished = self._finished, []
        return finished

    def wait(self, timeout_s: float, wake_on: tuple = ()) -> None:
        """Nothing could be scheduled: wait (briefly) for the oldest launch to complete."""
        del wake_on
        self._launch()
        if self._finished or not self._launched:
            return
        event = self._launched[0][1]
        deadline = time.monotonic() + timeout_s
        while event is not None and not event.query() and time.monotonic() < deadline:
            time.sleep(0.0005)

    def shutdown(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()
