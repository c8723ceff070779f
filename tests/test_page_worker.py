"""The page lifecycle, driven in-process with a scripted engine (failure injection)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from ocrfleet.config import EngineConfig, RunConfig
from ocrfleet.events import PageFinished, WorkerEvent
from ocrfleet.layout import ledger_path
from ocrfleet.ledger import Ledger
from ocrfleet.page_worker import PageWorker
from ocrfleet.plan import make_plan
from ocrfleet.testing import samples
from tests.fakes import ScriptedEngine


def run_worker(
    tmp_path: Path, pages: list[tuple[str, str]], script: dict[str, list[str]], **options: Any
) -> tuple[dict[int, dict[str, Any]], ScriptedEngine, Path]:
    pdf = samples.mixed_pdf(tmp_path / "in" / "doc.pdf", pages)
    engine_config = EngineConfig(name="tests.fakes:scripted", extra_args={"script": script})
    config = RunConfig(
        inputs=(str(pdf),),
        output_dir=tmp_path / "out",
        engine=engine_config,
        timeout_seconds=options.pop("timeout_seconds", 30.0),
        **options,
    )
    ledger = Ledger(ledger_path(config.output_dir, 1, 0))
    make_plan(config, ledger)
    engine = ScriptedEngine(engine_config)
    events: list[WorkerEvent] = []
    worker = PageWorker(config, ledger, engine, "w", render_workers=1, on_event=events.append)
    asyncio.run(worker.run())
    records = [
        json.loads(line)
        for line in (config.output_dir / "pages" / "doc.jsonl").read_text("utf-8").splitlines()
    ]
    assert sum(1 for e in events if isinstance(e, PageFinished)) == len(pages)
    return {r["page"]: r for r in records}, engine, config.output_dir


TEXT = [("text", samples.paragraph(0))]


def test_no_eos_is_retried_with_the_free_prompt(tmp_path: Path) -> None:
    records, _, out = run_worker(tmp_path, TEXT, {"1": ["loop", "ok"]})
    page = records[1]
    assert page["status"] == "done" and page["finish_reason"] == "stop"
    assert page["prompt"] == "free" and "[free attempt 2]" in page["text"]
    assert page["attempts"] == 2
    with sqlite3.connect(ledger_path(out, 1, 0)) as db:  # every attempt closed, in order
        rows = db.execute(
            "SELECT attempt, prompt, outcome, finish_reason, finished_at IS NOT NULL "
            "FROM attempts ORDER BY id"
        ).fetchall()
    assert rows == [(1, "markdown", "no_eos", "length", 1), (2, "free", "ok", "stop", 1)]


def test_loop_on_every_attempt_is_kept_as_truncated_never_dropped(tmp_path: Path) -> None:
    records, _, out = run_worker(tmp_path, TEXT, {"1": ["loop", "loop"]})
    page = records[1]
    assert page["status"] == "truncated" and page["finish_reason"] == "length"
    assert "no_eos" in page["quality_flags"] and "repetition_loop" in page["quality_flags"]
    assert page["text"]
    markdown = (out / "markdown" / "doc.md").read_text("utf-8")
    assert "page 1 / 1: truncated" in markdown and "same words again" in markdown


def test_timeouts_fire_and_the_next_attempt_runs(tmp_path: Path) -> None:
    records, _, _ = run_worker(tmp_path, TEXT, {"1": ["sleep:30", "ok"]}, timeout_seconds=0.5)
    assert records[1]["status"] == "done"
    assert records[1]["attempt_errors"] == ["timed out after 0.5 s"]


def test_a_page_that_always_times_out_fails_with_the_reason(tmp_path: Path) -> None:
    records, _, out = run_worker(
        tmp_path, TEXT, {"1": ["sleep:30", "sleep:30"]}, timeout_seconds=0.3
    )
    assert records[1]["status"] == "failed"
    assert records[1]["error"] == "timed out after 0.3 s; timed out after 0.3 s"
    ledger = Ledger(ledger_path(out, 1, 0))
    assert ledger.documents()[0].status == "failed"


def test_engine_errors_are_retried_then_recorded(tmp_path: Path) -> None:
    records, _, _ = run_worker(tmp_path, TEXT * 2, {"1": ["error", "error"], "2": ["error", "ok"]})
    assert records[1]["status"] == "failed" and "scripted error on page 1" in records[1]["error"]
    assert records[2]["status"] == "done"


def test_blank_page_skips_the_engine(tmp_path: Path) -> None:
    records, engine, _ = run_worker(tmp_path, [("blank", ""), ("text", "Λέξεις")], {})
    assert records[1]["status"] == "blank" and records[1]["text"] == ""
    assert [key[1] for key in engine.calls] == [2]


def test_clean_mode_crops_figures_and_drops_torn_tags(tmp_path: Path) -> None:
    records, _, out = run_worker(tmp_path, [("image", "Εικόνα")], {"1": ["figure"]})
    page = records[1]
    assert page["figures"] == ["markdown/doc_figures/p0001_1.jpg"]
    assert (out / "markdown" / "doc_figures" / "p0001_1.jpg").stat().st_size > 0
    assert "![](doc_figures/p0001_1.jpg)" in page["text"]
    assert "<|" not in page["text"] and ":=" in page["text"]
    assert page["raw"].startswith("<|ref|>title")  # raw kept alongside


def test_raw_mode_keeps_the_model_output_verbatim(tmp_path: Path) -> None:
    records, _, out = run_worker(tmp_path, [("image", "Εικόνα")], {"1": ["figure"]}, mode="raw")
    assert records[1]["text"].startswith("<|ref|>title<|/ref|>")
    assert not (out / "markdown" / "doc_figures").exists()
