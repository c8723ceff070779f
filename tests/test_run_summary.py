"""The run summary is a type (run_summary.RunSummary) whose JSON is the file users read."""

from __future__ import annotations

import json
from pathlib import Path

from ocrfleet.config import EngineConfig, RunConfig
from ocrfleet.layout import OutputLayout
from ocrfleet.run_summary import RunSummary, ThisRun
from ocrfleet.runner import run
from ocrfleet.writers import write_json
from tests.conftest import Corpus

KEYS = [
    "attention",
    "attention_total",
    "documents",
    "engine",
    "engines_per_gpu",
    "exit_code",
    "failed_documents",
    "gpus",
    "inputs",
    "last_run_with_pages",
    "missing_inputs",
    "model",
    "ocr_engine",
    "ocrfleet_version",
    "output_dir",
    "pages",
    "pdfs_found",
    "quality_flags",
    "routes",
    "run_id",
    "shard",
    "synced_to",
    "this_run",
    "workers",
]


def test_the_written_summary_is_the_types_json_byte_for_byte(
    greek_corpus: Corpus, tmp_path: Path
) -> None:
    (greek_corpus.root / "broken.pdf").write_bytes(b"%PDF-1.4 not really")  # a failed document
    out = tmp_path / "out"
    config = RunConfig(
        inputs=(str(greek_corpus.root), str(tmp_path / "missing.pdf")),
        output_dir=out,
        engine=EngineConfig(name="text"),
        progress=False,
    )
    first = run(config)
    again = run(config)  # a no-op re-run: its last run with pages is the first
    layout = OutputLayout(out)
    written = layout.summary().read_text("utf-8")
    data = json.loads(written)
    assert sorted(data) == KEYS
    summary = RunSummary.from_json(data)
    assert summary == again.summary  # what the API returns is what the file says
    assert summary.exit_code == again.exit_code == 1  # a failed document, a missing input
    assert summary.failed_documents[0].source.endswith("broken.pdf")
    assert summary.missing_inputs and first.summary.workers and not summary.workers
    assert summary.last_run_with_pages is not None
    assert summary.last_run_with_pages.run_id == first.summary.run_id
    assert summary.last_run_with_pages.run.pages_processed == sum(greek_corpus.pages.values())
    # The type gives the same bytes back: nothing is lost or reordered on the way.
    write_json(tmp_path / "again.json", summary.to_json())
    assert (tmp_path / "again.json").read_text("utf-8") == written
    history = layout.history(first.summary.run_id)
    assert RunSummary.from_json(json.loads(history.read_text("utf-8"))) == first.summary


def test_a_summary_of_an_older_version_reads_with_defaults() -> None:
    old = ThisRun.from_json({"pages_processed": 4, "wall_seconds": 2.0, "gone_key": 1})
    assert (old.pages_processed, old.wall_seconds, old.pages_per_second) == (4, 2.0, 0.0)
    assert ThisRun.from_json(None) == ThisRun()
