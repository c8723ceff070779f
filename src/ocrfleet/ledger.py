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
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LedgerError

SCHEMA_VERSION = 1
PAGE_STATUSES = ("pending", "done", "blank", "truncated", "failed", "needs_ocr")
DOC_STATUSES = ("pending", "assembling", "done", "failed")
FINISHED_PAGE_STATUSES = ("done", "blank", "truncated", "failed", "needs_ocr")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS probes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    doc_id TEXT NOT NULL, pages INTEGER NOT NULL, error TEXT
);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    rel TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'assembling', 'done', 'failed')),
    error TEXT,
    assembler TEXT,
    added_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS aliases (
    doc_id TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (doc_id, source)
);
CREATE TABLE IF NOT EXISTS pages (
    doc_id TEXT NOT NULL REFERENCES documents (doc_id),
    page INTEGER NOT NULL,
    doc_seq INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'done', 'blank', 'truncated', 'failed', 'needs_ocr')),
    claimed_by TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated_at REAL,
    UNIQUE (doc_id, page)
);
CREATE INDEX IF NOT EXISTS pages_todo ON pages (doc_seq, page) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS pages_claims ON pages (claimed_by) WHERE claimed_by IS NOT NULL;
-- The suspects' claim (crashes > 0) must not scan every pending page (89 ms at 1 M pages).
CREATE INDEX IF NOT EXISTS pages_crashed ON pages (doc_seq, page)
    WHERE status = 'pending' AND crashes > 0;
