"""A run of pages that cannot be loaded ends the document's attempts at once.

Probing already fails a PDF when most pages of a sample cannot be loaded. A page tree that
is broken past the sample (600,000 of a claimed 1,000,000 pages missing) is caught while the
run goes: after LOAD_FAILURE_RUN pages of one document fail to load with no page loading in
between, every later page of it still pending fails with one reason, in one transaction,
instead of one render per page for hours.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .ledger import Ledger

LOAD_FAILURE_RUN = 16
LOAD_FAILURE = "cannot load page"


@dataclass
class LoadFailures:
    """Per engine worker: the current run of load failures of each document."""

    ledger: Ledger
    limit: int = LOAD_FAILURE_RUN
    _runs: dict[str, tuple[int, int]] = field(default_factory=dict)  # doc → (first, count)

    def loaded(self, doc_id: str) -> None:
        self._runs.pop(doc_id, None)

    def failed(self, doc_id: str, page: int, reason: str) -> int:
        """Count a render failure; returns how many later pages were failed in bulk."""
        if not reason.startswith(LOAD_FAILURE):
            self._runs.pop(doc_id, None)
            return 0
        first, count = self._runs.get(doc_id, (page, 0))
        first, count = min(first, page), count + 1
        self._runs[doc_id] = (first, count)
        if count < self.limit:
            return 0
        self._runs.pop(doc_id, None)
        why = (
            f"not tried: pages {first}-{page} could not be loaded ({count} in a row), so the "
            "PDF's page tree is broken from there on"
        )
        return fail_after(self.ledger, doc_id, page, why)


def fail_after(ledger: Ledger, doc_id: str, page: int, reason: str) -> int:
    """Fail every pending page of the document after `page` that no worker holds; returns how
    many. A page a worker has claimed (rendering, or inside an engine) is left to finish on
    its own: failing it here would drop the result it may still bring."""
    now = time.time()
    with ledger.transaction() as db:
        rows = db.execute(
            "UPDATE pages SET status='failed', error=?, claimed_by=NULL, lease_until=NULL, "
            "updated_at=? WHERE doc_id=? AND page>? AND status='pending' "
            "AND (claimed_by IS NULL OR lease_until < ?) RETURNING page",
            (reason, now, doc_id, page, now),
        ).fetchall()
        db.executemany(
            "INSERT OR REPLACE INTO page_text (doc_id, page, text, raw, record) "
            "VALUES (?, ?, '', NULL, ?)",
            [
                (
                    doc_id,
                    r[0],
                    json.dumps(
                        {"status": "failed", "error": reason, "page": r[0], "doc_id": doc_id},
                        sort_keys=True,
                    ),
                )
                for r in rows
            ],
        )
    return len(rows)
