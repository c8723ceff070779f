"""`ocrfleet run` as a library call: lock, plan, supervise workers, finalise, summarise.

Re-running the same command resumes: planning registers only new documents, and workers
claim only pages that are not finished. Exit codes: 0 every document done; 1 some documents
failed (the rest finished); 2 bad options or an unusable ledger; 3 the run stopped with pages
left (interrupted, every worker gave up, or the disk is full); 130 stopped by a second Ctrl-C.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from .config import RunConfig, stored_setting
from .diskfull import DiskFull, is_disk_full
from .diskfull import detail as disk_full_detail
from .engine_slots import (
    EnginesPerGpu,
    available_cores,
    choose_engines_per_gpu,
    gpu_inventory,
    model_weight_bytes,
    plan_workers,
)
from .engines import engine_kind
from .errors import ConfigError
from .events import PageFinished, WorkerEvent
from .filemode import apply_to_ledger
from .gpu_sharing import GpuSharing, gpu_sharing
from .gpu_telemetry import GpuReadings
from .handover import ShmFiles
from .layout import OutputLayout, shard_suffix
from .ledger import Ledger
from .ledger_file import check_ledger_file
from .manifest import write_duplicate_outputs, write_manifest
from .ocr_queue import requeue_for_ocr
from .outdir import check_layout
from .output_sync import OutputSync
from .plan import make_plan
from .redact import redact_obj
from .report import write_report_after_run
from .resolve import resolve_run_config
from .run_summary import (
    RunSummary,
    SlotSummary,
    ThisRun,
)
from .setup_checks import check_run_setup
from .stale_remote import set_aside_remote
from .storage import is_remote, stage_inputs
from .summarize import EXIT_INCOMPLETE, EXIT_KILLED, build_summary
from .supervisor import SlotState, Supervisor
from .telemetry import Progress, RunStats
from .writers import assemble_document, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    summary: RunSummary
    summary_path: Path


@contextlib.contextmanager
def run_lock(output_dir: Path, suffix: str) -> Iterator[None]:
    """One run per ledger at a time; a second one is refused with the holder's pid."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = OutputLayout(output_dir).run_lock(suffix)
    handle: TextIO = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise ConfigError(
                f"another ocrfleet run (pid {holder}) is using {output_dir}; wait for it or "
                "stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def finalize_ready_documents(ledger: Ledger, layout: OutputLayout, worker: str) -> int:
    """Write the files of documents whose pages are all finished (after a crash, or poison)."""
    ready = ledger.claim_ready_documents(worker)
    for doc_id in ready:
        doc = ledger.document(doc_id)
        status, error = assemble_document(layout, doc, ledger.stored_pages(doc_id))
        ledger.finish_document(doc_id, status, error)
    return len(ready)


def run(
    config: RunConfig, *, handle_signals: bool = False, setup_checked: bool = False
) -> RunResult:
    """Process the corpus (this shard of it); returns when done, failed or stopped.

    What the config leaves open is decided first (GPUs, the OCR engine of auto, the progress
    bar: resolve.py), then every wrong setup is refused before anything is written
    (setup_checks.py; the CLI has done it already when `setup_checked`). With
    `handle_signals` (the CLI; only from the main thread), Ctrl-C/SIGTERM finish the pages in
    flight and stop, a second one stops at once.
    """
    config = resolve_run_config(config)
    if not setup_checked:
        check_run_setup(config)
    for warning in engine_kind(config.engine).warnings(config):
        log.warning("%s", warning)
    suffix = shard_suffix(config.fleet.num_shards, config.fleet.shard_index)
    check_layout(config.output_dir, config.fleet.num_shards)
    try:
        with run_lock(config.output_dir, suffix):
            return _run_locked(config, suffix, handle_signals)
    except DiskFull:
        raise
    except Exception as exc:
        if is_disk_full(exc):  # a write of the supervisor's own (ledger, summary, logs)
            raise DiskFull(config.output_dir, disk_full_detail(exc)) from exc
        raise


class PeriodicSync:
    """Uploads outputs and a ledger checkpoint every `interval` seconds, off the main loop."""

    def __init__(self, sync: OutputSync | None, db_path: Path, interval: float) -> None:
        self.sync, self.db_path, self.interval = sync, db_path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ocrfleet-sync", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.now()

    def now(self) -> bool:
        """One sync; False when it failed (the periodic ones retry at the next interval)."""
        if self.sync is None:
            return True
        snapshot: Path | None = None
        try:
            # Snapshot, upload, then publish the snapshot: every document it calls done had
            # its files written before it, and they are in the bucket before it is. (Upload
            # then checkpoint lets a document finish in between; checkpoint then upload lets
            # a node lost mid-upload leave a checkpoint ahead of the files.)
            set_aside_remote(self.sync, self.db_path)  # before new files take those names
            snapshot = self.sync.snapshot_ledger(self.db_path)
            uploaded = self.sync.upload()
            self.sync.publish_ledger(snapshot, self.db_path.name)
            log.info("synced %d file(s) and a ledger checkpoint to %s", uploaded, self.sync.remote)
            return True
        except Exception as exc:  # the next sync retries; the run must not die of it
            log.error("upload to %s failed (will retry): %s", self.sync.remote, exc)
            return False
        finally:
            if snapshot is not None:
                snapshot.unlink(missing_ok=True)

    def __enter__(self) -> PeriodicSync:
        if self.sync is not None:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _run_locked(config: RunConfig, suffix: str, handle_signals: bool) -> RunResult:
    layout = OutputLayout(config.output_dir)
    db_path = layout.ledger(config.fleet.num_shards, config.fleet.shard_index)
    sync = OutputSync(config.output_dir, config.sync.sync_to) if config.sync.sync_to else None
    if sync is not None and not db_path.exists() and sync.restore_ledger(db_path):
        log.info("resuming from the ledger checkpoint in %s", sync.remote)
    if any(is_remote(uri) for uri in config.inputs):
        staged = stage_inputs(config.inputs, config.staging_dir)
        config = replace(config, inputs=tuple(staged))
    check_ledger_file(db_path, fresh=config.fresh_ledger)
    new_ledger = not db_path.exists()
    # Page files a run killed with -9 left in RAM go now, even when nothing is left to do.
    ShmFiles.sweep_orphans_safely()
    ledger = Ledger(db_path)
    if new_ledger:
        apply_to_ledger(db_path)  # sqlite3 makes 0644 whatever the umask
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    run_started = time.time()
    try:
        _wait_for_orphans(ledger)
        released = ledger.recover_interrupted()
        if released:
            log.info(
                "resuming: %d page(s) a previous run left in flight go back in the queue", released
            )
        # The stored config is uploaded with ledger checkpoints: secrets never go in.
        stored = json.dumps(redact_obj(json.loads(config.to_json())), sort_keys=True)
        previous = ledger.begin_run(run_id, stored)
        _warn_changed_options(previous, config)
        plan = make_plan(config, ledger)
        for missing in plan.missing_inputs:  # each with the path tried
            log.error("input not found: %s", missing)
        if plan.corpus_documents == 0 and not plan.missing_inputs:
            log.warning(
                "no PDF found in %s (directories are searched recursively for *.pdf)",
                ", ".join(config.inputs),
            )
        if config.policy.retry_failed:
            log.info("--retry-failed: %d failed page(s) back in the queue", ledger.retry_failed())
        _requeue_for_ocr(config, ledger)
        finalize_ready_documents(ledger, layout, f"supervisor:{os.getpid()}")
        counts = ledger.counts()
        log.info(
            "%d document(s) in this shard (%d new), %d page(s) to do of %d",
            sum(counts.documents.values()),
            plan.new_documents,
            counts.pages["pending"],
            sum(counts.pages.values()),
        )
        stats = RunStats()
        config, engines_per_gpu = resolve_engines_per_gpu(config)
        _interrupted, killed = False, False
        slots: list[SlotSummary] = []
        periodic = PeriodicSync(sync, db_path, config.sync.sync_interval)
        if counts.pages["pending"]:
            with periodic, _gpu_sharing(config, layout, suffix) as sharing:
                engines_per_gpu = replace(
                    engines_per_gpu,
                    mps=bool(sharing.daemons),
                    mps_reason=sharing.choice.reason,
                )
                _interrupted, killed, slots = _supervise(
                    config,
                    db_path,
                    ledger,
                    stats,
                    counts,
                    engines_per_gpu.kv_cache_bytes,
                    handle_signals,
                    sharing.pipes(),
                )
        finalize_ready_documents(ledger, layout, f"supervisor:{os.getpid()}")
        write_duplicate_outputs(ledger, layout)
        inputs = write_manifest(
            layout.manifest(suffix),
            ledger,
            layout,
            plan.entries,
            plan.missing_inputs,
        )
        summary = build_summary(
            config,
            ledger,
            ThisRun(**stats.summary()),
            slots,
            plan,
            run_id,
            engines_per_gpu,
            GpuReadings(db_path, run_started).means(),  # NVML means, per GPU
            inputs,
            killed,
        )
        code = summary.exit_code
        summary_path = layout.summary(suffix)
        ledger.end_run(run_id, summary.to_json())
        write_json(summary_path, summary.to_json())
        write_json(layout.history(run_id, suffix), summary.to_json())
        write_report_after_run(config.output_dir)
        if not periodic.now() and code != EXIT_KILLED:
            # Nothing is lost (the outputs and the ledger are here), but the bucket lacks
            # them: not a success, or a Ray shard on a lost node would not be run again.
            log.error(
                "the final upload to %s failed: the outputs are complete in %s; run the "
                "same command again to upload them",
                config.sync.sync_to,
                config.output_dir,
            )
            code = EXIT_INCOMPLETE
            summary = replace(summary, exit_code=code)
            write_json(summary_path, summary.to_json())
        return RunResult(code, summary, summary_path)
    finally:
        ledger.close()


def resolve_engines_per_gpu(config: RunConfig) -> tuple[RunConfig, EnginesPerGpu]:
    """`--engines-per-gpu auto`: K from the GPU's memory, the weights and the cores per GPU;
    with K > 1 on a GPU of known memory, each engine's KV budget too."""
    given = config.fleet.engines_per_gpu
    engine = config.engine
    planned = engine_kind(engine).gpu_use(engine) == "planned"  # its memory is known
    if not config.fleet.gpus or not planned or engine.tensor_parallel_size > 1:
        choice = EnginesPerGpu(given or 1, "given" if given else "one engine per GPU")
    else:
        known = gpu_inventory()
        listed = [known[g] for g in config.fleet.gpus if g < len(known)]
        if not listed:
            choice = EnginesPerGpu(given or 1, "given" if given else "GPU memory unknown")
        else:
            choice = choose_engines_per_gpu(
                min(listed, key=lambda g: g.memory_bytes),
                gpus=len(config.fleet.gpus),
                cpu_cores=available_cores(),
                weights_bytes=model_weight_bytes(config.engine.model),
                gpu_memory_utilization=config.engine.gpu_memory_utilization,
                given=given,
            )
    log.info("engines per GPU: %d (%s)", choice.engines, choice.rule)
    return replace(config, fleet=replace(config.fleet, engines_per_gpu=choice.engines)), choice


def _gpu_sharing(
    config: RunConfig, layout: OutputLayout, suffix: str
) -> contextlib.AbstractContextManager[GpuSharing]:
    """CUDA MPS daemons for the GPUs of this run, where engines share them (gpu_sharing)."""
    return gpu_sharing(
        config.fleet.mps,
        config.fleet.engines_per_gpu or 1,
        config.fleet.gpus,
        f"{socket.gethostname()}:{config.output_dir.resolve()}:{suffix}",
        layout.logs_dir,
        tensor_parallel=config.engine.tensor_parallel_size,
    )


def _supervise(
    config: RunConfig,
    db_path: Path,
    ledger: Ledger,
    stats: RunStats,
    counts: Any,
    kv_cache_bytes: int | None,
    handle_signals: bool,
    mps: dict[int, tuple[str, str]],
) -> tuple[bool, bool, list[SlotSummary]]:
    specs = plan_workers(config, os.cpu_count() or 1, kv_cache_bytes, mps)
    if not specs:
        raise ConfigError("no engine worker fits the GPUs given; check --gpus and TP size")
    total = sum(counts.pages.values())
    progress = Progress(total, total - counts.pages["pending"], bool(config.progress))
    supervisor: Supervisor
    readings = GpuReadings(db_path, time.time())

    def on_event(event: WorkerEvent) -> None:
        stats.add(event)
        if isinstance(event, PageFinished) and event.stored:
            gpu_util = readings.utilisation() if config.fleet.gpus and config.progress else None
            progress.advance(slot_rates(supervisor.slots), gpu_util)

    supervisor = Supervisor(
        config.fleet, config.output_dir, config.to_json(), db_path, ledger, specs, on_event
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if supervisor.stopping:
            log.warning("second %s: stopping now", signal.Signals(signum).name)
        else:
            log.warning(
                "%s: finishing pages in flight, then stopping (again to stop now)",
                signal.Signals(signum).name,
            )
        supervisor.request_stop()

    handled = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
    old = {s: signal.signal(s, on_signal) for s in handled}
    try:
        result = supervisor.run()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        progress.close()
    if supervisor.killed:
        ledger.recover_interrupted()
    slots = [
        SlotSummary(
            slot=s.spec.slot,
            device=s.spec.label,
            pages=s.pages,
            pages_per_second=round(s.pages_per_second(), 4),
            output_tokens=s.output_tokens,
            restarts=s.restarts,
            gave_up=s.gave_up,
            engine_ready=s.ready_at is not None,
            start_error=s.start_error,
            last_error=s.last_error,
            stopped_while_starting=s.retired,
        )
        for s in result.slots
    ]
    return result.interrupted, supervisor.killed, slots


def slot_rates(slots: list[SlotState]) -> dict[str, float] | None:
    """Pages/s per engine slot for the progress bar (none for a single slot); a slot given up
    shows as such, its cause is in the log line and the summary."""
    if len(slots) < 2:
        return None
    shared = len({s.spec.label for s in slots}) < len(slots)
    rates = {}
    for s in slots:
        key = f"{s.spec.label}#{s.spec.slot}" if shared else s.spec.label
        rates[f"{key} gave up" if s.gave_up else key] = s.pages_per_second()
    return rates


def _wait_for_orphans(ledger: Ledger, timeout: float = 30.0) -> None:
    """Workers of a supervisor that was killed hand their pages back within moments (they get
    SIGTERM from the kernel); give them that moment before taking the pages over."""
    host = socket.gethostname()
    pids = [pid for worker, pid in ledger.live_workers() if worker.startswith(f"{host}:")]
    deadline = time.monotonic() + timeout
    for pid in pids:
        while pid > 0 and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def _warn_changed_options(previous: str | None, config: RunConfig) -> None:
    if previous is None:
        return
    before = json.loads(previous)
    now = json.loads(config.to_json())
    keys = ("mode", "prompt", "dpi")
    changed = [k for k in keys if stored_setting(before, k) != stored_setting(now, k)]
    if before.get("engine", {}).get("name") != now["engine"]["name"]:
        changed.append("engine")
    if changed:
        log.warning(
            "options changed since the last run (%s): pages already finished keep the old "
            "settings; use a new --output-dir to redo them",
            ", ".join(changed),
        )


def _requeue_for_ocr(config: RunConfig, ledger: Ledger) -> None:
    """With an OCR engine, pages an earlier run left as needs_ocr (and, with --redo-flag,
    finished pages carrying the flag) go back in the queue; nothing else is redone."""
    if not config.ocr_capable:
        return
    needs, flagged = requeue_for_ocr(ledger, config.policy.redo_flags)
    if needs or flagged:
        log.info(
            "back in the queue for OCR: %d page(s) left as needs_ocr, %d with --redo-flag %s",
            needs,
            flagged,
            ",".join(config.policy.redo_flags) or "-",
        )
