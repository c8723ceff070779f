"""Engine worker processes and the supervisor that runs them: one node, one ledger, N engines.

Each worker is a full pipeline consumer (page_worker.PageWorker) with its own engine, pinned to
its GPU(s) with CUDA_VISIBLE_DEVICES, claiming pages from the shared ledger. The supervisor
starts them, shows one progress bar, restarts a worker that dies (backoff, capped) after
handing its in-flight pages back with a crash counted against each, kills a worker whose
heartbeat stops, and stops them all cleanly on Ctrl-C / SIGTERM (a second one ends at once).

Workers run in their own process group, so a terminal's Ctrl-C reaches only the supervisor,
which then asks them to stop; if the supervisor is killed they get SIGTERM from the kernel
(PR_SET_PDEATHSIG) and hand their pages back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import FleetConfig, RunConfig
from .diskfull import EXIT_DISK_FULL, DiskFull, LogFileHandler, is_disk_full
from .diskfull import detail as disk_full_detail
from .engine_slots import WorkerSpec
from .engines import create_engine, engine_kind
from .errors import EngineDead
from .events import EngineReady, EventSink, PageFinished, WorkerEvent, decode, encode
from .gpu_telemetry import start_gpu_sampler
from .handover import ShmFiles
from .layout import OutputLayout
from .ledger import Ledger
from .page_worker import PageWorker
from .redact import install_redaction
from .redact_stream import redirect_output
from .worker_logs import last_worker_error

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_ENGINE_DEAD = 3
EXIT_ENGINE_START = 4
PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 60.0
RESTART_BACKOFF_CAP = 60.0
# A first vLLM start compiles and captures CUDA graphs: minutes, with the event loop blocked.
ENGINE_START_GRACE = 1800.0


def worker_id(slot: int, pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{slot}"


# ---- the worker process -------------------------------------------------------------------


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_main(config_json: str, spec: WorkerSpec, conn: Connection, db_path: str) -> None:
    """Entry point of an engine worker process."""
    try:
        _worker_main(config_json, spec, conn, db_path)
    except Exception as exc:
        if is_disk_full(exc):  # restarting into a full disk helps nobody: tell the supervisor
            os._exit(EXIT_DISK_FULL)
        raise


def _worker_main(config_json: str, spec: WorkerSpec, conn: Connection, db_path: str) -> None:
    os.setpgrp()
    _die_with_parent()
    if spec.gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
    if spec.mps is not None:
        # The GPU's private MPS daemon shows it as device 0 (gpu_sharing).
        pipe, logs = spec.mps
        os.environ.update(
            CUDA_VISIBLE_DEVICES="0", CUDA_MPS_PIPE_DIRECTORY=pipe, CUDA_MPS_LOG_DIRECTORY=logs
        )
    config = RunConfig.from_json(config_json)
    engine_config = engine_kind(config.engine).per_slot_config(config.engine, spec)
    config = replace(config, engine=engine_config)  # its share of the GPU, if shared
    _setup_worker_logging(config, spec)
    me = worker_id(spec.slot, os.getpid())
    ledger = Ledger(Path(db_path))
    ledger.register_worker(me, spec.slot, os.getpid(), spec.label, ENGINE_START_GRACE)

    def send(event: WorkerEvent) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            conn.send(encode(event))

    sampler = start_gpu_sampler(Path(db_path), me, spec.gpus, config.fleet.gpu_sample_seconds)
    engine = create_engine(config.engine)
    worker = PageWorker(
        config,
        ledger,
        engine,
        me,
        render_workers=spec.render_workers,
        on_event=send,
        shared_faults=spec.mps is not None,
    )
    code = asyncio.run(_serve(worker, conn, send))
    if sampler is not None:
        sampler.stop()
    ShmFiles.sweep(os.getpid())  # pages drawn in files that were never taken (a stop mid-run)
    ledger.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: engine threads can hang it


async def _serve(worker: PageWorker, conn: Connection, send: EventSink) -> int:
    loop = asyncio.get_running_loop()

    def on_term() -> None:
        # Workers live in their own process group: SIGTERM comes from the kernel when the
        # supervisor died (PR_SET_PDEATHSIG) or from someone who wants this worker gone.
        # Either way, hand the pages back now; graceful stops arrive as control messages.
        worker.request_stop(0.0)

    def on_control() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            worker.request_stop(0.0)  # the supervisor is gone
            return
        if isinstance(message, tuple) and message[0] == "stop":
            worker.request_stop(float(message[1]))

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    loop.add_reader(conn.fileno(), on_control)
    try:
        await worker.run()
    except EngineDead as exc:
        log.error("engine died: %s", exc)
        return EXIT_ENGINE_DEAD
    except Exception as exc:
        if is_disk_full(exc):
            log.error("disk full: %s", exc)
            return EXIT_DISK_FULL
        log.exception("worker failed: %s", exc)
        return EXIT_ERROR if worker.engine_started else EXIT_ENGINE_START
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())
    return EXIT_OK


def _setup_worker_logging(config: RunConfig, spec: WorkerSpec) -> None:
    layout = OutputLayout(config.output_dir)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    handler = LogFileHandler(layout.worker_log(spec.slot), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    install_redaction([handler])
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())
    # vLLM logs through its own handlers to stdout/stderr: into the file too, redacted.
    redirect_output(layout.worker_out(spec.slot))


# ---- the supervisor -----------------------------------------------------------------------


@dataclass
class SlotState:
    spec: WorkerSpec
    process: BaseProcess | None = None
    conn: Connection | None = None
    worker: str = ""
    restarts: int = 0
    restart_at: float | None = None
    done: bool = False
    gave_up: bool = False
    pages: int = 0
    output_tokens: int = 0
    ready_at: float | None = None  # its first engine ready: the rate's clock starts here
    # The engine of the current process is still starting (loading, profiling memory,
    # allocating its KV cache): another engine on the same GPU waits until it is ready.
    starting: bool = False
    waiting: bool = False  # due to start, held back while a GPU neighbour is starting
    start_error: str | None = None  # why its engine last failed to start, if it did
    retired: bool = False  # stopped while starting: every page was finished without it
    first_page_at: float | None = None
    last_page_at: float | None = None
    last_error: str | None = None  # the quoted cause of its last death

    def pages_per_second(self) -> float:
        # From engine ready, not from the first page: a GPU engine finishes its first batch
        # of pages together near the end (first-to-last page gave 181 pages/s on an H200
        # doing 10.9), and restarts after that count against the rate.
        if self.ready_at is not None and self.last_page_at is not None:
            span = self.last_page_at - self.ready_at
            return self.pages / span if span > 0 else 0.0
        if self.first_page_at is None or self.last_page_at is None or self.pages < 2:
            return 0.0
        span = self.last_page_at - self.first_page_at
        return (self.pages - 1) / span if span > 0 else 0.0


@dataclass
class SupervisorResult:
    slots: list[SlotState]
    interrupted: bool


class Supervisor:
    def __init__(
        self,
        fleet: FleetConfig,
        output_dir: Path,
        worker_config: str,
        db_path: Path,
        ledger: Ledger,
        specs: list[WorkerSpec],
        on_event: EventSink,
    ) -> None:
        """`worker_config`: the RunConfig JSON each worker process runs with; the supervisor
        itself reads only `fleet` and the output directory (worker logs)."""
        self.fleet = fleet
        self.output_dir = output_dir
        self.worker_config = worker_config
        self.db_path = db_path
        self.ledger = ledger
        self.slots = [SlotState(spec) for spec in specs]
        self.on_event = on_event
        self._ctx = multiprocessing.get_context("spawn")
        self._stopping = False
        self._kill = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def killed(self) -> bool:
        return self._kill

    def request_stop(self) -> None:
        """First call: stop claiming, finish in-flight pages. Second: stop now."""
        if self._stopping:
            self._kill = True
            return
        self._stopping = True
        for state in self.slots:
            self._send(state, ("stop", STOP_GRACE_SECONDS))

    def _send(self, state: SlotState, message: object) -> None:
        if state.conn is not None:
            with contextlib.suppress(OSError, BrokenPipeError):
                state.conn.send(message)

    def _start(self, state: SlotState) -> None:
        state.waiting, state.starting = False, True
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main,
            args=(self.worker_config, state.spec, child, str(self.db_path)),
            name=f"ocrfleet-worker-{state.spec.slot}",
        )
        process.start()
        child.close()
        assert process.pid is not None
        state.process, state.conn = process, parent
        state.worker = worker_id(state.spec.slot, process.pid)
        state.restart_at = None
        log.info("worker %d (%s) started, pid %d", state.spec.slot, state.spec.label, process.pid)

    def _gpu_neighbour_starting(self, state: SlotState) -> bool:
        """Engines that share a GPU start one after another: vLLM profiles memory by watching
        the whole GPU, so engines profiling at once count each other's allocations as their
        own; on an H200 three concurrent starts crashed one engine and starved the others
        of KV cache (shared/facts/engines-per-gpu.md)."""
        if not state.spec.gpus or state.spec.kv_cache_bytes is not None:
            return False
        mine = set(state.spec.gpus)
        return any(
            other is not state and other.starting and mine & set(other.spec.gpus)
            for other in self.slots
        )

    def _start_waiting(self) -> None:
        for state in self.slots:
            if state.waiting and not self._gpu_neighbour_starting(state):
                self._start(state)

    def _retire_idle_starts(self) -> None:
        """Every page is finished: slots still waiting for their turn or loading an engine
        have nothing to do (an H200 run waited 2.5 min for two late engines to come up, then
        stop). A loading engine holds no page, so it is killed outright."""
        if not any(s.waiting or s.starting for s in self.slots) or self.ledger.has_pending_pages():
            return
        for state in self.slots:
            loading = state.process if state.starting and not state.retired else None
            if not (state.waiting or loading is not None):
                continue
            log.info(
                "worker %d (%s): every page is done while its engine is still starting: stopped%s",
                state.spec.slot,
                state.spec.label,
                f" (its last start failed: {state.start_error})" if state.start_error else "",
            )
            state.retired = True
            if state.waiting:
                state.waiting, state.done = False, True
            elif loading is not None:
                # Its own process group once it has run that far (vLLM's engine core is in
                # it); the process itself in any case.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(loading.pid or 0, signal.SIGKILL)
                loading.kill()

    def _declare_fleet(self) -> None:
        self.ledger.set_fleet_slots(sum(1 for s in self.slots if not (s.gave_up or s.done)))

    def run(self) -> SupervisorResult:
        try:
            return self._run()
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self._kill_all()  # their claims go back to the queue when the run resumes
            if isinstance(exc, DiskFull):
                raise
            raise DiskFull(self.output_dir, disk_full_detail(exc)) from exc

    def _run(self) -> SupervisorResult:
        ShmFiles.sweep_orphans_safely()  # pages in RAM from a run that was killed outright
        self._declare_fleet()
        for state in self.slots:
            state.waiting = True
        self._start_waiting()
        next_health_check = time.monotonic() + self.fleet.lease_seconds / 2
        while not all(s.done or s.gave_up for s in self.slots):
            if self._kill:
                self._kill_all()
                break
            self._restart_due()
            self._retire_idle_starts()
            self._start_waiting()
            waitables: dict[Any, SlotState] = {}
            for s in self.slots:
                if s.process is not None and not s.done:
                    waitables[s.process.sentinel] = s
                    if s.conn is not None:
                        waitables[s.conn] = s
            for ready in wait(list(waitables), timeout=0.5):
                state = waitables[ready]
                if ready is state.conn:
                    self._receive(state)
                elif state.process is not None and ready == state.process.sentinel:
                    self._receive(state)
                    self._exited(state)
            if time.monotonic() >= next_health_check:
                self._kill_stale()
                next_health_check = time.monotonic() + self.fleet.lease_seconds / 2
        return SupervisorResult(self.slots, self._stopping)

    def _receive(self, state: SlotState) -> None:
        conn = state.conn
        if conn is None:
            return
        try:
            while conn.poll():
                try:
                    event = decode(conn.recv())
                except ValueError as exc:  # a worker of another ocrfleet version
                    log.warning("worker %d: %s (ignored)", state.spec.slot, exc)
                    continue
                self._count(state, event)
                self.on_event(event)
        except (EOFError, OSError):
            return

    def _count(self, state: SlotState, event: WorkerEvent) -> None:
        if isinstance(event, EngineReady):
            state.starting, state.start_error = False, None
            if state.ready_at is None:
                state.ready_at = time.monotonic()
        if isinstance(event, PageFinished) and event.stored:
            now = time.monotonic()
            state.pages += 1
            state.output_tokens += event.output_tokens
            state.first_page_at = state.first_page_at or now
            state.last_page_at = now

    def _exited(self, state: SlotState) -> None:
        assert state.process is not None
        state.process.join(timeout=1)
        code = state.process.exitcode
        if state.process.pid is not None:
            ShmFiles.sweep(state.process.pid)  # pages its render processes left in RAM
        if state.conn is not None:
            state.conn.close()
            state.conn = None
        state.process = None
        if code == EXIT_DISK_FULL:
            raise DiskFull(self.output_dir, f"worker {state.spec.slot} could not write")
        if state.starting and not state.retired:
            state.start_error = self._cause(state)
        state.starting = False
        if state.retired or code == EXIT_OK:
            self.ledger.worker_stopped(state.worker)
            state.done = True
            self._declare_fleet()  # the engines still running share what comes back
            return
        poisoned = self.ledger.reap_worker(state.worker, self.fleet.max_page_crashes)
        for doc_id, page in poisoned:
            log.error("page %d of %s failed as a poison page", page, doc_id)
            self.on_event(PageFinished(status="failed", stored=True))
        if self._stopping:
            state.done = True
            return
        state.restarts += 1
        state.last_error = self._cause(state)
        if state.restarts > self.fleet.max_worker_restarts:
            log.error(
                "worker %d (%s) died %d times (last exit %s): giving up on it: %s",
                state.spec.slot,
                state.spec.label,
                state.restarts,
                code,
                state.last_error,
            )
            state.gave_up = True
            self._declare_fleet()
            return
        delay = min(RESTART_BACKOFF_CAP, 2.0 ** (state.restarts - 1))
        log.warning(
            "worker %d (%s) died (exit %s): %s; restart %d/%d in %.0f s",
            state.spec.slot,
            state.spec.label,
            code,
            state.last_error,
            state.restarts,
            self.fleet.max_worker_restarts,
            delay,
        )
        state.restart_at = time.monotonic() + delay

    def _cause(self, state: SlotState) -> str:
        """The dead worker's last error line and the file it is in (logs/worker-N.*)."""
        layout = OutputLayout(self.output_dir)
        found = last_worker_error(layout, state.spec.slot)
        if found is None:
            log_file = layout.worker_log(state.spec.slot).relative_to(layout.root)
            return f"no error logged; see {log_file} and .out"
        return found.describe(self.output_dir)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for state in self.slots:
            if state.restart_at is not None and now >= state.restart_at and not self._stopping:
                state.restart_at, state.waiting = None, True
            elif (state.restart_at is not None or state.waiting) and self._stopping:
                state.restart_at, state.waiting = None, False
                state.done = True

    def _kill_stale(self) -> None:
        """A worker whose heartbeat stopped (hung engine, blocked loop) is killed and reaped."""
        stale = set(self.ledger.stale_workers(time.time() - 2 * self.fleet.lease_seconds))
        for state in self.slots:
            if state.worker in stale and state.process is not None and state.process.is_alive():
                log.error("worker %d stopped heartbeating: killing it", state.spec.slot)
                state.process.kill()

    def _kill_all(self) -> None:
        for state in self.slots:
            if state.process is not None and state.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(state.process.pid or 0, signal.SIGKILL)
                state.process.join(timeout=5)
            state.done = True
