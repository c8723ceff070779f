"""The page record has one builder (page_record.PageRecord); the worker, the ledger and the
writers all go through it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ocrfleet.config import EngineConfig, RunConfig
from ocrfleet.layout import OutputLayout, ledger_path
from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument
from ocrfleet.page_record import OcrFacts, PageRecord, RenderFacts, WorkFacts
from ocrfleet.page_worker import PageWorker
from ocrfleet.plan import make_plan
from ocrfleet.testing import samples
from ocrfleet.writers import document_records
from tests.fakes import ScriptedEngine

WORK = WorkFacts("vllm", 2, 0.5, 0.25, 1.5)
RENDER = RenderFacts(width=800, height=1000, dpi=144, ink_ratio=0.125, scaled_down=False)
TIMING = {"render_seconds": 0.5, "queue_seconds": 0.25, "infer_seconds": 1.5}


def test_each_kind_of_page_has_its_keys() -> None:
    assert PageRecord.blank(WORK, None).to_dict() == {
        "status": "blank",
        "text": "",
        "quality_flags": ["blank"],
        "engine": "vllm",
        "attempts": 2,
        **TIMING,
    }
    assert PageRecord.failed("timeout", WORK, RENDER).to_dict() == {
        "status": "failed",
        "text": "",
        "error": "timeout",
        "quality_flags": [],
        "engine": "vllm",
        "attempts": 2,
        **TIMING,
        "width": 800,
        "height": 1000,
        "dpi": 144,
        "ink_ratio": 0.125,
        "scaled_down": False,
    }
    ocr = OcrFacts("markdown", None, 10, 20, {"chars": 5}, [], {"decode": 0.5})
    done = PageRecord.finished(
        "done",
        "Hello",
        work=WORK,
        render=None,
        route={"route": "ocr", "route_scores": {"chars": 0}},
        ocr=ocr,
        quality_flags=[],
        raw=None,
        attempt_errors=[],
    ).to_dict()
    # A None finish reason is a value (the key stays); no raw and no attempt errors: no keys.
    assert done == {
        "status": "done",
        "text": "Hello",
        "quality_flags": [],
        "engine": "vllm",
        "attempts": 2,
        **TIMING,
        "prompt": "markdown",
        "finish_reason": None,
        "prompt_tokens": 10,
        "output_tokens": 20,
        "quality": {"chars": 5},
        "figures": [],
        "engine_timings": {"decode": 0.5},
        "route": "ocr",
        "route_scores": {"chars": 0},
    }


def test_a_poison_page_is_recorded_by_the_ledger_through_the_builder(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.add_documents([NewDocument("d" * 64, "in/a.pdf", "/abs/a.pdf", "a", 10, 1)])
    ledger.claim("A", 1, 60, suspect=False)
    ledger.start_attempt("A", "d" * 64, 1, 1, None)
    assert ledger.reap_worker("A", max_crashes=1) == [("d" * 64, 1)]
    (stored,) = ledger.stored_pages("d" * 64)
    reason = stored.error or ""
    assert "poison page" in reason
    assert stored.record == PageRecord.poison("d" * 64, 1, reason).to_dict()
    line = json.loads(document_records(ledger.document("d" * 64), [stored]))
    assert line == {
        "doc_id": "d" * 64,
        "source": "in/a.pdf",
        "output": "a.md",
        "page": 1,
        "pages": 1,
        "status": "failed",
        "error": reason,
        "text": "",
    }


def test_the_worker_writes_the_builders_record(tmp_path: Path) -> None:
    pdf = samples.mixed_pdf(tmp_path / "in" / "doc.pdf", [("text", samples.paragraph(0))])
    engine_config = EngineConfig(name="tests.fakes:scripted", extra_args={"script": {"1": ["ok"]}})
    config = RunConfig(inputs=(str(pdf),), output_dir=tmp_path / "out", engine=engine_config)
    ledger = Ledger(ledger_path(config.output_dir, 1, 0))
    make_plan(config, ledger)
    worker = PageWorker(
        config, ledger, ScriptedEngine(engine_config), "w", render_workers=1, on_event=print
    )
    asyncio.run(worker.run())
    (line,) = OutputLayout(config.output_dir).pages("doc").read_text("utf-8").splitlines()
    record = json.loads(line)
    assert record["status"] == "done"
    # Exactly the builder's keys for a rendered, OCR'd page (clean mode: with raw), plus
    # the document-level fields the ledger adds.
    built = PageRecord.finished(
        "done",
        record["text"],
        work=WORK,
        render=RENDER,
        route=None,
        ocr=OcrFacts("markdown", None, 0, 0, {}, [], {}),
        quality_flags=[],
        raw="",
        attempt_errors=[],
    ).to_dict()
    assert set(record) == set(built) | {"doc_id", "source", "output", "page", "pages"}
