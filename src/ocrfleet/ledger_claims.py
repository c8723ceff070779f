"""The ledger's side of the work loop: workers, their claims and leases, attempts, finished
pages and documents, dead workers' pages (crashes, poison pages), recovery at start.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from .ledger_base import LedgerConnection
from .ledger_rows import AttemptClose, Claim, PageOutcome
from .page_record import PageRecord, encode_record

# A live suspect held by another worker on my host (worker ids start with it) and my GPU
# (workers.gpu, the slot's device label). Parameters: my worker id, now, my worker id.
SUSPECT_HELD_ON_MY_GPU = (
    " AND NOT EXISTS (SELECT 1 FROM pages AS held"
    " JOIN workers AS w ON w.worker = held.claimed_by JOIN workers AS me ON me.worker = ?"
    " WHERE held.status = 'pending' AND held.crashes > 0 AND held.lease_until >= ?"
    " AND held.claimed_by != ? AND w.gpu = me.gpu"
    " AND substr(w.worker, 1, instr(w.worker, ':')) = substr(me.worker, 1, instr(me.worker, ':')))"
)


class LedgerClaims(LedgerConnection):
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
        shared_faults: bool = False,
    ) -> list[Claim]:
        """Claim up to `limit` claimable pages in document order.

        Pages that were in flight when a worker died ("suspects") are handed out one at a
        time (`suspect=True` asks for one), so a page that keeps killing engines is isolated
        and, at max crashes, marked failed instead of taking innocent pages down with it.

        With `in_flight` (the pages this worker holds), a worker that shares the ledger with
        others claims no more than its fair share of the pages still to do: an engine ready
        first, able to hold 1,000 pages, would otherwise take a whole small corpus, or the
        whole tail of a large one, while the other GPUs idle (H200×2, 2026-11-27).

        `shared_faults`: this worker's GPU is one fault domain with the other engines on it
        (CUDA MPS: a fatal GPU fault in one engine ends every engine on that GPU), so a suspect
        is handed out only when no other worker of the same host and GPU holds one; otherwise
        one poison page would count a crash against every engine's suspect and fail innocent
        pages with it.
        """
        now = time.time()
        crash_filter = "crashes > 0" if suspect else "crashes = 0"
        if suspect and shared_faults:
            crash_filter += SUSPECT_HELD_ON_MY_GPU
        args = (worker, now, worker) if suspect and shared_faults else ()
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
                (worker, now + lease_seconds, *args, now, limit),
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
                    encode_record(outcome.record),
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
                record = PageRecord.poison(doc_id, page, reason).to_dict()
                db.execute(
                    "UPDATE pages SET status='failed', error=?, updated_at=? "
                    "WHERE doc_id=? AND page=?",
                    (reason, now, doc_id, page),
                )
                db.execute(
                    "INSERT OR REPLACE INTO page_text (doc_id, page, text, raw, record) "
                    "VALUES (?, ?, '', NULL, ?)",
                    (doc_id, page, encode_record(record)),
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
