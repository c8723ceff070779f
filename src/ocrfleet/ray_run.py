"""Many nodes on Ray: one Ray task per shard, retried elsewhere when its node is lost.

Ray does placement, retries and the cluster's lifecycle; ocrfleet keeps the rest. Each shard
task asks for one node's worth of resources and runs the normal node-level run
(`runner.run` with `num_shards`/`shard_index`) in a work directory on its node's local disk.
With an s3:// output the shard's outputs and ledger checkpoints go to the bucket (the
existing OutputSync), so a task that Ray retries on another node restores the checkpoint and
resumes: pages in it are never redone, and outputs are whole files under fixed keys, so a
document finished twice is written over itself, never doubled. With a local (shared
filesystem) output each shard writes straight into it, as `--num-shards` always has.

Progress: each shard task reports its ledger's counts to a small actor pinned to the driver's
node; the driver prints one line for the job (see shard_view) and merges the summaries.

Ray is an optional extra, imported only here and only when `--ray` is given.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .config import EngineConfig, RunConfig
from .engines import engine_kind
from .errors import ConfigError
from .layout import JOB_FILE, SUMMARY_NAME, OutputLayout, ledger_path
from .shard_view import (
    JobRate,
    ShardReport,
    format_progress,
    merge_summaries,
    merged_exit_code,
    write_output_json,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'ocrfleet[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """How the shards of a run are placed on a Ray cluster."""

    address: str = "auto"  # "auto", "local" (a throwaway local cluster), or host:port / ray://
    num_shards: int = 1
    # One node's worth: default the largest count of `resource` any node has.
    gpus_per_shard: float | None = None
    max_shard_retries: int = 3
    # "GPU" on real clusters; a custom resource stands in for GPUs on CPU-only test clusters.
    resource: str = "GPU"
    cpus_per_shard: float = 1.0
    # Node-local base of the shards' work dirs (default ~/.cache/ocrfleet/ray on each node).
    work_root: Path | None = None
    progress_interval: float = 10.0

    def __post_init__(self) -> None:
        if self.num_shards < 1:
            raise ConfigError("--num-shards must be at least 1")
        if self.max_shard_retries < 0:
            raise ConfigError("--max-shard-retries must be 0 or more")
        if self.gpus_per_shard is not None and self.gpus_per_shard < 0:
            raise ConfigError("--gpus-per-shard must be 0 or more")


@dataclass(frozen=True)
class RayRunResult:
    exit_code: int
    summary: dict[str, Any]


def require_ray() -> None:
    """Fail before anything starts when Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}")


def output_uri(config: RunConfig) -> str:
    """Where the job's outputs end up: the s3:// URI, or the (shared) local directory."""
    return config.sync.sync_to or str(config.output_dir)


def shard_work_dir(
    work_root: Path, output: str, node_id: str, num_shards: int, shard_index: int
) -> Path:
    """Node-local work dir of a shard of the job writing to `output`: a retry on another node
    starts from an empty one (and restores the checkpoint); two jobs never share one."""
    job = hashlib.sha256(output.encode()).hexdigest()[:12]
    return work_root / f"node-{node_id[:16]}" / job / f"shard-{shard_index}-of-{num_shards}"


def _ledger_counts(path: Path) -> tuple[int, int] | None:
    """(finished pages, pages) of a ledger being written by the run, read-only."""
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT status, COUNT(*) FROM pages GROUP BY status").fetchall()
        finally:
            db.close()
    except sqlite3.Error:  # created this instant, or mid-restore: the next poll reads it
        return None
    total = sum(int(n) for _, n in rows)
    pending = sum(int(n) for status, n in rows if status == "pending")
    return total - pending, total


