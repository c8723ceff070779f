"""Claims stay cheap with a big queue: the suspects' claim has an index of its own."""

from __future__ import annotations

from pathlib import Path

from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument


def test_the_suspects_claim_uses_an_index_not_a_scan_of_every_pending_page(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "ocrfleet.sqlite")
    ledger.add_documents([NewDocument("a" * 64, "a.pdf", "/in/a.pdf", "a", 1, 50)])
    plan = " ".join(
        str(tuple(row))
        for row in ledger._db.execute(
            "EXPLAIN QUERY PLAN SELECT rowid FROM pages WHERE status='pending' AND crashes > 0"
            " AND (claimed_by IS NULL OR lease_until < 0) ORDER BY doc_seq, page LIMIT 1"
        )
    )
    assert "pages_crashed" in plan, plan
    ledger.close()


def test_fair_share_with_a_bounded_count_still_splits_a_small_queue(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ocrfleet.sqlite")
    ledger.add_documents([NewDocument("b" * 64, "b.pdf", "/in/b.pdf", "b", 1, 10)])
    ledger.register_worker("w1", 0, 1, None)
    ledger.register_worker("w2", 1, 2, None)
    first = ledger.claim("w1", 8, 60.0, suspect=False, in_flight=0)
    second = ledger.claim("w2", 8, 60.0, suspect=False, in_flight=0)
    assert (len(first), len(second)) == (5, 5)
    # A big queue: the count stops early, and the whole request is granted.
    ledger.add_documents([NewDocument("c" * 64, "c.pdf", "/in/c.pdf", "c", 1, 1000)])
    assert len(ledger.claim("w1", 64, 60.0, suspect=False, in_flight=5)) == 64
    ledger.close()