CREATE TABLE IF NOT EXISTS page_text (
    doc_id TEXT NOT NULL, page INTEGER NOT NULL, text TEXT NOT NULL, raw TEXT,
    record TEXT NOT NULL, PRIMARY KEY (doc_id, page)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL, page INTEGER NOT NULL, attempt INTEGER NOT NULL,
    worker TEXT NOT NULL, prompt TEXT,
    started_at REAL NOT NULL, finished_at REAL,
    outcome TEXT, finish_reason TEXT, output_tokens INTEGER, error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_open ON attempts (worker) WHERE finished_at IS NULL;
CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY, slot INTEGER, pid INTEGER, gpu TEXT,
    started_at REAL NOT NULL, heartbeat_at REAL NOT NULL, stopped_at REAL
);
CREATE TABLE IF NOT EXISTS gpu_samples (
    t REAL NOT NULL, worker TEXT NOT NULL, gpu INTEGER NOT NULL, util REAL,
    mem_used_mib REAL, mem_total_mib REAL, power_w REAL, temp_c REAL
);
CREATE INDEX IF NOT EXISTS gpu_samples_t ON gpu_samples (t);
CREATE TABLE IF NOT EXISTS route_overrides (
    doc_id TEXT NOT NULL, page INTEGER NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (doc_id, page)
);
CREATE TABLE IF NOT EXISTS corpus_listing (
    doc_id TEXT PRIMARY KEY, source TEXT NOT NULL, shard INTEGER NOT NULL,
    num_shards INTEGER NOT NULL, pages INTEGER NOT NULL, seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicates (
    source TEXT PRIMARY KEY, doc_id TEXT NOT NULL, path TEXT NOT NULL, rel TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS doc_files (
    doc_id TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, ctime_ns INTEGER
);
CREATE TABLE IF NOT EXISTS retired (
    doc_id TEXT PRIMARY KEY, source TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL
);
-- Output names whose files no input holds any more, to be set aside (stale_outputs.py).
CREATE TABLE IF NOT EXISTS stale_outputs (
    rel TEXT PRIMARY KEY, key TEXT NOT NULL, reason TEXT NOT NULL, figures_to TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,
    config TEXT NOT NULL, summary TEXT
);
"""


# (attempt id, outcome, finish reason, output tokens): an attempt closed with its page.
AttemptClose = tuple[int, str, str | None, int | None]


@dataclass(frozen=True)
class NewDocument:
    doc_id: str
    source: str
    path: str
    rel: str
    size: int
    pages: int
    error: str | None = None


@dataclass(frozen=True)
class DocumentRow:
    doc_id: str
    seq: int
    source: str
    path: str
    rel: str
    pages: int
    status: str
    error: str | None


@dataclass(frozen=True)
class Claim:
    doc_id: str
    page: int  # 1-based
    attempts: int
    crashes: int


@dataclass(frozen=True)
class PageOutcome:
    """A finished page, as a worker hands it to the ledger."""

    doc_id: str
    page: int
    status: str
    text: str
    raw: str | None
    record: dict[str, Any]
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class StoredPage:
    page: int
    status: str
    text: str | None
    raw: str | None
    record: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class Counts:
    documents: dict[str, int]
    pages: dict[str, int]
    in_flight: int

    def as_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "pages": self.pages, "in_flight": self.in_flight}


def _allow_needs_ocr(db: sqlite3.Connection) -> None:
    """Ledgers made before the needs_ocr status get it added to the pages CHECK constraint:
    only the stored definition changes (SQLite's documented way to loosen a constraint), so
    columns other versions added stay, and no row is rewritten."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='pages'").fetchone()
    if row is None or "needs_ocr" in row[0]:
        return
    version = int(db.execute("PRAGMA schema_version").fetchone()[0])
    db.execute("PRAGMA writable_schema=ON")
    try:
        db.execute(
            "UPDATE sqlite_master SET sql=replace(sql, \"'truncated', 'failed')\", "
            "\"'truncated', 'failed', 'needs_ocr')\") WHERE type='table' AND name='pages'"
        )
        db.execute(f"PRAGMA schema_version={version + 1}")
    finally:
        db.execute("PRAGMA writable_schema=OFF")


def read_stored_pages(db: sqlite3.Connection, doc_id: str) -> list[StoredPage]:
    """A document's pages with their text and record, in page order (any connection to a
    ledger: the run's, or an export's read-only one)."""
    rows = db.execute(
        "SELECT p.page, p.status, p.error, t.text, t.raw, t.record FROM pages p "
        "LEFT JOIN page_text t ON t.doc_id=p.doc_id AND t.page=p.page "
        "WHERE p.doc_id=? ORDER BY p.page",
        (doc_id,),
    )
    return [
        StoredPage(
            page=r[0],
            status=r[1],
            text=r[3],
            raw=r[4],
            record=json.loads(r[5]) if r[5] else None,
            error=r[2],
        )
        for r in rows
    ]


class Ledger:
    """A connection to one shard's ledger. One per process; not shared between threads."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 120.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a committed transaction survives a process crash (kill -9); only power
        # loss can lose the last ones, which resume then redoes.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._create_schema()

    def _create_schema(self) -> None:
        with self.transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            _allow_needs_ocr(db)
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row["value"]) != SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path} has ledger schema {row['value']}, this ocrfleet writes "
                    f"{SCHEMA_VERSION}: use a new --output-dir or the matching ocrfleet version"
                )

    @classmethod
    def read_only(cls, path: Path) -> Ledger:
        """A ledger opened only to read (status): no schema created, no version stamped,
        nothing written; works in a read-only directory. LedgerError if unreadable."""
        from .ledger_file import connect_read_only

        self = cls.__new__(cls)
        self.path = path
        self._db = connect_read_only(path)
        return self

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: takes the write lock up front, so no deadlock on upgrade."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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

    # ---- workers and claims -----------------------------------------------------------

    def register_worker(
        self, worker: str, slot: int, pid: int, gpu: str | None, startup_grace: float = 0.0
    ) -> None:
        """A worker is about to start its engine; its first heartbeat is due after the grace
        period (loading a model can take minutes and blocks the worker's event loop)."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO workers (worker, slot, pid, gpu, started_at, "
                "heartbeat_at, stopped_at) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (worker, slot, pid, gpu, now, now + startup_grace),
            )

    def heartbeat(self, worker: str, lease_seconds: float) -> None:
        """Prove the worker is alive and extend the leases of everything it holds."""
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE workers SET heartbeat_at=? WHERE worker=?", (now, worker))
            db.execute(
                "UPDATE pages SET lease_until=? WHERE claimed_by=? AND status='pending'",
                (now + lease_seconds, worker),
            )

    def claim(
        self,
        worker: str,
        limit: int,
        lease_seconds: float,
        *,
        suspect: bool,
        in_flight: int | None = None,
    ) -> list[Claim]:
        """Claim up to `limit` claimable pages in document order.

        Pages that were in flight when a worker died ("suspects") are handed out one at a
        time (`suspect=True` asks for one), so a page that keeps killing engines is isolated
        and, at max crashes, marked failed instead of taking innocent pages down with it.

        With `in_flight` (the pages this worker holds), a worker that shares the ledger with
        others claims no more than its fair share of the pages still to do: an engine ready
        first, able to hold 1,000 pages, would otherwise take a whole small corpus, or the
        whole tail of a large one, while the other GPUs idle (H200×2, 2026-11-27).
        """
        now = time.time()
        crash_filter = "crashes > 0" if suspect else "crashes = 0"
        limit = 1 if suspect else limit
        with self.transaction() as db:
            if in_flight is not None and not suspect:
                limit = min(limit, self._fair_share(db, in_flight + limit) - in_flight)
                if limit <= 0:
                    return []
            rows = db.execute(
                "UPDATE pages SET claimed_by=?, lease_until=? WHERE rowid IN ("
                " SELECT rowid FROM pages WHERE status='pending' AND " + crash_filter + " AND"
                " (claimed_by IS NULL OR lease_until < ?) ORDER BY doc_seq, page LIMIT ?)"
                " RETURNING doc_id, page, attempts, crashes, doc_seq",
                (worker, now + lease_seconds, now, limit),
            ).fetchall()
        rows.sort(key=lambda r: (r["doc_seq"], r["page"]))
        return [Claim(r["doc_id"], r["page"], r["attempts"], r["crashes"]) for r in rows]

    @staticmethod
    def _fair_share(db: sqlite3.Connection, wanted: int) -> int:
        """Pages still to do (claimed or not) over the engine slots: a worker's share.

        Slots count from the fleet size the supervisor declares (`set_fleet_slots`), not only
        from workers already registered: an engine that starts late or restarts after a crash
        keeps its share waiting for it, instead of finding every page held by the engines
        ready first (H200, 2026-12-02: a restarted slot did 0 of 512 pages). A slot given up
        is taken out of the fleet. Counting stops at what could limit `wanted` (slots × wanted
        pages): a full count of 1 M pending pages on every refill would cost more than the
        claim itself."""
        workers = int(
            db.execute("SELECT COUNT(*) FROM workers WHERE stopped_at IS NULL").fetchone()[0]
        )
        fleet = db.execute("SELECT value FROM meta WHERE key='fleet_slots'").fetchone()
        slots = max(workers, int(fleet[0]) if fleet is not None else 0)
        if slots <= 1:
            return 1 << 62  # alone: no one to share with (and no count of the pages)
        todo = db.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM pages WHERE status='pending' LIMIT ?)",
            (slots * max(1, wanted),),
        ).fetchone()
        return -(-int(todo[0]) // slots)

    def set_fleet_slots(self, slots: int) -> None:
        """How many engine slots share this ledger now (started or still starting)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('fleet_slots', ?)", (str(slots),)
            )

    def release(self, worker: str, pages: Iterable[tuple[str, int]] | None = None) -> int:
        """Give claims back without finishing them (shutdown, or pages not started)."""
        with self.transaction() as db:
            if pages is None:
                return int(
                    db.execute(
                        "UPDATE pages SET claimed_by=NULL, lease_until=NULL "
                        "WHERE claimed_by=? AND status='pending'",
                        (worker,),
                    ).rowcount
                )
            count = 0
            for doc_id, page in pages:
                count += db.execute(
                    "UPDATE pages SET claimed_by=NULL, lease_until=NULL "
                    "WHERE doc_id=? AND page=? AND claimed_by=? AND status='pending'",
                    (doc_id, page, worker),
                ).rowcount
            return count

    def start_attempt(
        self, worker: str, doc_id: str, page: int, attempt: int, prompt: str | None
    ) -> int:
        """Record that a page is about to enter the engine: committed before it does, so a
        worker that dies with it in flight is known to have had it."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO attempts (doc_id, page, attempt, worker, prompt, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (doc_id, page, attempt, worker, prompt, time.time()),
            )
            db.execute(
                "UPDATE pages SET attempts=attempts+1 WHERE doc_id=? AND page=?", (doc_id, page)
            )
            return int(cur.lastrowid or 0)

    def finish_attempt(
        self,
        attempt_id: int,
        outcome: str,
        finish_reason: str | None = None,
        output_tokens: int | None = None,
        error: str | None = None,
    ) -> None:
        with self.transaction() as db:
            self._close_attempt(
                db, (attempt_id, outcome, finish_reason, output_tokens), time.time(), error
            )

    @staticmethod
    def _close_attempt(
        db: sqlite3.Connection, attempt: AttemptClose, at: float, error: str | None = None
    ) -> None:
        attempt_id, outcome, finish_reason, output_tokens = attempt
        db.execute(
            "UPDATE attempts SET finished_at=?, outcome=?, finish_reason=?, output_tokens=?, "
            "error=? WHERE id=?",
            (at, outcome, finish_reason, output_tokens, error, attempt_id),
        )

    def finish_page(
        self, worker: str, outcome: PageOutcome, attempt: AttemptClose | None = None
    ) -> tuple[bool, bool]:
        """Store a finished page (and close its last attempt). Returns (stored, assemble).

        stored is False when the page was already finished (by a worker whose lease we
        outlived): the ledger keeps exactly one result per page. assemble is True for the one
        caller that finished a document's last page: it must now write the document's files.
        """
        now = time.time()
        with self.transaction() as db:
            if attempt is not None:
                self._close_attempt(db, attempt, now)
            updated = db.execute(
                "UPDATE pages SET status=?, error=?, claimed_by=NULL, lease_until=NULL, "
                "updated_at=? WHERE doc_id=? AND page=? AND status='pending'",
                (outcome.status, outcome.error, now, outcome.doc_id, outcome.page),
            ).rowcount
            if not updated:
                return False, False
            db.execute(
                "INSERT OR REPLACE INTO page_text (doc_id, page, text, raw, record) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    outcome.doc_id,
                    outcome.page,
                    outcome.text,
                    outcome.raw,
                    json.dumps(outcome.record, ensure_ascii=False, sort_keys=True),
                ),
            )
            return True, self._claim_assembly(db, outcome.doc_id, worker)

    @staticmethod
    def _claim_assembly(db: sqlite3.Connection, doc_id: str, worker: str) -> bool:
        left = db.execute(
            "SELECT COUNT(*) FROM pages WHERE doc_id=? AND status='pending'", (doc_id,)
        ).fetchone()[0]
        if left:
            return False
        claimed = db.execute(
            "UPDATE documents SET status='assembling', assembler=? "
            "WHERE doc_id=? AND status='pending'",
            (worker, doc_id),
        ).rowcount
        return bool(claimed)

    def claim_ready_documents(self, worker: str) -> list[str]:
        """Documents whose pages are all finished but whose files were never written."""
        with self.transaction() as db:
            ready = [
                r[0]
                for r in db.execute(
                    "SELECT doc_id FROM documents d WHERE status IN ('pending', 'assembling') "
                    "AND NOT EXISTS (SELECT 1 FROM pages p WHERE p.doc_id=d.doc_id "
                    "AND p.status='pending') ORDER BY seq"
                )
            ]
            for doc_id in ready:
                db.execute(
                    "UPDATE documents SET status='assembling', assembler=? WHERE doc_id=?",
                    (worker, doc_id),
                )
        return ready

    def finish_document(self, doc_id: str, status: str, error: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE documents SET status=?, error=?, assembler=NULL, finished_at=? "
                "WHERE doc_id=?",
                (status, error, time.time(), doc_id),
            )

    def reap_worker(self, worker: str, max_crashes: int) -> list[tuple[str, int]]:
        """A worker died: its in-flight pages count a crash, its claims go back to the pool.

        Returns the pages that reached max_crashes and are now failed (poison pages).
        """
        now = time.time()
        with self.transaction() as db:
            open_attempts = db.execute(
                "SELECT id, doc_id, page FROM attempts WHERE worker=? AND finished_at IS NULL",
                (worker,),
            ).fetchall()
            poisoned: list[tuple[str, int]] = []
            for attempt in open_attempts:
                db.execute(
                    "UPDATE attempts SET finished_at=?, outcome='worker_died' WHERE id=?",
                    (now, attempt["id"]),
                )
                row = db.execute(
                    "UPDATE pages SET crashes=crashes+1 WHERE doc_id=? AND page=? "
                    "AND status='pending' RETURNING crashes",
                    (attempt["doc_id"], attempt["page"]),
                ).fetchone()
                if row is not None and row["crashes"] >= max_crashes:
                    poisoned.append((attempt["doc_id"], attempt["page"]))
            for doc_id, page in poisoned:
                reason = (
                    f"poison page: the engine worker died {max_crashes} times while this page "
                    "was in flight"
                )
                record = {"status": "failed", "error": reason, "page": page, "doc_id": doc_id}
                db.execute(
                    "UPDATE pages SET status='failed', error=?, updated_at=? "
                    "WHERE doc_id=? AND page=?",
                    (reason, now, doc_id, page),
                )
                db.execute(
                    "INSERT OR REPLACE INTO page_text (doc_id, page, text, raw, record) "
                    "VALUES (?, ?, '', NULL, ?)",
                    (doc_id, page, json.dumps(record, sort_keys=True)),
                )
            db.execute(
                "UPDATE pages SET claimed_by=NULL, lease_until=NULL WHERE claimed_by=?", (worker,)
            )
            db.execute(
                "UPDATE documents SET status='pending', assembler=NULL "
                "WHERE status='assembling' AND assembler=?",
                (worker,),
            )
            db.execute("UPDATE workers SET stopped_at=? WHERE worker=?", (now, worker))
        return poisoned

    def worker_stopped(self, worker: str) -> None:
        """A worker ended normally: it no longer counts for fair shares."""
        with self.transaction() as db:
            db.execute("UPDATE workers SET stopped_at=? WHERE worker=?", (time.time(), worker))

    def recover_interrupted(self) -> int:
        """At start, under the run lock: whatever a previous run left in flight is released.

        Its open attempts are closed as interrupted (no crash counted: the run stopped, the
        page did nothing wrong). Returns the number of claims released.
        """
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "UPDATE attempts SET finished_at=?, outcome='interrupted' "
                "WHERE finished_at IS NULL",
                (now,),
            )
            released = db.execute(
                "UPDATE pages SET claimed_by=NULL, lease_until=NULL WHERE claimed_by IS NOT NULL"
            ).rowcount
            db.execute(
                "UPDATE documents SET status='pending', assembler=NULL WHERE status='assembling'"
            )
            db.execute("UPDATE workers SET stopped_at=? WHERE stopped_at IS NULL", (now,))
        return int(released)

    # ---- reading ----------------------------------------------------------------------

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of a read-only statement (for modules that keep their own tables here)."""
        return self._db.execute(sql, tuple(args)).fetchall()

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

    # ---- routing (queries of ocrfleet.ocr_queue) ----------------------------------------
