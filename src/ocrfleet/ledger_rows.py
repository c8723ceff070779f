"""What goes in and comes out of the ledger: typed rows, shared by its readers and writers."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

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
