"""The run summary, typed: OUT/run-summary[.shard].json, OUT/runs/<run id>.json and the
ledger's `runs.summary` are its `to_json()`; the CLI, the exit code, preflight, the report,
run history and Ray read its attributes.

The JSON is a contract (users' scripts read it): `to_json()` gives the same keys and values
as the dict it replaces, and `from_json(to_json())` gives the summary back. Summaries that
older versions stored in a ledger may lack keys: readers of those use `ThisRun.from_json`,
which is lenient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .engine_slots import EnginesPerGpu


@dataclass(frozen=True)
class ShardId:
    index: int
    count: int


@dataclass(frozen=True)
class ThisRun:
    """What this run did (telemetry.RunStats), as opposed to the corpus as it stands."""

    wall_seconds: float = 0.0
    engine_start_seconds: float | None = None
    pages_per_second_after_engine_start: float | None = None
    engine: str | None = None
    pages_processed: int = 0
    pages_by_status: dict[str, int] = field(default_factory=dict)
    documents_finished: dict[str, int] = field(default_factory=dict)
    pages_per_second: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    output_tokens_per_second: float = 0.0
    seconds_per_page_by_stage: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ThisRun:
        """Lenient: a summary of an older version lacks some keys (their defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LastRun:
    """The latest run that processed pages (a no-op re-run does not hide its numbers)."""

    run_id: str
    run: ThisRun

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, **self.run.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LastRun:
        return cls(str(data["run_id"]), ThisRun.from_json(data))


@dataclass(frozen=True)
class SlotSummary:
    """One engine slot of the node: its device, its pages, how it ended."""

    slot: int
    device: str
    pages: int
    pages_per_second: float
    output_tokens: int
    restarts: int
    gave_up: bool
    engine_ready: bool
    start_error: str | None
    last_error: str | None
    # Its engine was still starting (or waiting to) when every page was done: it was stopped,
    # which is why it may have no page (absent from summaries written before 2026-12-03).
    stopped_while_starting: bool = False


@dataclass(frozen=True)
class FailedDocument:
    doc_id: str
    source: str
    reason: str | None


@dataclass(frozen=True)
class AttentionPage:
    """A finished page a person should look at (failed, truncated, needs OCR)."""

    source: str
    page: int
    status: str
    reason: str


@dataclass(frozen=True)
class GpuMeans:
    """NVML means of one GPU over the run (gpu_telemetry.gpu_means)."""

    samples: int
    util_mean_percent: float | None
    memory_mean_mib: float | None
    memory_peak_mib: float | None
    memory_total_mib: float | None
    power_mean_w: float | None
    temperature_mean_c: float | None


@dataclass(frozen=True)
class RunSummary:
    """A run's summary; field order is the JSON's key order."""

    ocrfleet_version: str
    run_id: str
    output_dir: str
    shard: ShardId
    engine: str
    ocr_engine: str | None
    model: str | None
    documents: dict[str, int]
    pages: dict[str, int]
    this_run: ThisRun
    synced_to: str | None
    workers: list[SlotSummary]
    failed_documents: list[FailedDocument]
    missing_inputs: list[str]
    routes: dict[str, int]
    quality_flags: dict[str, int]
    attention: list[AttentionPage]
    attention_total: int
    engines_per_gpu: EnginesPerGpu
    gpus: dict[str, GpuMeans]
    pdfs_found: int
    last_run_with_pages: LastRun | None
    inputs: dict[str, int]
    exit_code: int

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        last = self.last_run_with_pages
        out["last_run_with_pages"] = last.to_json() if last is not None else None
        return out

    # Read as the JSON it is written as (`summary["pages"]`), as the library's summary was a
    # dict before it was typed: code written against that keeps working.
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSummary:
        last = data["last_run_with_pages"]
        return cls(
            ocrfleet_version=data["ocrfleet_version"],
            run_id=data["run_id"],
            output_dir=data["output_dir"],
            shard=ShardId(**data["shard"]),
            engine=data["engine"],
            ocr_engine=data["ocr_engine"],
            model=data["model"],
            documents=dict(data["documents"]),
            pages=dict(data["pages"]),
            this_run=ThisRun.from_json(data["this_run"]),
            synced_to=data["synced_to"],
            workers=[SlotSummary(**w) for w in data["workers"]],
            failed_documents=[FailedDocument(**d) for d in data["failed_documents"]],
            missing_inputs=list(data["missing_inputs"]),
            routes=dict(data["routes"]),
            quality_flags=dict(data["quality_flags"]),
            attention=[AttentionPage(**a) for a in data["attention"]],
            attention_total=int(data["attention_total"]),
            engines_per_gpu=EnginesPerGpu(**data["engines_per_gpu"]),
            gpus={k: GpuMeans(**v) for k, v in data["gpus"].items()},
            pdfs_found=int(data["pdfs_found"]),
            last_run_with_pages=LastRun.from_json(last) if last is not None else None,
            inputs=dict(data["inputs"]),
            exit_code=int(data["exit_code"]),
        )
