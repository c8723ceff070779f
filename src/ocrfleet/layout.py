"""Every path under the output directory (OUT), in one place.

No other module spells a file name under OUT: they ask `OutputLayout` (or, for a remote
OUT that is only a URI, the name functions below). tests/test_layout.py fails when a
literal of one of these names appears elsewhere.

    OUT/ocrfleet[.shard-i-of-n].sqlite      the ledger (one a shard), with -wal/-shm
    OUT/markdown/<rel>.md                   a document, with explicit page markers
    OUT/markdown/<rel>_figures/pNNNN_K.jpg  figures cropped from its pages
    OUT/pages/<rel>.jsonl                   one JSON record per page, in page order
    OUT/run-summary[.shard-i-of-n].json     the corpus as it stands + the last run
    OUT/runs/<run id>[.shard-i-of-n].json   every run's summary, never overwritten
    OUT/manifest[.shard-i-of-n].jsonl       every input path with its status and output
    OUT/report.html                         the run report
    OUT/logs/run.log                        the driver's log
    OUT/logs/worker-N.log, worker-N.out     a GPU worker's log and its stdout/stderr
    OUT/logs/shard-i-of-n.log               a Ray shard's log
    OUT/ray-job.json                        a Ray job's shard count and resources
    OUT/.ocrfleet-layout.json (+ .lock)     the shard count OUT is split into
    OUT/.ocrfleet[.shard-i-of-n].lock       one run at a time per ledger
    OUT/.ocrfleet-upload.json               what --sync-to has uploaded
    OUT/.ocrfleet-inputs/                   s3:// inputs staged (without --stage-dir)
    <remote>/ledger/<ledger name>           ledger checkpoints of an s3:// OUT
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

LEDGER_SUFFIX = ".sqlite"
LEDGER_GLOB = "ocrfleet*.sqlite"
# Any ledger name, unsharded or a shard's: group 1 the shard index, group 2 the count.
LEDGER_NAME = re.compile(r"^ocrfleet(?:\.shard-(\d+)-of-(\d+))?\.sqlite$")
SHARD_LEDGER_NAME = re.compile(r"^ocrfleet\.shard-(\d+)-of-(\d+)\.sqlite$")
UNSHARDED_LEDGER = "ocrfleet.sqlite"
SUMMARY_NAME = "run-summary.json"
REPORT_NAME = "report.html"
# Written by the Ray driver before any shard starts: how many shards the job has, so that
# status can show the ones that have not started.
JOB_FILE = "ray-job.json"
UPLOAD_MANIFEST = ".ocrfleet-upload.json"
REMOTE_LEDGER_DIR = "ledger"  # under an s3:// OUT: the ledger checkpoints
CHECKPOINT_PREFIX = ".ocrfleet-checkpoint-"
CHECKPOINT_SUFFIX = ".sqlite.tmp"
RETIRED_DIR = "retired"  # outputs no input holds any more (stale_outputs.py)
# A figure link in a document's Markdown: ![alt](<anything>_figures/p0001_2.jpg); the target
# is percent-encoded, so it has no ( ) or space. Group 3: the figure's file name.
FIGURE_LINK = re.compile(r"(!\[[^\]]*\]\()([^()\s]*_figures/(p\d{4}_\d+\.jpg))\)")


def figures_folder_name(name: str) -> str:
    """The folder of the figures of the document named `name`, beside its Markdown."""
    return f"{name}_figures"


def figure_file_name(page: int, index: int) -> str:
    return f"p{page:04d}_{index}.jpg"


def figures_link_prefix(name: str) -> str:
    """The relative link prefix of the figures of the document named `name` (its own folder)."""
    return quote(f"{figures_folder_name(name)}/")


def shard_suffix(num_shards: int, shard_index: int) -> str:
    return "" if num_shards == 1 else f".shard-{shard_index}-of-{num_shards}"


def ledger_name(num_shards: int, shard_index: int) -> str:
    return f"ocrfleet{shard_suffix(num_shards, shard_index)}.sqlite"


def ledger_path(output_dir: Path, num_shards: int, shard_index: int) -> Path:
    return output_dir / ledger_name(num_shards, shard_index)


def shard_ledger_glob(num_shards: int) -> str:
    """The ledgers of every shard of a run split into `num_shards`."""
    return f"ocrfleet.shard-*-of-{num_shards}.sqlite"


def is_ledger_file(name: str) -> bool:
    """A ledger or one of its companions (-wal, -shm, a copy moved aside): never an output."""
    return ".sqlite" in name and name.startswith("ocrfleet")


def summary_name(suffix: str = "") -> str:
    return f"run-summary{suffix}.json"


@dataclass(frozen=True)
class OutputLayout:
    """Where each file under OUT goes; a document's outputs mirror its place in the input
    tree (`rel`)."""

    root: Path

    # -- a document's outputs

    @property
    def markdown_dir(self) -> Path:
        return self.root / "markdown"

    @property
    def pages_dir(self) -> Path:
        return self.root / "pages"

    def markdown(self, rel: str) -> Path:
        return self.markdown_dir / f"{rel}.md"

    def pages(self, rel: str) -> Path:
        return self.pages_dir / f"{rel}.jsonl"

    def figures_dir(self, rel: str) -> Path:
        return self.markdown_dir / figures_folder_name(rel)

    def figure(self, rel: str, page: int, index: int) -> Path:
        return self.figures_dir(rel) / figure_file_name(page, index)

    def figure_link(self, rel: str, page: int, index: int) -> str:
        """Link from the document's Markdown to a figure: relative, percent-encoded."""
        name = PurePosixPath(rel).name
        return figures_link_prefix(name) + quote(figure_file_name(page, index))

    # -- the run's own files

    def ledger(self, num_shards: int, shard_index: int) -> Path:
        return ledger_path(self.root, num_shards, shard_index)

    def ledgers(self) -> list[Path]:
        """Every ledger in OUT (of any sharding), sorted."""
        return sorted(self.root.glob(LEDGER_GLOB))

    def summary(self, shard_suffix: str = "") -> Path:
        return self.root / summary_name(shard_suffix)

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def history(self, run_id: str, shard_suffix: str = "") -> Path:
        """OUT/runs/<run id><shard>.json: one file a run, never overwritten."""
        return self.runs_dir / f"{run_id}{shard_suffix}.json"

    def manifest(self, shard_suffix: str = "") -> Path:
        return self.root / f"manifest{shard_suffix}.jsonl"

    @property
    def report(self) -> Path:
        return self.root / REPORT_NAME

    @property
    def job_file(self) -> Path:
        return self.root / JOB_FILE

    @property
    def layout_marker(self) -> Path:
        return self.root / ".ocrfleet-layout.json"

    @property
    def layout_lock(self) -> Path:
        return self.root / ".ocrfleet-layout.lock"

    def run_lock(self, shard_suffix: str = "") -> Path:
        """Held by the one run at a time that works this ledger; it holds the run's pid."""
        return self.root / f".ocrfleet{shard_suffix}.lock"

    @property
    def staging_dir(self) -> Path:
        """Where s3:// inputs are staged unless --stage-dir says otherwise."""
        return self.root / ".ocrfleet-inputs"

    @property
    def upload_manifest(self) -> Path:
        return self.root / UPLOAD_MANIFEST

    # -- logs

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_log(self) -> Path:
        return self.logs_dir / "run.log"

    def worker_log(self, slot: int) -> Path:
        """A worker's own log lines and tracebacks."""
        return self.logs_dir / f"worker-{slot}.log"

    def worker_out(self, slot: int) -> Path:
        """Whatever else a worker writes to stdout/stderr (vLLM), redacted."""
        return self.logs_dir / f"worker-{slot}.out"

    def shard_log(self, num_shards: int, shard_index: int) -> Path:
        return self.logs_dir / f"shard-{shard_index}-of-{num_shards}.log"
