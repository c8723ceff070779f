"""What the ledger knows about input files, and keeping it true to the files on disk.

- the probe cache: (path, size, mtime, ctime, inode) → content id and page count; a file is
  hashed again whenever any of these may have changed (`cp -p` and `rsync -t` keep size and
  mtime, never ctime or inode);
- the file each document is read from, with the stat it had when probed: a page is only
  rendered from bytes that still match (a PDF rewritten mid-run is re-planned);
- documents whose path now holds other bytes are retired (the new bytes are a new document),
  documents found by content at a new path are re-pointed there (a moved corpus);
- the corpus listing a shard saw, and duplicate paths with their own output names: exactly
  the copies there are now (a copy removed, edited or become the document is dropped);
- the output names these changes free, noted for stale_outputs.py to set their files aside.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .ledger import Ledger
from .names import short_hash
from .sources import UNREADABLE_PREFIX, text_to_path
from .stale_outputs import note_stale

log = logging.getLogger(__name__)
PROBE_COLUMNS = (("ctime_ns", "INTEGER"), ("inode", "INTEGER"))
LISTED_AT_KEY = "corpus_listed_at"  # in `meta`: when record_listing last ran


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass(frozen=True)
class CachedProbe:
    stat: FileStat
    doc_id: str
    pages: int
    error: str | None


@dataclass(frozen=True)
class Duplicate:
    """An input path whose bytes equal another input's: outputs of its own, same pages."""

    source: str
    doc_id: str
    path: str  # as stored (see sources.path_to_text)
    rel: str


def ensure_probe_columns(ledger: Ledger) -> None:
    """Old ledgers: add the probe cache's ctime and inode columns (rows without them are
    never trusted, so those files are hashed once more)."""
    with ledger.transaction() as db:
        have = {r[1] for r in db.execute("PRAGMA table_info(probes)")}
        for name, kind in PROBE_COLUMNS:
            if name not in have:
                db.execute(f"ALTER TABLE probes ADD COLUMN {name} {kind}")
        # doc_files rows of older ledgers have no ctime: compared without it.
        if "ctime_ns" not in {r[1] for r in db.execute("PRAGMA table_info(doc_files)")}:
            db.execute("ALTER TABLE doc_files ADD COLUMN ctime_ns INTEGER")


def cached_probes(ledger: Ledger) -> dict[str, CachedProbe]:
    rows = ledger.query(
        "SELECT path, size, mtime_ns, ctime_ns, inode, doc_id, pages, error FROM probes "
        "WHERE ctime_ns IS NOT NULL AND inode IS NOT NULL"
    )
    return {r[0]: CachedProbe(FileStat(r[1], r[2], r[3], r[4]), r[5], r[6], r[7]) for r in rows}


def store_probes(
    ledger: Ledger, rows: Iterable[tuple[str, FileStat, str, int, str | None]]
) -> None:
    with ledger.transaction() as db:
        db.executemany(
            "INSERT OR REPLACE INTO probes (path, size, mtime_ns, ctime_ns, inode, doc_id, "
            "pages, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (path, st.size, st.mtime_ns, st.ctime_ns, st.inode, doc_id, pages, error)
                for path, st, doc_id, pages, error in rows
            ],
        )


def record_files(ledger: Ledger, files: Iterable[tuple[str, str, FileStat]]) -> None:
    """(doc_id, stored path, stat when probed) of the file each document is read from."""
    with ledger.transaction() as db:
        db.executemany(
            "INSERT OR REPLACE INTO doc_files (doc_id, path, size, mtime_ns, inode, ctime_ns) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(d, p, st.size, st.mtime_ns, st.inode, st.ctime_ns) for d, p, st in files],
        )


def document_file(ledger: Ledger, doc_id: str) -> tuple[str, FileStat] | None:
    """(stored path, its stat when planned) the document's pages must be rendered from;
    ctime 0 where an older ledger did not record it."""
    rows = ledger.query(
        "SELECT path, size, mtime_ns, ctime_ns, inode FROM doc_files WHERE doc_id=?", [doc_id]
    )
    if not rows:
        return None
    path, size, mtime_ns, ctime_ns, inode = rows[0]
    return path, FileStat(int(size), int(mtime_ns), int(ctime_ns or 0), int(inode))


