"""Outputs whose text no longer belongs to an input path, moved out of the way.

When planning or a worker re-plans a document, some files under OUT stop being the current
output of anything: a retired document's (its path now holds other bytes), a copy's that is
no longer a copy (removed, edited, moved), a document's old name after it took a copy's.
The ledger notes each such name in the same transaction as the change (`note_stale`), and
`set_aside` then moves its Markdown, JSONL and figures to OUT/retired/<key>/ (the same
layout), so no stale text sits where the manifest or a reader expects the current output of
an input; nothing is deleted. A note left by a crash, or whose move failed (EACCES, EROFS),
is acted on at the next planning; onto another filesystem (EXDEV) a move is a copy, then a
removal. A second set-aside under a key already used goes to a folder named after the note's
time (`aside_name`). Each settled note is queued for the bucket of --sync-to (table
stale_remote, acted on by stale_remote.py).

Only files written before the note are moved: a file newer than it was written by whoever
holds the name now (the new bytes at the same path). A name held in another shard's ledger
is left alone: that shard writes it. A document that took a copy's name takes its figures
along (`figures_to`): its stored pages link them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .layout import RETIRED_DIR, OutputLayout
from .ledger import Ledger
from .names import short_hash
from .redact import redact

log = logging.getLogger(__name__)


def note_stale(
    db: sqlite3.Connection, rel: str, key: str, reason: str, figures_to: str | None = None
) -> None:
    """Inside the transaction that frees `rel`: its files are to be set aside under `key`."""
    db.execute(
        "INSERT OR REPLACE INTO stale_outputs (rel, key, reason, figures_to, at) "
        "VALUES (?, ?, ?, ?, ?)",
        (rel, key, reason, figures_to, time.time()),
    )


def held_elsewhere(ledger_paths: Iterable[Path]) -> set[str]:
    """Output names (casefolded) the other shards' ledgers hold (read-only, best effort)."""
    held: set[str] = set()
    for path in ledger_paths:
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
            try:
                for table in ("documents", "duplicates"):
                    held.update(
                        str(r[0]).casefold() for r in db.execute(f"SELECT rel FROM {table}")
                    )
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("cannot read the output names of %s (%s)", path, exc)
    return held


def _move(source: Path, target: Path, before: float | None) -> bool | None:
    """Move `source` to `target` if it was written before `before` (None: in any case).
    True: moved; False: nothing to move (gone, or newer); None: the move failed."""
    try:
        if before is not None and source.stat().st_mtime > before:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            source.replace(target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_across(source, target)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot move %s to %s (retried at the next planning): %s", source, target, exc)
        return None
    return True


def _copy_across(source: Path, target: Path) -> None:
    """A move onto another filesystem (OUT/retired mounted apart): the copy takes its final
    name whole (a rename on its own filesystem), and only then does the source go; a source
    that cannot go takes its copy back, so the note's retry finds things as they were."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.copy2(source, partial)  # the time too: a file's age decides what moves
    partial.replace(target)
    try:
        source.unlink()
    except OSError:
        with contextlib.suppress(OSError):
            target.unlink()
        raise


def aside_name(key: str, at: float, taken: Callable[[str], bool]) -> str:
    """The folder under OUT/retired for a note: its key, or when an earlier set-aside under
    that key holds the same files, a name from the note's time, so neither is overwritten."""
    if not taken(key):
        return key
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at))
    name, n = f"{key}~{stamp}", 1
    while taken(name):
        n += 1
        name = f"{key}~{stamp}-{n}"
    return name


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _remove_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # newer figures of the name's new holder stay
        folder.rmdir()


@dataclass(frozen=True)
class _Note:
    rel: str
    key: str
    reason: str
    figures_to: str | None
    at: float


