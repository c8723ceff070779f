from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from ocrfleet.errors import LedgerError
from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument, PageOutcome


def doc(n: int, pages: int = 3, error: str | None = None) -> NewDocument:
    return NewDocument(f"{n:064x}", f"in/{n}.pdf", f"/abs/{n}.pdf", f"{n}", 100, pages, error)


def outcome(doc_id: str, page: int, status: str = "done") -> PageOutcome:
    return PageOutcome(doc_id, page, status, f"text {page}", None, {"status": status}, 1)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "l.sqlite")


def test_documents_and_pages_are_registered_once(ledger: Ledger) -> None:
    assert ledger.add_documents([doc(1), doc(2, error="empty file")]) == 2
    assert ledger.add_documents([doc(1)]) == 0  # resume: known documents are kept
    counts = ledger.counts()
    assert counts.pages["pending"] == 3
    assert counts.documents == {"pending": 1, "assembling": 0, "done": 0, "failed": 1}
    assert ledger.failed_documents()[0]["reason"] == "empty file"


def test_claims_are_exclusive_and_in_document_order(ledger: Ledger) -> None:
    ledger.add_documents([doc(1), doc(2)])
    a = ledger.claim("A", 4, 60, suspect=False)
    b = ledger.claim("B", 4, 60, suspect=False)
    assert [(c.doc_id[-1], c.page) for c in a] == [("1", 1), ("1", 2), ("1", 3), ("2", 1)]
    assert [(c.doc_id[-1], c.page) for c in b] == [("2", 2), ("2", 3)]
    assert ledger.claim("C", 4, 60, suspect=False) == []


def test_a_worker_claims_at_most_its_fair_share_while_others_run(ledger: Ledger) -> None:
    """Two engines that can each hold 1,000 pages, 40 pages to do: the one ready first takes
    half, and more only as the pages still to do shrink; alone, a worker takes what it can."""
    ledger.add_documents([doc(1, pages=20), doc(2, pages=20)])
    ledger.register_worker("A", 0, 1, None)
    ledger.register_worker("B", 1, 2, None)
    first = ledger.claim("A", 1000, 60, suspect=False, in_flight=0)
    assert len(first) == 20
    assert ledger.claim("A", 1000, 60, suspect=False, in_flight=20) == []
    for claim in first[:10]:
        ledger.finish_page("A", outcome(claim.doc_id, claim.page))
    # 30 still to do, 15 each: A holds 10, so 5 more; B, ready late, gets its 15.
    assert len(ledger.claim("A", 1000, 60, suspect=False, in_flight=10)) == 5
    assert len(ledger.claim("B", 1000, 60, suspect=False, in_flight=0)) == 15
    ledger.worker_stopped("B")
    assert len(ledger.claim("A", 1000, 60, suspect=False, in_flight=15)) == 0  # none left
    ledger.add_documents([doc(3, pages=30)])
    assert len(ledger.claim("A", 1000, 60, suspect=False, in_flight=15)) == 30  # alone now


def test_expired_lease_returns_the_page_to_the_pool(ledger: Ledger) -> None:
    ledger.add_documents([doc(1, pages=1)])
    assert len(ledger.claim("A", 1, 0.05, suspect=False)) == 1
    assert ledger.claim("B", 1, 60, suspect=False) == []
    time.sleep(0.1)
    assert len(ledger.claim("B", 1, 60, suspect=False)) == 1


def test_heartbeat_extends_leases(ledger: Ledger) -> None:
    ledger.add_documents([doc(1, pages=1)])
    ledger.register_worker("A", 0, 1, None)
    ledger.claim("A", 1, 0.2, suspect=False)
    ledger.heartbeat("A", 60)
    time.sleep(0.3)
    assert ledger.claim("B", 1, 60, suspect=False) == []


def test_a_page_is_stored_once_and_its_last_page_triggers_assembly_once(ledger: Ledger) -> None:
    ledger.add_documents([doc(1, pages=2)])
    d = f"{1:064x}"
    ledger.claim("A", 2, 60, suspect=False)
    assert ledger.finish_page("A", outcome(d, 1)) == (True, False)
    assert ledger.finish_page("B", outcome(d, 1)) == (False, False)  # a late duplicate
    assert ledger.finish_page("A", outcome(d, 2)) == (True, True)
    assert ledger.claim_ready_documents("C") == [d]  # assembling, not yet written
    ledger.finish_document(d, "done", None)
    assert ledger.claim_ready_documents("C") == []
    assert [p.text for p in ledger.stored_pages(d)] == ["text 1", "text 2"]


