"""Documents that no shard has claimed, from the corpus listings the shards recorded.

Each shard's ledger keeps the corpus listing it saw at planning (every document, with the
shard it belongs to). A document listed but registered in no ledger (its shard never ran,
or ran before the file arrived) has been processed by no one: `status` reports it instead
of calling the corpus finished.

Shards list the corpus at different times (a SLURM array starts when nodes free up), so
listings disagree: per input path the newest row wins, and a path that a newer listing no
longer holds (removed, or now a copy of another path) is not reported at all. A planning
that found no PDF or missed an input keeps its shard's previous listing (plan.py): an
unmounted corpus must not make every other shard's document look gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .catalog import LISTED_AT_KEY
from .ledger import Ledger


@dataclass(frozen=True)
class ListedDocument:
    doc_id: str
    source: str
    shard: int
    num_shards: int
    pages: int
    seen_at: float


@dataclass
class CorpusClaims:
    listed: dict[str, ListedDocument]  # input path → the newest row that lists it
    claimed: set[str]
    retired: set[str]
    # (when each ledger listed the whole corpus, the paths it listed then)
    listings: list[tuple[float, frozenset[str]]] = field(default_factory=list)

    def add(self, ledger: Ledger) -> None:
        tables = {r[0] for r in ledger.query("SELECT name FROM sqlite_master WHERE type='table'")}
        if "corpus_listing" in tables:
            rows = [
                ListedDocument(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), float(r[5]))
                for r in ledger.query(
                    "SELECT doc_id, source, shard, num_shards, pages, seen_at FROM corpus_listing"
                )
            ]
            for row in rows:
                known = self.listed.get(row.source)
                if known is None or row.seen_at > known.seen_at:
                    self.listed[row.source] = row
            listed_at = _listed_at(ledger) if "meta" in tables else None
            if listed_at is None and rows:  # listed by an older ocrfleet
                # Planning writes the whole listing at one time; rows a worker adds later
                # (a file rewritten mid-run) are newer, so the oldest row dates the listing.
                listed_at = min(r.seen_at for r in rows)
            if listed_at is not None:
                self.listings.append((listed_at, frozenset(r.source for r in rows)))
        if "retired" in tables:
            self.retired.update(r[0] for r in ledger.query("SELECT doc_id FROM retired"))
        self.claimed.update(r[0] for r in ledger.query("SELECT doc_id FROM documents"))

    def _current(self, row: ListedDocument) -> bool:
        """False when a listing newer than the row no longer holds its path."""
        return all(row.source in paths for at, paths in self.listings if at > row.seen_at)

    def unclaimed(self) -> list[dict[str, object]]:
        missing: dict[str, ListedDocument] = {}
        for row in self.listed.values():
            if row.doc_id in self.claimed or row.doc_id in self.retired or not self._current(row):
                continue
            known = missing.get(row.doc_id)
            if known is None or row.seen_at > known.seen_at:
                missing[row.doc_id] = row
        ordered = sorted(missing.values(), key=lambda r: (r.shard, r.source))
        return [
            {
                "doc_id": r.doc_id,
                "source": r.source,
                "shard": r.shard,
                "num_shards": r.num_shards,
                "pages": r.pages,
            }
            for r in ordered
        ]


def _listed_at(ledger: Ledger) -> float | None:
    rows = ledger.query("SELECT value FROM meta WHERE key=?", [LISTED_AT_KEY])
    try:
        return float(rows[0][0]) if rows else None
    except ValueError:
        return None


def corpus_claims(ledgers: Iterable[Ledger]) -> CorpusClaims:
    claims = CorpusClaims({}, set(), set())
    for ledger in ledgers:
        claims.add(ledger)
    return claims
