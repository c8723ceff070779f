"""One view of a job split into shards: the driver's progress line, the merged summary, and
the per-shard states of `ocrfleet status` (shards not started yet included).

Pure functions over plain data (no Ray here), so the view is tested without a cluster.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .layout import (
    JOB_FILE,
    LEDGER_SUFFIX,
    REMOTE_LEDGER_DIR,
    SHARD_LEDGER_NAME,
    UNSHARDED_LEDGER,
)
from .run_summary import RunSummary
from .s3_client import make_filesystem
from .storage import is_remote, split_uri
from .writers import write_json


@dataclass(frozen=True)
class ShardReport:
    """What a shard task last said about itself."""

    shard: int
    node: str
    state: str  # starting, running, finished, exit N
    done: int  # finished pages in its ledger (earlier attempts included)
    total: int
    at: float


@dataclass
class JobRate:
    """Pages/s of the job, counted from when the driver first saw each shard on its node, so
    pages restored from a checkpoint do not count as speed."""

    started: float = field(default_factory=time.time)
    base: dict[tuple[int, str], tuple[float, int]] = field(default_factory=dict)

    def rates(self, reports: Mapping[int, ShardReport], now: float) -> dict[str, float]:
        """pages/s per node (short node ids)."""
        per_node: dict[str, float] = {}
        for r in reports.values():
            key = (r.shard, r.node)
            t0, d0 = self.base.setdefault(key, (now, r.done))
            rate = (r.done - d0) / (now - t0) if now > t0 else 0.0
            node = r.node[:8]
            per_node[node] = per_node.get(node, 0.0) + rate
        return per_node


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d}"


def format_progress(
    reports: Mapping[int, ShardReport], rate: JobRate, num_shards: int, now: float
) -> str:
    """`pages 120/400 (30.0%) | 5.20 pages/s | ETA 54 s | shards 1 finished, 1 running,
    0 not started | node 1a2b3c4d 3.10/s, node 5e6f7a8b 2.10/s`."""
    done = sum(r.done for r in reports.values())
    total = sum(r.total for r in reports.values())
    per_node = rate.rates(reports, now)
    speed = sum(per_node.values())
    # "exit N": ended with failed documents or pages left; it runs no more either way.
    finished = sum(1 for r in reports.values() if r.state == "finished" or r.state[:4] == "exit")
    running = len(reports) - finished
    eta = _duration((total - done) / speed) if speed > 0 else "?"
    share = f"{done / total * 100:.1f}%" if total else "-"
    nodes = ", ".join(f"node {n} {v:.2f}/s" for n, v in sorted(per_node.items()))
    return (
        f"pages {done}/{total} ({share}) | {speed:.2f} pages/s | ETA {eta} | shards "
        f"{finished} finished, {running} running, {num_shards - len(reports)} not started"
        + (f" | {nodes}" if nodes else "")
    )


def merge_summaries(
    results: Mapping[int, Mapping[str, Any]],
    nodes: Mapping[int, list[str]],
    num_shards: int,
    output: str,
) -> dict[str, Any]:
    """One summary for the job from each shard's (counts add up, lists concatenate)."""
    documents: dict[str, int] = {}
    pages: dict[str, int] = {}
    this_run: dict[str, float] = {"pages_processed": 0, "output_tokens": 0, "prompt_tokens": 0}
    failed: list[Any] = []
    missing: set[str] = set()
    shards: list[dict[str, Any]] = []
    wall = 0.0
    for index in range(num_shards):
        result = results.get(index, {"error": "no result"})
        summary: RunSummary | None = result.get("summary")
        if summary is not None:
            for key, value in summary.documents.items():
                documents[key] = documents.get(key, 0) + int(value)
            for key, value in summary.pages.items():
                pages[key] = pages.get(key, 0) + int(value)
            run = summary.this_run
            this_run["pages_processed"] += run.pages_processed
            this_run["output_tokens"] += run.output_tokens
            this_run["prompt_tokens"] += run.prompt_tokens
            wall = max(wall, run.wall_seconds)
            failed += [asdict(d) for d in summary.failed_documents]
            missing.update(summary.missing_inputs)
        shards.append(
            {
                "shard": index,
                "exit_code": result.get("exit_code"),
                "error": result.get("error"),
                "nodes": nodes.get(index, []),
                "pages": summary.pages if summary else None,
                "pages_processed": summary.this_run.pages_processed if summary else 0,
                "wall_seconds": summary.this_run.wall_seconds if summary else None,
            }
        )
    this_run["wall_seconds"] = round(wall, 3)
    this_run["pages_per_second"] = round(this_run["pages_processed"] / wall, 4) if wall else 0.0
    return {
        "output": output,
        "num_shards": num_shards,
        "documents": documents,
        "pages": pages,
        "this_run": this_run,
        "failed_documents": failed,
        "missing_inputs": sorted(missing),
        "shards": shards,
    }


