"""Which finished pages still need OCR, and putting them back in the queue.

A run without an OCR engine leaves the pages routed to OCR as `needs_ocr`; a later run with one
requeues exactly those, plus (with --redo-flag) finished pages carrying a quality flag, which
are then sent to OCR whatever their text layer says (`route_overrides`). The report feeds the
run summary and `ocrfleet status`: pages by route, by quality flag, and those needing attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .ledger import Ledger

ATTENTION = ("needs_ocr", "failed", "truncated")


def requeue_for_ocr(ledger: Ledger, flags: Sequence[str] = ()) -> tuple[int, int]:
    """Returns (needs_ocr pages, flagged pages) put back in the queue."""
    with ledger.transaction() as db:
        flagged = 0
        if flags:
            marks = ",".join("?" * len(flags))
            rows = db.execute(
                "SELECT p.doc_id, p.page FROM pages p JOIN page_text t ON "
                "t.doc_id=p.doc_id AND t.page=p.page WHERE p.status IN ('done', 'truncated') "
                "AND EXISTS (SELECT 1 FROM json_each(t.record, '$.quality_flags') j "
                f"WHERE j.value IN ({marks}))",
                tuple(flags),
            ).fetchall()
            for doc_id, page in rows:
                db.execute(
                    "INSERT OR REPLACE INTO route_overrides (doc_id, page, reason) "
                    "VALUES (?, ?, 'redo_flag')",
                    (doc_id, page),
                )
                db.execute(
                    "UPDATE pages SET status='pending', error=NULL WHERE doc_id=? AND page=?",
                    (doc_id, page),
                )
            flagged = len(rows)
        needs = db.execute(
            "UPDATE pages SET status='pending', error=NULL WHERE status='needs_ocr'"
        ).rowcount
        db.execute(
            "UPDATE documents SET status='pending', error=NULL, finished_at=NULL "
            "WHERE status IN ('done', 'failed') AND doc_id IN "
            "(SELECT doc_id FROM pages WHERE status='pending')"
        )
    return int(needs), flagged


def forced_route(ledger: Ledger, doc_id: str, page: int) -> str | None:
    """Why this page must go to OCR whatever its text layer says (a redo), or None."""
    rows = ledger.query(
        "SELECT reason FROM route_overrides WHERE doc_id=? AND page=?", (doc_id, page)
    )
    return str(rows[0][0]) if rows else None


def route_report(ledger: Ledger, attention_limit: int = 50) -> dict[str, Any]:
    """Finished pages by route and by quality flag, and the pages that need attention."""
    routes = {
        str(r[0]): int(r[1])
        for r in ledger.query(
            "SELECT COALESCE(json_extract(record, '$.route'), CASE json_extract(record, "
            "'$.status') WHEN 'blank' THEN 'blank' ELSE 'not_routed' END) AS route, COUNT(*) "
            "FROM page_text GROUP BY route ORDER BY route"
        )
    }
    flags = {
        str(r[0]): int(r[1])
        for r in ledger.query(
            "SELECT j.value, COUNT(*) FROM page_text t, json_each(t.record, '$.quality_flags') j "
            "GROUP BY j.value ORDER BY j.value"
        )
    }
    marks = ",".join("?" * len(ATTENTION))
    attention = [
        {"source": r[0], "page": r[1], "status": r[2], "reason": r[3] or ""}
        for r in ledger.query(
            "SELECT d.source, p.page, p.status, p.error FROM pages p JOIN documents d "
            f"ON d.doc_id=p.doc_id WHERE p.status IN ({marks}) ORDER BY d.seq, p.page LIMIT ?",
            (*ATTENTION, attention_limit),
        )
    ]
    total = ledger.query(f"SELECT COUNT(*) FROM pages WHERE status IN ({marks})", ATTENTION)
    return {
        "routes": routes,
        "quality_flags": flags,
        "attention": attention,
        "attention_total": int(total[0][0]),
    }
