"""The run summary, built once at the end of a run (run_summary.RunSummary), with the exit
status it implies.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .config import RunConfig
from .engine_slots import EnginesPerGpu
from .engines import engine_kind
from .ledger import Ledger
from .ocr_queue import route_report
from .plan import Plan
from .redact import redact_obj
from .run_history import last_run_with_pages
from .run_summary import (
    AttentionPage,
    FailedDocument,
    GpuMeans,
    RunSummary,
    ShardId,
    SlotSummary,
    ThisRun,
)

EXIT_DONE = 0
EXIT_FAILED_DOCUMENTS = 1
EXIT_INCOMPLETE = 3
EXIT_KILLED = 130


def build_summary(
    config: RunConfig,
    ledger: Ledger,
    this_run: ThisRun,
    slots: list[SlotSummary],
    plan: Plan,
    run_id: str,
    engines_per_gpu: EnginesPerGpu,
    gpus: dict[str, dict[str, Any]],
    inputs: dict[str, int],
    killed: bool,
) -> RunSummary:
    """The run summary, built once; secrets redacted (it is uploaded with checkpoints)."""
    counts = ledger.counts()
    kind = engine_kind(config.engine)
    routes = route_report(ledger)
    documents = {k: v for k, v in counts.documents.items() if k != "assembling"}
    failed = [FailedDocument(**d) for d in ledger.failed_documents()]
    code = _exit_code(counts.pages, documents, plan, killed)
    summary = RunSummary(
        ocrfleet_version=__version__,
        run_id=run_id,
        output_dir=str(config.output_dir),
        shard=ShardId(config.fleet.shard_index, config.fleet.num_shards),
        engine=config.engine.name,
        ocr_engine=kind.ocr_engine(config.engine),
        model=config.engine.model if kind.uses_model(config.engine) else None,
        documents=documents,
        pages=counts.pages,
        this_run=this_run,
        synced_to=config.sync.sync_to,
        workers=slots,
        failed_documents=failed,
        missing_inputs=plan.missing_inputs,
        routes=routes["routes"],
        quality_flags=routes["quality_flags"],
        attention=[AttentionPage(**a) for a in routes["attention"]],
        attention_total=routes["attention_total"],
        engines_per_gpu=engines_per_gpu,
        gpus={k: GpuMeans(**v) for k, v in gpus.items()},
        pdfs_found=plan.corpus_documents,
        last_run_with_pages=last_run_with_pages(ledger, run_id, this_run),
        inputs=inputs,
        exit_code=code,
    )
    return RunSummary.from_json(redact_obj(summary.to_json()))


def _exit_code(pages: dict[str, int], documents: dict[str, int], plan: Plan, killed: bool) -> int:
    if killed:
        return EXIT_KILLED
    if pages["pending"]:
        return EXIT_INCOMPLETE
    no_pdfs = plan.corpus_documents == 0  # an empty input directory: say so, exit 1
    if documents.get("failed") or plan.missing_inputs or no_pdfs:
        return EXIT_FAILED_DOCUMENTS
    return EXIT_DONE
