"""A page is only rendered from the bytes its document was planned from.

Before a page is opened, the file's size, mtime and inode are compared with what planning
recorded. When they differ (a `cp` over the PDF mid-run) the file is hashed again: the same
bytes (a `touch`) only refresh the record; other bytes make a new document (new content id,
new page count, the same output name) and the old one is retired, so none of its pages is
recorded as a result of the new bytes, and every page of the new file is seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from .catalog import (
    FileStat,
    document_file,
    hand_over,
    record_files,
    retire,
    surviving_duplicate,
)
from .ledger import Ledger
from .ledger_rows import DocumentRow, NewDocument
from .shards import shard_of
from .sources import Probe, probe_file, text_to_path
from .stale_outputs import set_aside

log = logging.getLogger(__name__)


class SourceGuard:
    """One per engine worker: knows each document's expected file stat."""

    def __init__(self, ledger: Ledger, num_shards: int = 1, shard_index: int = 0) -> None:
        self.ledger = ledger
        self.num_shards, self.shard_index = num_shards, shard_index
        self._expected: dict[str, tuple[str, FileStat] | None] = {}
        self._lock = asyncio.Lock()

    def changed(self, doc_id: str) -> bool:
        """True when the document's file no longer has the stat it was planned with."""
        if doc_id not in self._expected:
            self._expected[doc_id] = document_file(self.ledger, doc_id)
        expected = self._expected[doc_id]
        if expected is None:  # planned by an older ocrfleet: nothing to compare with
            return False
        path, planned = expected
        try:
            now = FileStat.of(Path(text_to_path(path)).stat())
        except OSError:
            return False  # gone: rendering reports "cannot open PDF" with the path
        if planned.ctime_ns == 0:  # recorded by an older ocrfleet, without ctime
            now = FileStat(now.size, now.mtime_ns, 0, now.inode)
        # ctime too: `cp -p` or `rsync -t --inplace` over a same-size file keeps size, mtime
        # and inode; only ctime says the bytes may be others (then they are hashed again).
        return now != planned

    async def replan(self, doc: DocumentRow) -> bool:
        """The file changed: re-check it by content and re-plan the document if needed.
        Returns whether the document still stands (its bytes did not change)."""
        async with self._lock:
            self._expected.pop(doc.doc_id, None)
            planned = document_file(self.ledger, doc.doc_id)
            if planned is None or planned[0] != doc.path:
                return False  # re-planned already (retired, or handed over to a copy)
            path = text_to_path(doc.path)
            settled = await _settled_probe(path)
            if settled is None:
                return True  # gone: rendering reports it
            before, probe = settled
            if probe.doc_id == doc.doc_id:
                record_files(self.ledger, [(doc.doc_id, doc.path, before)])
                return True
            # Another input path with the old bytes takes the document over (with its pages);
            # only when none is left are those pages thrown away with the bytes.
            heir = surviving_duplicate(self.ledger, doc.doc_id, doc.path)
            with self.ledger.transaction() as db:
                if heir is None:
                    retire(db, doc.doc_id, f"{doc.source} was rewritten during the run")
                else:
                    hand_over(db, doc.doc_id, heir)
            # Before any page of the new bytes is done under the freed name.
            set_aside(self.ledger, self.ledger.path.parent)
            log.warning(
                "%s changed during the run (now %d page(s)): its pages are done again from "
                "the new bytes",
                doc.source,
                probe.pages,
            )
            shard = shard_of(probe.doc_id, self.num_shards)
            with self.ledger.transaction() as db:  # status sees the new bytes if unclaimed
                if heir is None:
                    db.execute("DELETE FROM corpus_listing WHERE doc_id=?", (doc.doc_id,))
                db.execute(
                    "INSERT OR REPLACE INTO corpus_listing (doc_id, source, shard, num_shards, "
                    "pages, seen_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (probe.doc_id, doc.source, shard, self.num_shards, probe.pages, time.time()),
                )
            if shard != self.shard_index:
                log.warning(
                    "%s: its new bytes belong to shard %d: run that shard again",
                    doc.source,
                    shard,
                )
                return False
            self.ledger.add_documents(
                [
                    NewDocument(
                        probe.doc_id,
                        doc.source,
                        doc.path,
                        doc.rel,
                        probe.size,
                        probe.pages,
                        probe.error,
                    )
                ]
            )
            record_files(self.ledger, [(probe.doc_id, doc.path, before)])
            return False


# A copy in progress is hashed again until the file holds still: the same stat before the
# hash and a quiet moment after it, so a half-written file is not planned as the new bytes.
SETTLE_TRIES = 40
SETTLE_QUIET_S = 0.5


async def _settled_probe(path: str) -> tuple[FileStat, Probe] | None:
    result: tuple[FileStat, Probe] | None = None
    for _ in range(SETTLE_TRIES):
        try:
            before = FileStat.of(Path(path).stat())
            probe = await asyncio.to_thread(probe_file, path)
            await asyncio.sleep(SETTLE_QUIET_S)
            after = FileStat.of(Path(path).stat())
        except OSError:
            return result
        result = (before, probe)
        if before == after:
            return result
    return result