class _Pass:
    """The notes of one planning, acted on together: a renamed document's figures are
    staged first, so a chain of renames (a→b, b→c), or a swap, never mixes two folders."""

    def __init__(self, root: Path, notes: list[_Note]) -> None:
        self.layout = OutputLayout(root)
        self.notes = notes
        self.moved = 0
        self.failed: set[str] = set()  # notes kept: a move failed, the next planning retries
        self._aside: dict[str, OutputLayout] = {}

    def move(self, note: _Note, source: Path, target: Path, before: float | None) -> int:
        done = _move(source, target, before)
        if done is None:
            self.failed.add(note.rel)
        return int(bool(done))

    def staging(self, note: _Note) -> Path:
        return self.layout.root / RETIRED_DIR / ".moving" / short_hash(note.rel)

    def aside(self, note: _Note) -> OutputLayout:
        if note.rel not in self._aside:
            retired = self.layout.root / RETIRED_DIR

            def taken(name: str) -> bool:
                kept = OutputLayout(retired / name)
                paths = (kept.markdown(note.rel), kept.pages(note.rel))
                return any(p.exists() for p in paths) or bool(_files(kept.figures_dir(note.rel)))

            self._aside[note.rel] = OutputLayout(retired / aside_name(note.key, note.at, taken))
        return self._aside[note.rel]

    def run(self) -> int:
        renamed = [n for n in self.notes if n.figures_to is not None]
        for note in renamed:
            for figure in _files(self.layout.figures_dir(note.rel)):
                self.move(note, figure, self.staging(note) / figure.name, note.at)
        for note in self.notes:
            aside, layout = self.aside(note), self.layout
            moved = self.move(note, layout.markdown(note.rel), aside.markdown(note.rel), note.at)
            moved += self.move(note, layout.pages(note.rel), aside.pages(note.rel), note.at)
            for figure in _files(layout.figures_dir(note.rel)):
                target = aside.figures_dir(note.rel) / figure.name
                moved += self.move(note, figure, target, note.at)
            _remove_empty(layout.figures_dir(note.rel))
            if moved:  # why these files are here, next to them
                with (aside.root / "REASON.txt").open("a", encoding="utf-8") as handle:
                    handle.write(redact(f"{note.rel}: {note.reason}") + "\n")
            self.moved += moved
        for note in renamed:
            for figure in _files(self.staging(note)):
                target = self.layout.figures_dir(note.figures_to or note.rel) / figure.name
                if target.exists() and target.stat().st_mtime > note.at:
                    # Not over a figure the document wrote under its new name since.
                    target = self.aside(note).figures_dir(note.rel) / figure.name
                self.moved += self.move(note, figure, target, None)
            _remove_empty(self.staging(note))
        return self.moved


def set_aside(ledger: Ledger, root: Path, siblings: Iterable[Path] = ()) -> int:
    """Act on every note: returns how many files were moved."""
    rows = ledger.query("SELECT rel, key, reason, figures_to, at FROM stale_outputs")
    if not rows:
        return 0
    notes = [_Note(str(r[0]), str(r[1]), str(r[2]), r[3], float(r[4])) for r in rows]
    elsewhere = held_elsewhere(siblings)
    mine = [n for n in notes if n.rel.casefold() not in elsewhere]
    done = _Pass(root, mine)
    moved = done.run()
    if moved:
        log.info("%d stale output file(s) moved to %s", moved, root / RETIRED_DIR)
    settled = [n for n in notes if n.rel not in done.failed]
    with ledger.transaction() as db:  # unless noted again meanwhile
        db.executemany(
            "DELETE FROM stale_outputs WHERE rel=? AND at=?", [(n.rel, n.at) for n in settled]
        )
        # The bucket of --sync-to still holds their uploaded files (stale_remote.py); a
        # node that restored the ledger from a checkpoint has only these rows to go by.
        db.executemany(
            "INSERT OR REPLACE INTO stale_remote (rel, key, at) VALUES (?, ?, ?)",
            [(n.rel, n.key, n.at) for n in settled if n.rel.casefold() not in elsewhere],
        )
    return moved
