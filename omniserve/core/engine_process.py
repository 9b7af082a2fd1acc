"""The engine core in its own process, and the handle the API process holds on it.

    API process                                     engine process ("spawn" child)
    EngineProcessClient.send(AddRequest ...)  --->  run_engine_process: EngineCore(config), then loop:
    EngineProcessClient.recv() -> StepOutputs <---    drain inputs (block only when idle) -> step() -> send

The API process never runs model code: it only pickles messages (`engine_process_messages`) over two
one-way pipes. The child reports its startup (`EngineReady` or `EngineStartupFailed`) before anything else,
ignores Ctrl-C (the parent shuts it down), and exits by itself when the parent dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback

from omniserve import envs
from omniserve.config import EngineConfig
from omniserve.core.engine_core import EngineCore, ModelInfo
from omniserve.core.engine_process_messages import (
    AbortRequests,
    AddRequest,
    EngineEvent,
    EngineFailed,
    EngineInput,
    EngineReady,
    EngineStartupFailed,
    Shutdown,
    StatsQuery,
    StatsReply,
    StepOutputs,
)
from omniserve.core.gc_policy import freeze_startup_heap

logger = logging.getLogger("omniserve")


class EngineStartupError(RuntimeError):
    """The engine process could not start; the message is meant for the user."""


# ----- engine process side -----------------------------------------------------------------------------


def _exit_with_parent() -> None:
    """A daemon thread that ends this process as soon as the parent is gone (even if it was SIGKILLed)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="omniserve-parent-watch", daemon=True).start()


def _limit_cpu_threads(config: EngineConfig) -> None:
    """On CPU, leave one core to the API process: torch's OpenMP threads busy-wait between ops and would
    starve it (measured: 3x lower serving throughput on 2 cores). An explicit OMP_NUM_THREADS wins."""
    if envs.omp_num_threads() is not None or config.device.device not in ("cpu", "auto"):
        return
    import torch

    if config.device.device == "auto" and torch.cuda.is_available():
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores - 1))


def _handle_input(engine: EngineCore, message: EngineInput, events, rejected: list[tuple[str, str]]) -> bool:
    """Apply one input message; return False on `Shutdown`."""
    if isinstance(message, AddRequest):
        for request in message.requests:
            try:
                engine.add_request(request)
            except ValueError as error:  # e.g. a duplicate id: refuse this request, keep serving
                rejected.append((request.request_id, str(error)))
    elif isinstance(message, AbortRequests):
        engine.abort_requests(message.request_ids)
    elif isinstance(message, StatsQuery):
        events.send(StatsReply(message.query_id, engine.stats()))
    elif isinstance(message, Shutdown):
        return False
    else:
        raise TypeError(f"unknown engine input {type(message).__name__}")
    return True


def _serve(engine: EngineCore, inputs, events) -> None:
    while True:
        if not engine.has_unfinished_requests():
            inputs.poll(None)  # idle: sleep until the frontend sends something
        rejected: list[tuple[str, str]] = []
        while inputs.poll():
            if not _handle_input(engine, inputs.recv(), events, rejected):
                return
        # A step that only waits on encoder workers sleeps until one reports or an input arrives.
        outputs = engine.step(wake_on=(inputs,)) if engine.has_unfinished_requests() else []
        if outputs or rejected:
            events.send(StepOutputs(outputs, rejected))  # one message per step, whatever the batch size


def run_engine_process(config: EngineConfig, inputs, events) -> None:
    """Entry point of the child: build the engine, report, serve until `Shutdown` or the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    logging.basicConfig(level=envs.log_level(), format="%(levelname)s %(name)s [engine]: %(message)s")
    # This process is daemonic (it must not outlive the API process), but it starts the encoder workers;
    # they end with it (daemonic themselves, and they watch this process).
    multiprocessing.current_process().daemon = False
    try:
        _limit_cpu_threads(config)
        engine = EngineCore(config)
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent as one message
        events.send(EngineStartupFailed(str(error) or type(error).__name__, traceback.format_exc()))
        return
    # this process holds this engine until it exits: full GC passes need not walk its startup heap
    frozen = freeze_startup_heap()
    events.send(EngineReady(engine.info, os.getpid(), frozen))
    try:
        _serve(engine, inputs, events)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent closed its ends: nothing left to serve
    except BaseException as error:  # noqa: BLE001
        logger.exception("engine loop failed")
        try:
            events.send(EngineFailed(f"{type(error).__name__}: {error}", traceback.format_exc()))
        except OSError:
            pass
    finally:
        engine.shutdown()


# ----- API process side ---------------------------------------------------------------------------------


class EngineProcessClient:
    """Starts the engine process and blocks until it is ready (or raises `EngineStartupError`)."""

    def __init__(self, config: EngineConfig, startup_timeout_s: float = 900.0) -> None:
        context = multiprocessing.get_context("spawn")
        inputs_recv, self._inputs = context.Pipe(duplex=False)
        self._events, events_send = context.Pipe(duplex=False)
        self.process = context.Process(
            target=run_engine_process,
            args=(config, inputs_recv, events_send),
            name="omniserve-engine",
            daemon=True,
        )
        self.process.start()
        inputs_recv.close()  # the child holds its own copies
        events_send.close()
        self._send_lock = threading.Lock()
        ready = self._wait_ready(startup_timeout_s)
        self.info: ModelInfo = ready.info
        self.gc_frozen_objects = ready.gc_frozen_objects  # the engine process's startup heap, frozen

    def _wait_ready(self, timeout_s: float) -> EngineReady:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            ready = multiprocessing.connection.wait(
                [self._events, self.process.sentinel], timeout=max(left, 0)
            )
            if self._events in ready:
                try:
                    event = self._events.recv()
                except EOFError:
                    event = None
                if isinstance(event, EngineReady):
                    logger.info("engine process %d ready (%d startup objects frozen out of the GC's reach)",
                                event.pid, event.gc_frozen_objects)
                    return event
                self.process.join(timeout=10)
                if isinstance(event, EngineStartupFailed):
                    logger.debug("engine startup traceback:\n%s", event.traceback)
                    raise EngineStartupError(event.message)
                raise EngineStartupError(
                    f"the engine process exited during startup (code {self.process.exitcode})"
                )
            if self.process.sentinel in ready:
                self.process.join(timeout=10)
                raise EngineStartupError(
                    f"the engine process exited during startup (code {self.process.exitcode})"
                )
            if left <= 0:
                self.kill()
                raise EngineStartupError(f"the engine did not start within {timeout_s:.0f} s")

    def send(self, message: EngineInput) -> None:
        with self._send_lock:
            self._inputs.send(message)

    def recv(self) -> EngineEvent:
        """Next event; raises EOFError once the engine process is gone."""
        return self._events.recv()

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self.process.is_alive():
            try:
                self.send(Shutdown())
            except OSError:
                pass
            self.process.join(timeout=timeout_s)
        self.kill()
        self._inputs.close()
