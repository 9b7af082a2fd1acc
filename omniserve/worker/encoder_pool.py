"""`EncoderPool`: the engine's handle on its encoder worker processes.

    scheduler --submit(job_id, EncoderJob)--> EncoderPool --EncodeTask--> worker of the item's kind
    scheduler <--poll() -> [EncoderResult]--  EncoderPool <--TaskDone / TaskFailed / process sentinel--

Workers are spawned ("spawn" context of torch.multiprocessing) with the pool tensor, which must already be
shared (CPU: `share_memory_()` by `ModelRunner.allocate_pool(shared=True)`; CUDA: IPC, automatically). Each
kind ("vision", "video", "audio") has its own workers; a job goes to the worker of its kind with the fewest
jobs in flight. Audio-in-video items go to the "video" workers, which hold both towers: the item is one
job whose rows interleave the two towers' outputs, so it stays one write and one report (splitting it would
need a join of two jobs per item and buys little: the audio tower is the smaller one).

Contract: `submit` never blocks on a worker (tasks go through a queue with its own feeder thread); `poll`
never blocks; every submitted job gets exactly one `EncoderResult` (done, failed, or failed because its
worker died) until `shutdown`. A worker that dies is restarted (its queued jobs fail, new ones wait for the
new process); one that dies again before it is ready is not restarted, and jobs for a kind without a live
worker fail at once.
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import os
import pickle
import time
import weakref
from dataclasses import dataclass, field, replace

import torch
import torch.multiprocessing

from omniserve.core.scheduler_output import EncoderJob
from omniserve.worker.encoder_messages import (
    KIND_OF_MODALITY,
    EncoderResult,
    EncodeTask,
    StopWorker,
    TaskDone,
    TaskFailed,
    WorkerReady,
    WorkerSpec,
    WorkerStartupFailed,
)
from omniserve.worker.encoder_worker import run_encoder_worker

logger = logging.getLogger("omniserve")


@dataclass
class _Worker:
    spec: WorkerSpec
    process: multiprocessing.process.BaseProcess
    jobs: object  # a torch.multiprocessing Queue of pickled EncodeTask / StopWorker
    results: multiprocessing.connection.Connection  # the engine's end of the result pipe
    ready: bool = False
    gc_frozen_objects: int = 0  # its startup heap, frozen (WorkerReady)
    broken: str | None = None  # why it is not restarted any more
    in_flight: dict[int, EncodeTask] = field(default_factory=dict)  # job id -> task

    @property
    def name(self) -> str:
        return f"{self.spec.kind} encoder worker {self.spec.index}"


class EncoderPool:
    def __init__(self, specs: list[WorkerSpec], pool: torch.Tensor, startup_timeout_s: float = 600.0) -> None:
        self._context = torch.multiprocessing.get_context("spawn")
        self._pool = pool
        self._finished: list[EncoderResult] = []  # results known without a worker (no live worker)
        self.workers = [self._start(spec) for spec in specs]
        self._finalizer = weakref.finalize(self, _stop_all, self.workers)
        try:
            self._wait_ready(startup_timeout_s)
        except BaseException:
            self.shutdown()
            raise
        logger.info(
            "encoder workers ready: %s", ", ".join(f"{w.name} (pid {w.process.pid})" for w in self.workers)
        )

    # ----- processes -------------------------------------------------------------------------------
    def _start(self, spec: WorkerSpec) -> _Worker:
        jobs = self._context.Queue()
        results, results_send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=run_encoder_worker,
            args=(spec, self._pool, jobs, results_send),
            name=f"omniserve-{spec.kind}-encoder-{spec.index}",
            daemon=True,
        )
        process.start()
        results_send.close()  # the child holds its own copy: EOF here once it exits
        return _Worker(spec, process, jobs, results)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(worker.ready for worker in self.workers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"encoder workers did not start within {timeout_s:.0f} s")
            self.wait(min(1.0, max(deadline - time.monotonic(), 0.0)))
            self._collect()
            for worker in self.workers:
                if worker.broken:
                    raise RuntimeError(worker.broken)

    def _on_death(self, worker: _Worker, reason: str) -> None:
        """Fail its jobs; restart it unless it never got ready (then it would only crash again)."""
        worker.process.join(timeout=5)
        exit_code = worker.process.exitcode
        message = f"{worker.name} (pid {worker.process.pid}) {reason}"
        if exit_code is not None and reason == "died":
            message += f" (exit code {exit_code})"
        logger.error("%s; failing its %d job(s)", message, len(worker.in_flight))
        for job_id in worker.in_flight:
            self._finished.append(EncoderResult(job_id, f"encoding failed: {message}"))
        worker.in_flight.clear()
        worker.results.close()
        worker.jobs.cancel_join_thread()  # tasks queued for the dead process are dropped
        worker.jobs.close()
        if not worker.ready:
            worker.broken = message
            return
        restarted = self._start(worker.spec)
        worker.process, worker.jobs, worker.results, worker.ready = (
            restarted.process,
            restarted.jobs,
            restarted.results,
            False,
        )
        logger.info("restarted %s as pid %d", worker.name, worker.process.pid)

    # ----- jobs ------------------------------------------------------------------------------------
    def submit(self, job_id: int, job: EncoderJob) -> None:
        kind = KIND_OF_MODALITY[job.plan.modality]
        candidates = [w for w in self.workers if w.spec.kind == kind and not w.broken]
        if not candidates:
            self._finished.append(EncoderResult(job_id, f"no live {kind} encoder worker"))
            return
        worker = min(candidates, key=lambda w: len(w.in_flight))
        task = EncodeTask(job_id, job.plan, list(job.page_ids), job.num_tokens)
        worker.in_flight[job_id] = task
        worker.jobs.put(pickle.dumps(task))

    @property
    def num_in_flight(self) -> int:
        return sum(len(w.in_flight) for w in self.workers) + len(self._finished)

    def poll(self) -> list[EncoderResult]:
        """Results that arrived (and failures of dead workers) since the last poll; never blocks."""
        self._collect()
        finished, self._finished = self._finished, []
        return finished

    def wait(self, timeout_s: float, wake_on: tuple = ()) -> None:
        """Block until a worker reports or dies, a `wake_on` connection is readable, or the timeout."""
        if self._finished:
            return
        live = [w for w in self.workers if not w.broken]
        handles = [w.results for w in live] + [w.process.sentinel for w in live] + list(wake_on)
        multiprocessing.connection.wait(handles, timeout_s)

    def _collect(self) -> None:
        for worker in self.workers:
            if worker.broken:
                continue
            try:  # a dead worker's pipe gives what it sent, then EOF: no result is lost to a race
                while not worker.broken and worker.results.poll():
                    self._on_message(worker, pickle.loads(worker.results.recv_bytes()))
            except (EOFError, OSError):
                self._on_death(worker, "died")

    def _on_message(self, worker: _Worker, message) -> None:
        if isinstance(message, TaskDone):
            worker.in_flight.pop(message.job_id, None)
            self._finished.append(EncoderResult(message.job_id))
        elif isinstance(message, TaskFailed):
            worker.in_flight.pop(message.job_id, None)
            error = f"encoding failed: {message.message}"
            self._finished.append(EncoderResult(message.job_id, error, message.invalid_input))
        elif isinstance(message, WorkerReady):
            worker.ready = True
            worker.gc_frozen_objects = message.gc_frozen_objects
        elif isinstance(message, WorkerStartupFailed):
            logger.debug("%s startup traceback:\n%s", worker.name, message.traceback)
            worker.process.join(timeout=5)
            self._on_death(worker, f"failed to start: {message.message}")
        else:
            raise TypeError(f"unknown encoder worker message {type(message).__name__}")

    def shutdown(self) -> None:
        self._finalizer()


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process.is_alive():
            try:
                worker.jobs.put(pickle.dumps(StopWorker()))
            except (OSError, ValueError):
                pass
    for worker in workers:
        worker.process.join(timeout=5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)


def worker_specs(kinds: dict[str, int], base: WorkerSpec, cpu_threads: int | None = None) -> list[WorkerSpec]:
    """One spec per worker: `kinds` maps kind -> count; CPU workers share the cores evenly."""
    total = sum(kinds.values())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = cpu_threads or max(1, cores // (total + 1))
    return [
        replace(base, kind=kind, index=index, num_threads=threads)
        for kind, count in kinds.items()
        for index in range(count)
    ]
