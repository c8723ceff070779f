"""The ledger: one SQLite database (WAL) per shard, the single source of truth of a run.

It holds documents, pages, attempts and claims. Resume, status, reports and the per-document
outputs are all derived from it. Several worker processes of one node share it: each claims
pages under a lease that its heartbeat renews; a page whose worker dies goes back to the pool.
Every write is one short `BEGIN IMMEDIATE` transaction, so a kill -9 at any instant leaves a
consistent ledger that loses at most the pages that were in flight.

Page statuses: pending (not finished; possibly claimed), done, blank, truncated, failed,
needs_ocr (routed to OCR in a run that had no OCR engine; a run with one redoes it).
Document statuses: pending, assembling (its last page landed, its files are being written),
done, failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import LedgerError
from .ledger_claims import LedgerClaims
from .ledger_rows import Counts, DocumentRow, NewDocument, StoredPage, read_stored_pages
from .ledger_schema import DOC_STATUSES, PAGE_STATUSES


class Ledger(LedgerClaims):
    """A connection to one shard's ledger: planning, claims (LedgerClaims), reading, runs.
    One per process; not shared between threads."""

    # ---- planning ---------------------------------------------------------------------

    def add_documents(self, docs: Sequence[NewDocument], now: float | None = None) -> int:
        """Register documents and their pages; known ids are kept as they are. Returns new count."""
        now = time.time() if now is None else now
        added = 0
        with self.transaction() as db:
            known = {r[0] for r in db.execute("SELECT doc_id FROM documents")}
            next_seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM documents").fetchone()[0]
            for doc in docs:
                if doc.doc_id in known:
                    db.execute(
                        "INSERT OR IGNORE INTO aliases (doc_id, source) VALUES (?, ?)",
                        (doc.doc_id, doc.source),
                    )
                    continue
                known.add(doc.doc_id)
                status = "failed" if doc.error else "pending"
                db.execute(
                    "INSERT INTO documents (doc_id, seq, source, path, rel, size, pages, status, "
                    "error, added_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        doc.doc_id,
                        next_seq,
                        doc.source,
                        doc.path,
                        doc.rel,
                        doc.size,
                        doc.pages,
                        status,
                        doc.error,
                        now,
                        now if doc.error else None,
                    ),
                )
                db.executemany(
                    "INSERT INTO pages (doc_id, page, doc_seq) VALUES (?, ?, ?)",
                    [(doc.doc_id, p, next_seq) for p in range(1, doc.pages + 1)]
                    if not doc.error
                    else [],
                )
                next_seq += 1
                added += 1
        return added

    def retry_failed(self) -> int:
        """Put failed pages (and their documents) back in the queue. Returns pages reset."""
        with self.transaction() as db:
            reset = db.execute(
                "UPDATE pages SET status='pending', crashes=0, error=NULL WHERE status='failed'"
            ).rowcount
            db.execute(
                "UPDATE documents SET status='pending', error=NULL, finished_at=NULL "
                "WHERE status='failed' AND pages > 0 AND doc_id IN "
                "(SELECT doc_id FROM pages WHERE status='pending')"
            )
        return int(reset)

    # ---- reading ----------------------------------------------------------------------

    def document(self, doc_id: str) -> DocumentRow:
        row = self._db.execute(
            "SELECT doc_id, seq, source, path, rel, pages, status, error FROM documents "
            "WHERE doc_id=?",
            (doc_id,),
        ).fetchone()
        if row is None:
            raise LedgerError(f"document {doc_id} is not in {self.path}")
        return DocumentRow(**dict(row))

    def documents(self, status: str | None = None) -> list[DocumentRow]:
        query = "SELECT doc_id, seq, source, path, rel, pages, status, error FROM documents"
        args: tuple[str, ...] = ()
        if status:
            query += " WHERE status=?"
            args = (status,)
        return [DocumentRow(**dict(r)) for r in self._db.execute(query + " ORDER BY seq", args)]

    def stored_pages(self, doc_id: str) -> list[StoredPage]:
        return read_stored_pages(self._db, doc_id)

    def counts(self) -> Counts:
        docs = dict.fromkeys(DOC_STATUSES, 0)
        for r in self._db.execute("SELECT status, COUNT(*) AS n FROM documents GROUP BY status"):
            docs[r["status"]] = r["n"]
        pages = dict.fromkeys(PAGE_STATUSES, 0)
        for r in self._db.execute("SELECT status, COUNT(*) AS n FROM pages GROUP BY status"):
            pages[r["status"]] = r["n"]
        in_flight = self._db.execute(
            "SELECT COUNT(*) FROM pages WHERE status='pending' AND claimed_by IS NOT NULL"
        ).fetchone()[0]
        return Counts(docs, pages, int(in_flight))

    def failed_documents(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT doc_id, source, error FROM documents WHERE status='failed' ORDER BY seq"
        )
        return [{"doc_id": r[0], "source": r[1], "reason": r[2]} for r in rows]

    def has_pending_pages(self) -> bool:
        """Cheap where counting is not (a million pending pages)."""
        return (
            self._db.execute("SELECT 1 FROM pages WHERE status='pending' LIMIT 1").fetchone()
            is not None
        )

    def pending_pages(self) -> int:
        return int(
            self._db.execute("SELECT COUNT(*) FROM pages WHERE status='pending'").fetchone()[0]
        )

    def live_workers(self) -> list[tuple[str, int]]:
        """Workers not recorded as stopped: (worker id, pid)."""
        rows = self._db.execute("SELECT worker, pid FROM workers WHERE stopped_at IS NULL")
        return [(r[0], int(r[1] or 0)) for r in rows]

    def stale_workers(self, older_than: float) -> list[str]:
        rows = self._db.execute(
            "SELECT worker FROM workers WHERE stopped_at IS NULL AND heartbeat_at < ?",
            (older_than,),
        )
        return [r[0] for r in rows]

    # ---- runs -------------------------------------------------------------------------

    def begin_run(self, run_id: str, config_json: str) -> str | None:
        """Record a run; returns the previous run's config (to warn when options changed)."""
        with self.transaction() as db:
            prev = db.execute("SELECT config FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
            db.execute(
                "INSERT INTO runs (run_id, started_at, config) VALUES (?, ?, ?)",
                (run_id, time.time(), config_json),
            )
        return prev[0] if prev else None

    def run_summaries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(run id, summary) of the finished runs, newest first."""
        rows = self._db.execute(
            "SELECT run_id, summary FROM runs WHERE summary IS NOT NULL ORDER BY started_at DESC"
        )
        for row in rows:
            yield row[0], json.loads(row[1])

    def end_run(self, run_id: str, summary: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, summary=? WHERE run_id=?",
                (time.time(), json.dumps(summary, sort_keys=True), run_id),
            )