def test_dead_worker_counts_crashes_and_poison_pages_fail(ledger: Ledger) -> None:
    ledger.add_documents([doc(1, pages=2)])
    d = f"{1:064x}"
    ledger.claim("A", 2, 60, suspect=False)
    ledger.start_attempt("A", d, 1, 1, "markdown")  # page 1 is in the engine; page 2 is not
    assert ledger.reap_worker("A", max_crashes=2) == []
    # Page 1 is now a suspect: handed out alone, apart from normal pages.
    normal = ledger.claim("B", 5, 60, suspect=False)
    assert [c.page for c in normal] == [2]
    suspect = ledger.claim("B", 5, 60, suspect=True)
    assert [(c.page, c.crashes) for c in suspect] == [(1, 1)]
    ledger.start_attempt("B", d, 1, 2, "markdown")
    assert ledger.reap_worker("B", max_crashes=2) == [(d, 1)]
    pages = {p.page: p for p in ledger.stored_pages(d)}
    assert pages[1].status == "failed" and "poison page" in (pages[1].error or "")
    assert pages[2].status == "pending"


def test_interrupted_run_releases_everything_without_blame(ledger: Ledger) -> None:
    ledger.add_documents([doc(1, pages=2)])
    d = f"{1:064x}"
    ledger.claim("A", 2, 600, suspect=False)
    ledger.start_attempt("A", d, 1, 1, "markdown")
    assert ledger.recover_interrupted() == 2
    claims = ledger.claim("B", 5, 60, suspect=False)
    assert [(c.page, c.crashes) for c in claims] == [(1, 0), (2, 0)]


def test_retry_failed_puts_failed_pages_back(ledger: Ledger) -> None:
    ledger.add_documents([doc(1, pages=1)])
    d = f"{1:064x}"
    ledger.claim("A", 1, 60, suspect=False)
    ledger.finish_page("A", outcome(d, 1, "failed"))
    ledger.finish_document(d, "failed", "page 1 failed")
    assert ledger.retry_failed() == 1
    assert ledger.counts().pages["pending"] == 1
    assert ledger.document(d).status == "pending"


def test_ledger_is_wal_and_rejects_other_schema(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="schema 999"):
        Ledger(path)


def test_two_connections_share_one_ledger(tmp_path: Path) -> None:
    one, two = Ledger(tmp_path / "l.sqlite"), Ledger(tmp_path / "l.sqlite")
    one.add_documents([doc(1, pages=4)])
    got = one.claim("A", 2, 60, suspect=False) + two.claim("B", 2, 60, suspect=False)
    assert sorted(c.page for c in got) == [1, 2, 3, 4]


def test_engines_sharing_faults_on_a_gpu_hold_one_suspect_page_between_them(
    ledger: Ledger,
) -> None:
    """Under CUDA MPS a GPU fault ends every engine on that GPU: were each engine to hold a
    suspect (a page in flight at an earlier crash), one poison page would count a second crash
    against the others' innocent suspects and fail them. So one suspect per GPU and host."""
    ledger.add_documents([doc(1, pages=6)])
    d = f"{1:064x}"
    ledger.register_worker("h:1:0", 0, 1, "gpu0")
    for claim in ledger.claim("h:1:0", 6, 60, suspect=False):
        ledger.start_attempt("h:1:0", d, claim.page, 1, "markdown")
    assert ledger.reap_worker("h:1:0", max_crashes=2) == []  # all six pages are suspects now
    workers = [("h:2:0", "gpu0"), ("h:3:1", "gpu0"), ("h:4:2", "gpu1"), ("g:5:0", "gpu0")]
    for slot, (worker, gpu) in enumerate(workers):
        ledger.register_worker(worker, slot, slot + 2, gpu)

    first = ledger.claim("h:2:0", 1, 60, suspect=True, shared_faults=True)
    assert [c.crashes for c in first] == [1]
    # Its neighbour on gpu0 waits; another GPU and another host each get their own.
    assert ledger.claim("h:3:1", 1, 60, suspect=True, shared_faults=True) == []
    assert len(ledger.claim("h:4:2", 1, 60, suspect=True, shared_faults=True)) == 1
    assert len(ledger.claim("g:5:0", 1, 60, suspect=True, shared_faults=True)) == 1
    # Once gpu0's suspect is done, the neighbour gets the next one.
    ledger.start_attempt("h:2:0", d, first[0].page, 2, "markdown")
    ledger.finish_page("h:2:0", outcome(d, first[0].page))
    assert len(ledger.claim("h:3:1", 1, 60, suspect=True, shared_faults=True)) == 1
    # Without a shared fault domain (no MPS) each engine holds its own suspect, as before.
    assert len(ledger.claim("h:2:0", 1, 60, suspect=True)) == 1