def retire(db: sqlite3.Connection, doc_id: str, reason: str) -> None:
    """Forget a document whose bytes no input holds any more (inside a transaction).

    Its pages go too: they were results of bytes that are gone, and the bytes now at its
    path are a new document with pages of their own."""
    row = db.execute("SELECT source, rel FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
    if row is None:
        return
    note_stale(db, row[1], doc_id[:12], f"{row[0]} retired: {reason}")
    db.execute(
        "INSERT OR REPLACE INTO retired (doc_id, source, reason, at) VALUES (?, ?, ?, ?)",
        (doc_id, row[0], reason, time.time()),
    )
    for source, rel in db.execute(
        "SELECT source, rel FROM duplicates WHERE doc_id=?", (doc_id,)
    ).fetchall():
        note_stale(db, rel, copy_key(source), f"{source}: a copy of a retired document")
    for table in ("page_text", "pages", "aliases", "duplicates", "doc_files", "documents"):
        db.execute(f"DELETE FROM {table} WHERE doc_id=?", (doc_id,))


def copy_key(source: str) -> str:
    """Where a copy's stale outputs are set aside (OUT/retired/<key>)."""
    return "copy-" + short_hash(source)


def _drop_stale_copies(db: sqlite3.Connection, listed: dict[str, str]) -> None:
    """Copies whose path no longer holds their document's bytes (removed, moved, edited)
    stop being copies now, before names are handed out: an edited copy's new document can
    have its name."""
    rows = db.execute("SELECT source, doc_id, path, rel FROM duplicates").fetchall()
    for source, doc_id, path, rel in rows:
        if listed.get(path) != doc_id:
            db.execute("DELETE FROM duplicates WHERE source=?", (source,))
            note_stale(db, rel, copy_key(source), f"{source} is no longer a copy")


# A finished document is assembled again (from the ledger) when it is re-pointed or renamed.
REASSEMBLE = (
    "assembler=NULL, status=CASE WHEN status IN ('done', 'failed', 'assembling') AND EXISTS "
    "(SELECT 1 FROM pages p WHERE p.doc_id=documents.doc_id) THEN 'pending' ELSE status END"
)


def _repoint(db: sqlite3.Connection, doc_id: str, new_path: str, source: str) -> None:
    """The document is read from `new_path` now (its file moved, or a copy names it): its
    files are written again (records carry `source`). A copy at that path is no copy any
    more: its output name is free for the document (see rename_documents)."""
    db.execute("DELETE FROM duplicates WHERE doc_id=? AND path=?", (doc_id, new_path))
    db.execute(
        f"UPDATE documents SET path=?, source=?, {REASSEMBLE} WHERE doc_id=?",
        (new_path, source, doc_id),
    )


def rename_documents(ledger: Ledger, names: dict[str, str]) -> int:
    """Re-pointed documents take the output name planned for their new path (a moved
    corpus keeps its names; a copy that now names the document gives it its own): the old
    name's files are set aside, its figures move along. Returns how many were renamed."""
    renames: dict[str, str] = {}
    with ledger.transaction() as db:
        for doc_id, rel in names.items():
            row = db.execute("SELECT rel, source FROM documents WHERE doc_id=?", (doc_id,))
            old = row.fetchone()
            if old is None or old[0] == rel:
                continue
            note_stale(db, old[0], doc_id[:12], f"{old[1]} is named {rel} now", figures_to=rel)
            # Names are unique: two documents may swap theirs, so each lets go first.
            db.execute("UPDATE documents SET rel=? WHERE doc_id=?", ("\0" + doc_id, doc_id))
            renames[doc_id] = rel
        for doc_id, rel in renames.items():
            db.execute(f"UPDATE documents SET rel=?, {REASSEMBLE} WHERE doc_id=?", (rel, doc_id))
    return len(renames)


def reconcile(
    ledger: Ledger,
    listed: dict[str, str],
    primary: dict[str, tuple[str, str]],
    moved_ids: list[str] | None = None,
) -> tuple[int, int]:
    """Bring known documents in line with the files listed now. Returns (retired, moved).

    `listed` maps every listed stored path to the content id it holds now; `primary` maps
    this shard's content ids to (stored path, source) of the path that names them. The ids
    of re-pointed documents are appended to `moved_ids`.
    """
    ids_now = set(listed.values())
    retired = moved = 0
    with ledger.transaction() as db:
        _drop_stale_copies(db, listed)
        known = db.execute("SELECT doc_id, path FROM documents").fetchall()
        for doc_id, path in known:
            now = listed.get(path)
            # A file that could not be read now (a passing NFS or permission error) says
            # nothing about its bytes: its document and finished pages stay as they are.
            if (
                now is not None
                and not now.startswith(UNREADABLE_PREFIX)
                and now != doc_id
                and doc_id not in ids_now
            ):
                retire(db, doc_id, f"{path} now holds other bytes (content {now[:12]})")
                retired += 1
            elif doc_id in primary and listed.get(path) != doc_id:
                new_path, source = primary[doc_id]
                _repoint(db, doc_id, new_path, source)
                moved += 1
                if moved_ids is not None:
                    moved_ids.append(doc_id)
    return retired, moved


def taken_names(ledger: Ledger) -> dict[str, str]:
    """Output names in use (casefolded) → the key holding them (doc id, or dup:<hash>)."""
    docs = ledger.query("SELECT rel, doc_id FROM documents")
    dups = ledger.query("SELECT rel, source FROM duplicates")
    taken = {str(rel).casefold(): doc_id for rel, doc_id in docs}
    taken.update({str(rel).casefold(): "dup:" + short_hash(src) for rel, src in dups})
    return taken


def record_duplicates(ledger: Ledger, dups: Iterable[Duplicate]) -> None:
    """Make the table exactly `dups` (this shard's copies as planned now)."""
    dups = list(dups)
    current = {dup.source: dup for dup in dups}
    with ledger.transaction() as db:
        for source, doc_id, rel in db.execute(
            "SELECT source, doc_id, rel FROM duplicates"
        ).fetchall():
            now = current.get(source)
            if now is None or now.doc_id != doc_id:
                db.execute("DELETE FROM duplicates WHERE source=?", (source,))
                note_stale(db, rel, copy_key(source), f"{source} is no longer a copy of it")
        for dup in dups:
            row = db.execute(
                "SELECT doc_id FROM duplicates WHERE source=?", (dup.source,)
            ).fetchone()
            if row is not None and row[0] == dup.doc_id:
                db.execute("UPDATE duplicates SET path=? WHERE source=?", (dup.path, dup.source))
                continue
            db.execute(
                "INSERT OR REPLACE INTO duplicates (source, doc_id, path, rel) VALUES (?, ?, ?, ?)",
                (dup.source, dup.doc_id, dup.path, dup.rel),
            )
        # Never a copy at the path its document is read from (a copy of itself).
        db.execute(
            "DELETE FROM duplicates WHERE EXISTS (SELECT 1 FROM documents d "
            "WHERE d.doc_id=duplicates.doc_id AND d.path=duplicates.path)"
        )


def surviving_duplicate(ledger: Ledger, doc_id: str, gone: str) -> Duplicate | None:
    """A duplicate path of the document other than `gone` that is still there."""
    for dup in duplicates(ledger):
        if dup.doc_id == doc_id and dup.path != gone and os.path.lexists(text_to_path(dup.path)):
            return dup
    return None


def hand_over(db: sqlite3.Connection, doc_id: str, heir: Duplicate) -> None:
    """The document's file now holds other bytes, but a duplicate path still holds its own
    (inside a transaction): the document moves there, to that path, source and output name,
    with every page it has; it is assembled again under that name when its pages are all
    finished. Its old name is free for the new bytes (its files are set aside, its figures
    move along to the new name)."""
    old = db.execute("SELECT rel FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
    if old is not None:
        note_stale(db, old[0], doc_id[:12], f"{heir.source} took over", figures_to=heir.rel)
    db.execute(
        "UPDATE documents SET path=?, source=?, rel=?, assembler=NULL, status=CASE "
        "WHEN status IN ('done', 'failed', 'assembling') THEN 'pending' ELSE status END "
        "WHERE doc_id=?",
        (heir.path, heir.source, heir.rel, doc_id),
    )
    db.execute("DELETE FROM duplicates WHERE source=?", (heir.source,))
    st = Path(text_to_path(heir.path)).stat()
    db.execute(
        "INSERT OR REPLACE INTO doc_files (doc_id, path, size, mtime_ns, inode, ctime_ns) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (doc_id, heir.path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns),
    )


def duplicates(ledger: Ledger) -> list[Duplicate]:
    rows = ledger.query("SELECT source, doc_id, path, rel FROM duplicates ORDER BY source")
    return [Duplicate(*r) for r in rows]


def record_listing(
    ledger: Ledger, entries: Iterable[tuple[str, str, int, int]], num_shards: int
) -> None:
    """The corpus this shard saw: (doc_id, source, shard, pages) of every document, so
    `status` can find documents that no shard has claimed. Replaced at every planning."""
    now = time.time()
    with ledger.transaction() as db:
        db.execute("DELETE FROM corpus_listing")
        # When it was listed, also for an empty listing: it still says what is gone.
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (LISTED_AT_KEY, repr(now))
        )
        db.executemany(
            "INSERT OR REPLACE INTO corpus_listing (doc_id, source, shard, num_shards, pages, "
            "seen_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(d, s, shard, num_shards, p, now) for d, s, shard, p in entries],
        )


def sibling_names(ledger_paths: Iterable[Path]) -> dict[str, str]:
    """Output names held by the other shards' ledgers in OUT (read-only, best effort): a
    shard must not hand out a name another shard's document already writes to."""
    taken: dict[str, str] = {}
    for path in ledger_paths:
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
            try:
                rows = db.execute("SELECT rel, doc_id FROM documents").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("cannot read the output names of %s (%s): clashes not checked", path, exc)
            continue
        taken.update({str(rel).casefold(): str(doc_id) for rel, doc_id in rows})
    return taken