def merged_exit_code(summary: Mapping[str, Any]) -> int:
    """The worst of the shards': a shard that gave up (no result) counts as pages left (3)."""
    codes = [s["exit_code"] for s in summary["shards"]]
    if any(c == 130 for c in codes):
        return 130
    if any(c is None or c == 3 for c in codes) or summary["pages"].get("pending"):
        return 3
    if any(c not in (0, None) for c in codes) or summary["failed_documents"]:
        return 1
    return 1 if summary["missing_inputs"] else 0


def write_output_json(output: str, name: str, data: dict[str, Any]) -> None:
    """A JSON file at the top of OUT, local or s3://."""
    if not is_remote(output):
        write_json(Path(output) / name, data)
        return
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    bucket, key = split_uri(output)
    make_filesystem().pipe(f"{bucket}/{key}/{name}" if key else f"{bucket}/{name}", text.encode())


def _read_output_json(output: str, name: str) -> dict[str, Any] | None:
    try:
        if is_remote(output):
            bucket, key = split_uri(output)
            raw = make_filesystem().cat(f"{bucket}/{key}/{name}" if key else f"{bucket}/{name}")
        else:
            raw = (Path(output) / name).read_bytes()
    except (FileNotFoundError, OSError):
        return None
    data = json.loads(raw)
    return data if isinstance(data, dict) else None


def fetch_remote_ledgers(output: str, into: Path) -> None:
    """Download the ledger checkpoints of an s3:// output into a local directory."""
    fs = make_filesystem()
    bucket, key = split_uri(output)
    prefix = f"{bucket}/{key}/{REMOTE_LEDGER_DIR}" if key else f"{bucket}/{REMOTE_LEDGER_DIR}"
    try:
        names = [n for n in fs.ls(prefix, detail=False) if n.endswith(LEDGER_SUFFIX)]
    except FileNotFoundError:
        names = []
    for name in names:
        fs.get_file(name, str(into / name.rsplit("/", 1)[1]))


def shard_states(status: Mapping[str, Any], num_shards: int | None) -> list[dict[str, Any]]:
    """Each shard's state from the ledgers status found: not started, in progress, finished."""
    seen: dict[int, dict[str, Any]] = {}
    for shard in status["shards"]:
        match = SHARD_LEDGER_NAME.match(shard["ledger"])
        if match is None and shard["ledger"] != UNSHARDED_LEDGER:
            continue
        index = int(match.group(1)) if match else 0  # one shard: the plain ledger name
        num_shards = num_shards or (int(match.group(2)) if match else 1)
        pages = shard["pages"]
        left = pages.get("pending", 0)
        seen[index] = {
            "state": "in progress" if left else "finished",
            "pages": sum(pages.values()),
            "pending": left,
        }
    return [
        {"shard": i, **seen.get(i, {"state": "not started", "pages": None, "pending": None})}
        for i in range(num_shards or 0)
    ]


def job_status(output: str) -> dict[str, Any]:
    """`ocrfleet status` over every shard of OUT (local, or s3:// from the checkpoints)."""
    from .status import collect_status

    job = _read_output_json(output, JOB_FILE)
    num_shards = int(job["num_shards"]) if job else None
    try:
        if is_remote(output):
            with tempfile.TemporaryDirectory(prefix="ocrfleet-status-") as tmp:
                fetch_remote_ledgers(output, Path(tmp))
                status = collect_status(Path(tmp))
            status["output_dir"] = output
        else:
            status = collect_status(Path(output))
    except ConfigError:
        if job is None:
            raise
        status = {"output_dir": output, "documents": {}, "pages": {}, "pages_in_flight": 0,
                  "progress": 0.0, "failed_documents": [], "shards": []}  # fmt: skip
    states = shard_states(status, num_shards)
    if states:
        status["shard_states"] = states
    return status


def format_shard_states(states: list[dict[str, Any]]) -> str:
    lines = []
    for s in states:
        line = f"shard {s['shard']}/{len(states)}: {s['state']}"
        if s["pages"] is not None:
            line += f" ({s['pages'] - s['pending']} of {s['pages']} pages)"
        lines.append(line)
    return "\n".join(lines)