class _Reporter:
    """Sends a shard's counts to the driver's board every second, from a thread."""

    def __init__(self, board: Any, report: ShardReport, db_path: Path) -> None:
        self.board, self.report, self.db_path = board, report, db_path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ocrfleet-report", daemon=True)

    def send(self, state: str) -> None:
        counts = _ledger_counts(self.db_path)
        if counts is not None:
            self.report = replace(self.report, done=counts[0], total=counts[1])
        self.report = replace(self.report, state=state, at=time.time())
        try:
            self.board.report.remote(self.report)
        except Exception as exc:  # progress is a view; the shard's work must not stop for it
            log.debug("progress report failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.send("running")

    def __enter__(self) -> _Reporter:
        self.send("running")
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_shard(config: RunConfig, work_root: Path, board: Any) -> dict[str, Any]:
    """Body of one shard task, on whichever node Ray placed it."""
    import ray

    from .runner import run

    node_id = ray.get_runtime_context().get_node_id()
    work_dir = shard_work_dir(
        work_root, output_uri(config), node_id, config.fleet.num_shards, config.fleet.shard_index
    )
    if config.sync.sync_to is not None:
        # Inputs staged once per node, shared by the shards that land there, at the same
        # path on every node: the ledger records where each PDF was staged, and a shard
        # resumed on another node re-stages them there.
        stage = config.sync.stage_dir or work_root / "inputs"
        config = replace(config, output_dir=work_dir, sync=replace(config.sync, stage_dir=stage))
    gpus: tuple[int, ...] = ()
    if may_use_gpu(config.engine):  # the shard's own GPUs, as Ray assigned them
        gpus = tuple(int(g) for g in ray.get_gpu_ids())
    fleet = replace(config.fleet, gpus=gpus or config.fleet.gpus)
    config = replace(config, fleet=fleet, progress=False)
    handler = _shard_log(config)
    db_path = ledger_path(config.output_dir, config.fleet.num_shards, config.fleet.shard_index)
    report = ShardReport(config.fleet.shard_index, node_id, "starting", 0, 0, time.time())
    log.info("shard %d of %d on node %s, in %s", config.fleet.shard_index, config.fleet.num_shards,
             node_id[:12], config.output_dir)  # fmt: skip
    try:
        with _Reporter(board, report, db_path) as reporter:
            result = run(config)
            reporter.send("finished" if result.exit_code == 0 else f"exit {result.exit_code}")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return {"node": node_id, "exit_code": result.exit_code, "summary": result.summary}


def _shard_log(config: RunConfig) -> logging.Handler:
    """The shard's own log file (uploaded with its outputs), next to the driver's console."""
    layout = OutputLayout(config.output_dir)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    path = layout.shard_log(config.fleet.num_shards, config.fleet.shard_index)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(config.log_level)
    return handler


class ShardBoard:
    """The driver's view of the shards (a Ray actor): the latest report of each, and every
    node a shard has run on (a retry after a lost node shows up as a second node)."""

    def __init__(self) -> None:
        self.reports: dict[int, ShardReport] = {}
        self.nodes: dict[int, list[str]] = {}

    def report(self, report: ShardReport) -> None:
        self.reports[report.shard] = report
        seen = self.nodes.setdefault(report.shard, [])
        if not seen or seen[-1] != report.node:
            seen.append(report.node)

    def snapshot(self) -> tuple[dict[int, ShardReport], dict[int, list[str]]]:
        return dict(self.reports), {k: list(v) for k, v in self.nodes.items()}


def may_use_gpu(engine: EngineConfig) -> bool:
    """vLLM, or auto whose OCR engine is vLLM or still to be decided on the shard's node."""
    return engine_kind(engine).gpu_use(engine) in ("planned", "undecided")


def _connect(address: str) -> bool:
    """Join (or start) the cluster; True when this call started the connection."""
    import ray

    if ray.is_initialized():
        return False
    # Under `uv run`, Ray would rebuild the uv environment in every worker: the nodes
    # already have ocrfleet installed (the bootstrap script), so use what is there.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, log_to_driver=True)
    except ConnectionError as exc:  # no cluster at that address (or none running: auto)
        raise ConfigError(
            f"--ray {address}: no Ray cluster to join ({exc}); start one (`ray start --head`, "
            "`ray up deploy/ray/aws-cluster.yaml`) or use --ray local"
        ) from None
    return True


def _nodes() -> list[dict[str, Any]]:
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return nodes


def shard_size(options: RayOptions, needs_gpu: bool, nodes: list[dict[str, Any]]) -> float:
    """`--gpus-per-shard`, or the largest count of the resource one live node has."""
    if options.gpus_per_shard is not None:
        return options.gpus_per_shard
    largest = max(
        (float(n["Resources"].get(options.resource, 0)) for n in nodes if n["Alive"]),
        default=0.0,
    )
    if largest == 0 and (options.resource != "GPU" or needs_gpu):
        # An autoscaling cluster may have no GPU node up yet: asking for one starts it.
        raise ConfigError(
            f"no node of the Ray cluster has a {options.resource} yet: give "
            f"--gpus-per-shard (e.g. 4 for g6.12xlarge workers) and the autoscaler starts them"
        )
    return largest


def run_on_ray(config: RunConfig, options: RayOptions) -> RayRunResult:
    """Run every shard of the corpus as a Ray task; returns the merged summary."""
    require_ray()
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    out = output_uri(config)
    started_here = _connect(options.address)
    try:
        size = shard_size(options, may_use_gpu(config.engine), _nodes())
        resources: dict[str, Any] = {"num_cpus": options.cpus_per_shard}
        if options.resource == "GPU":
            resources["num_gpus"] = size
        elif size:
            resources["resources"] = {options.resource: size}
        work_root = options.work_root or Path.home() / ".cache" / "ocrfleet" / "ray"
        here = ray.get_runtime_context().get_node_id()
        board: Any = (
            ray.remote(num_cpus=0)(ShardBoard)
            .options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
            .remote()
        )
        task = ray.remote(max_retries=options.max_shard_retries, retry_exceptions=False)(
            run_shard
        ).options(**resources)
        write_output_json(
            out,
            JOB_FILE,
            {"num_shards": options.num_shards, "started_at": time.time(), "resources": resources},
        )
        log.info(
            "%d shard(s) on Ray, each asking for %s; outputs to %s",
            options.num_shards,
            json.dumps(resources),
            out,
        )
        refs = {
            task.remote(_shard_config(config, options.num_shards, i), work_root, board): i
            for i in range(options.num_shards)
        }
        results = _wait(refs, board, options)
        _, nodes = ray.get(board.snapshot.remote())
    finally:
        if started_here:
            ray.shutdown()
    summary = merge_summaries(results, nodes, options.num_shards, out)
    code = merged_exit_code(summary)
    summary["exit_code"] = code
    if options.num_shards > 1:  # one shard writes run-summary.json itself
        write_output_json(out, SUMMARY_NAME, summary)
    return RayRunResult(code, summary)


def _wait(refs: dict[Any, int], board: Any, options: RayOptions) -> dict[int, dict[str, Any]]:
    """Collect each shard's result as it ends, printing the job's progress meanwhile."""
    import ray

    results: dict[int, dict[str, Any]] = {}
    pending = list(refs)
    rate = JobRate()
    last_line = 0.0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for ref in ready:
            shard = refs[ref]
            try:
                results[shard] = ray.get(ref)
            except ray.exceptions.RayError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                log.error("shard %d ended without a result (run the same command to resume "
                          "it): %s", shard, first)  # fmt: skip
                results[shard] = {"node": None, "exit_code": None, "error": first}
        # Every tick feeds the rates; a line is printed every progress_interval.
        reports, _ = ray.get(board.snapshot.remote())
        for shard, got in results.items():  # its last report may still be on the way
            if shard in reports:
                code = got.get("exit_code")
                state = "finished" if code == 0 else f"exit {code}"
                reports[shard] = replace(reports[shard], state=state)
        line = format_progress(reports, rate, options.num_shards, time.time())
        if time.monotonic() - last_line >= options.progress_interval or not pending:
            log.info("%s", line)
            last_line = time.monotonic()
    return results


def _shard_config(config: RunConfig, num_shards: int, index: int) -> RunConfig:
    return replace(config, fleet=replace(config.fleet, num_shards=num_shards, shard_index=index))
