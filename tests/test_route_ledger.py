"""The ledger side of routing: old ledgers gain the needs_ocr status, requeues, reports."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument, PageOutcome
from ocrfleet.ocr_queue import forced_route, requeue_for_ocr, route_report

OLD_PAGES = """
CREATE TABLE pages (
    doc_id TEXT NOT NULL, page INTEGER NOT NULL, doc_seq INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'done', 'blank', 'truncated', 'failed')),
    claimed_by TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0, error TEXT, updated_at REAL, UNIQUE (doc_id, page)
)"""


def test_a_ledger_made_before_needs_ocr_accepts_it(tmp_path: Path) -> None:
    path = tmp_path / "ocrfleet.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(OLD_PAGES)
        db.execute("INSERT INTO pages (doc_id, page, doc_seq, status) VALUES ('d', 1, 0, 'done')")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE pages SET status='needs_ocr'")
    ledger = Ledger(path)
    ledger.close()
    ledger = Ledger(path)  # idempotent: a second open changes nothing
    ledger.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE pages SET status='needs_ocr'")
        assert db.execute("SELECT status FROM pages").fetchall() == [("needs_ocr",)]
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE pages SET status='nonsense'")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _finish(ledger: Ledger, page: int, status: str, flags: list[str]) -> None:
    record = {"route": "ocr" if status == "needs_ocr" else "text", "quality_flags": flags}
    ledger.finish_page("w", PageOutcome("d", page, status, "", None, record, 1))


def test_requeue_for_ocr_takes_needs_ocr_and_flagged_pages_only(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.add_documents([NewDocument("d", "d.pdf", "/d.pdf", "d", 1, 5)])
    ledger.claim("w", 5, 60, suspect=False)
    _finish(ledger, 1, "done", [])
    _finish(ledger, 2, "needs_ocr", ["empty_output"])
    _finish(ledger, 3, "done", ["low_text"])
    _finish(ledger, 4, "done", ["mixed_script"])
    blank = {"status": "blank", "quality_flags": ["blank"]}
    ledger.finish_page("w", PageOutcome("d", 5, "blank", "", None, blank, 0))
    ledger.finish_document("d", "done", None)
    report = route_report(ledger)
    assert report["routes"] == {"blank": 1, "ocr": 1, "text": 3}
    assert report["quality_flags"] == {
        "blank": 1,
        "empty_output": 1,
        "low_text": 1,
        "mixed_script": 1,
    }
    assert [a["page"] for a in report["attention"]] == [2]
    assert requeue_for_ocr(ledger, ("low_text",)) == (1, 1)
    assert ledger.counts().pages["pending"] == 2 and ledger.documents()[0].status == "pending"
    assert forced_route(ledger, "d", 3) == "redo_flag" and forced_route(ledger, "d", 2) is None
    claimed = sorted(c.page for c in ledger.claim("w", 10, 60, suspect=False))
    assert claimed == [2, 3]
    assert json.dumps(requeue_for_ocr(ledger)) == "[0, 0]"
    ledger.close()
