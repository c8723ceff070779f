"""`ocrfleet run` as a library call: lock, plan, supervise workers, finalise, summarise.

Re-running the same command resumes: planning registers only new documents, and workers
claim only pages that are not finished. Exit codes: 0 every document done; 1 some documents
failed (the rest finished); 2 bad options; 3 the run stopped with pages left (interrupted, or
every worker gave up); 130 stopped by a second Ctrl-C.
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

from . import __version__
from .config import RunConfig
from .errors import ConfigError
from .ledger import Ledger
from .manifest import manifest_path, write_duplicate_outputs, write_manifest
from .outdir import check_layout
from .plan import ledger_path, make_plan, shard_suffix
from .redact import redact_obj
from .storage import OutputSync, is_remote, stage_inputs
from .telemetry import Progress, RunStats
from .workers import Supervisor, plan_workers
from .writers import OutputLayout, assemble_document, write_json

log = logging.getLogger(__name__)

EXIT_DONE = 0
EXIT_FAILED_DOCUMENTS = 1
EXIT_CONFIG = 2
EXIT_INCOMPLETE = 3
EXIT_KILLED = 130


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    summary: dict[str, Any]
    summary_path: Path


@contextlib.contextmanager
def run_lock(output_dir: Path, suffix: str) -> Iterator[None]:
    """One run per ledger at a time; a second one is refused with the holder's pid."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f".ocrfleet{suffix}.lock"
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


def run(config: RunConfig) -> RunResult:
    """Process the corpus (this shard of it); returns when done, failed or stopped."""
    if config.engine.name == "vllm":
        from .engines.vllm_checks import check_topology

        for warning in check_topology(config):
            log.warning("%s", warning)
    suffix = shard_suffix(config.num_shards, config.shard_index)
    check_layout(config.output_dir, config.num_shards)
    with run_lock(config.output_dir, suffix):
        return _run_locked(config, suffix)


class PeriodicSync:
    """Uploads outputs and a ledger checkpoint every `interval` seconds, off the main loop."""

    def __init__(self, sync: OutputSync | None, db_path: Path, interval: float) -> None:
        self.sync, self.db_path, self.interval = sync, db_path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ocrfleet-sync", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.now()

    def now(self) -> None:
        if self.sync is None:
            return
        try:
            uploaded = self.sync.upload()
            self.sync.checkpoint_ledger(self.db_path)
            log.info("synced %d file(s) and a ledger checkpoint to %s", uploaded, self.sync.remote)
        except Exception as exc:  # the next sync retries; the run must not die of it
            log.error("upload to %s failed (will retry): %s", self.sync.remote, exc)

    def __enter__(self) -> PeriodicSync:
        if self.sync is not None:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _run_locked(config: RunConfig, suffix: str) -> RunResult:
    db_path = ledger_path(config.output_dir, config.num_shards, config.shard_index)
    sync = OutputSync(config.output_dir, config.sync_to) if config.sync_to else None
    if sync is not None and not db_path.exists() and sync.restore_ledger(db_path):
        log.info("resuming from the ledger checkpoint in %s", sync.remote)
    if any(is_remote(uri) for uri in config.inputs):
        staged = stage_inputs(config.inputs, config.staging_dir)
        config = replace(config, inputs=tuple(staged))
    ledger = Ledger(db_path)
    layout = OutputLayout(config.output_dir)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    try:
        _wait_for_orphans(ledger)
        released = ledger.recover_interrupted()
        if released:
            log.info(
                "resuming: %d page(s) a previous run left in flight go back in the queue", released
            )
        previous = ledger.begin_run(run_id, config.to_json())
        _warn_changed_options(previous, config)
        plan = make_plan(config, ledger)
        for missing in plan.missing_inputs:
            log.error("input not found: %s", missing)
        if config.retry_failed:
            log.info("--retry-failed: %d failed page(s) back in the queue", ledger.retry_failed())
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
        interrupted, killed = False, False
        slots: list[dict[str, Any]] = []
        periodic = PeriodicSync(sync, db_path, config.sync_interval)
        if counts.pages["pending"]:
            with periodic:
                interrupted, killed, slots = _supervise(config, db_path, ledger, stats, counts)
        finalize_ready_documents(ledger, layout, f"supervisor:{os.getpid()}")
        write_duplicate_outputs(ledger, layout)
        inputs = write_manifest(
            manifest_path(config.output_dir, suffix),
            ledger,
            layout,
            plan.entries,
            plan.missing_inputs,
        )
        summary = _summary(config, ledger, stats, slots, plan.missing_inputs, run_id)
        summary["inputs"] = inputs
        code = _exit_code(summary, interrupted, killed)
        summary["exit_code"] = code
        summary = redact_obj(summary)
        summary_path = layout.summary(suffix)
        ledger.end_run(run_id, summary)
        write_json(summary_path, summary)
        periodic.now()
        return RunResult(code, summary, summary_path)
    finally:
        ledger.close()


