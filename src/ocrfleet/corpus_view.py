"""Documents that no shard has claimed, from the corpus listings the shards recorded.

Each shard's ledger keeps the corpus listing it saw at planning (every document, with the
shard it belongs to). A document listed by any shard but registered in no ledger (its
shard never ran, or ran before the file arrived) has been processed by no one: `status`
reports it instead of calling the corpus finished.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .ledger import Ledger


@dataclass
class CorpusClaims:
    listed: dict[str, tuple[str, int, int, int]]  # doc_id → (source, shard, shards, pages)
    claimed: set[str]
    retired: set[str]

    def add(self, ledger: Ledger) -> None:
        tables = {r[0] for r in ledger.query("SELECT name FROM sqlite_master WHERE type='table'")}
        if "corpus_listing" in tables:
            for r in ledger.query(
                "SELECT doc_id, source, shard, num_shards, pages FROM corpus_listing"
            ):
                self.listed.setdefault(r[0], (r[1], int(r[2]), int(r[3]), int(r[4])))
        if "retired" in tables:
            self.retired.update(r[0] for r in ledger.query("SELECT doc_id FROM retired"))
        self.claimed.update(r[0] for r in ledger.query("SELECT doc_id FROM documents"))

    def unclaimed(self) -> list[dict[str, object]]:
        missing = [
            (doc_id, entry)
            for doc_id, entry in self.listed.items()
            if doc_id not in self.claimed and doc_id not in self.retired
        ]
        missing.sort(key=lambda item: (item[1][1], item[1][0]))
        return [
            {"doc_id": d, "source": e[0], "shard": e[1], "num_shards": e[2], "pages": e[3]}
            for d, e in missing
        ]


def corpus_claims(ledgers: Iterable[Ledger]) -> CorpusClaims:
    claims = CorpusClaims({}, set(), set())
    for ledger in ledgers:
        claims.add(ledger)
    return claims