def _supervise(
    config: RunConfig, db_path: Path, ledger: Ledger, stats: RunStats, counts: Any
) -> tuple[bool, bool, list[dict[str, Any]]]:
    specs = plan_workers(config, os.cpu_count() or 1)
    if not specs:
        raise ConfigError("no engine worker fits the GPUs given; check --gpus and TP size")
    total = sum(counts.pages.values())
    progress = Progress(total, total - counts.pages["pending"], config.progress)
    supervisor: Supervisor

    def on_event(event: dict[str, Any]) -> None:
        stats.add(event)
        if event.get("kind") == "page" and event.get("stored"):
            rates = {s.spec.label: s.pages_per_second() for s in supervisor.slots}
            progress.advance(rates if len(rates) > 1 else None)

    supervisor = Supervisor(config, db_path, ledger, specs, on_event)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if supervisor.stopping:
            log.warning("second %s: stopping now", signal.Signals(signum).name)
        else:
            log.warning(
                "%s: finishing pages in flight, then stopping (again to stop now)",
                signal.Signals(signum).name,
            )
        supervisor.request_stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = supervisor.run()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        progress.close()
    if supervisor.killed:
        ledger.recover_interrupted()
    slots = [
        {
            "slot": s.spec.slot,
            "device": s.spec.label,
            "pages": s.pages,
            "pages_per_second": round(s.pages_per_second(), 4),
            "output_tokens": s.output_tokens,
            "restarts": s.restarts,
            "gave_up": s.gave_up,
        }
        for s in result.slots
    ]
    return result.interrupted, supervisor.killed, slots


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
    changed = [k for k in keys if before.get(k) != now.get(k)]
    if before.get("engine", {}).get("name") != now["engine"]["name"]:
        changed.append("engine")
    if changed:
        log.warning(
            "options changed since the last run (%s): pages already finished keep the old "
            "settings; use a new --output-dir to redo them",
            ", ".join(changed),
        )


def _summary(
    config: RunConfig,
    ledger: Ledger,
    stats: RunStats,
    slots: list[dict[str, Any]],
    missing: list[str],
    run_id: str,
) -> dict[str, Any]:
    counts = ledger.counts()
    return {
        "ocrfleet_version": __version__,
        "run_id": run_id,
        "output_dir": str(config.output_dir),
        "shard": {"index": config.shard_index, "count": config.num_shards},
        "engine": config.engine.name,
        "model": config.engine.model if config.engine.name == "vllm" else None,
        "documents": {k: v for k, v in counts.documents.items() if k != "assembling"},
        "pages": counts.pages,
        "this_run": stats.summary(),
        "synced_to": config.sync_to,
        "workers": slots,
        "failed_documents": ledger.failed_documents(),
        "missing_inputs": missing,
    }


def _exit_code(summary: dict[str, Any], interrupted: bool, killed: bool) -> int:
    if killed:
        return EXIT_KILLED
    if summary["pages"]["pending"]:
        return EXIT_INCOMPLETE
    if summary["documents"].get("failed") or summary["missing_inputs"]:
        return EXIT_FAILED_DOCUMENTS
    return EXIT_DONE
