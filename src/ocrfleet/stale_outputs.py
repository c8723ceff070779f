"""Outputs whose text no longer belongs to an input path, moved out of the way.

When planning or a worker re-plans a document, some files under OUT stop being the current
output of anything: a retired document's (its path now holds other bytes), a copy's that is
no longer a copy (removed, edited, moved), a document's old name after it took a copy's.
The ledger notes each such name in the same transaction as the change (`note_stale`), and
`set_aside` then moves its Markdown, JSONL and figures to OUT/retired/<key>/ (the same
layout), so no stale text sits where the manifest or a reader expects the current output of
an input; nothing is deleted. A note left by a crash is acted on at the next planning.

Only files written before the note are moved: a file newer than it was written by whoever
holds the name now (the new bytes at the same path). A name held in another shard's ledger
is left alone: that shard writes it. A document that took a copy's name takes its figures
along (`figures_to`): its stored pages link them.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from .ledger import Ledger
from .writers import OutputLayout

log = logging.getLogger(__name__)
RETIRED_DIR = "retired"


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


def _move(source: Path, target: Path, before: float) -> bool:
    """Move `source` to `target` if it was written before `before`."""
    try:
        if source.stat().st_mtime > before:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        source.replace(target)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot move %s to %s: %s", source, target, exc)
        return False
    return True


def _set_aside_one(layout: OutputLayout, rel: str, key: str, to: str | None, at: float) -> int:
    aside = OutputLayout(layout.root / RETIRED_DIR / key)
    moved = int(_move(layout.markdown(rel), aside.markdown(rel), at))
    moved += _move(layout.pages(rel), aside.pages(rel), at)
    folder = layout.figures_dir(rel)
    if folder.is_dir():
        for figure in sorted(folder.iterdir()):
            target = aside.figures_dir(rel) / figure.name
            if to is not None:
                kept = layout.figures_dir(to) / figure.name
                # Not over a figure the document wrote under its new name since.
                if not (kept.exists() and kept.stat().st_mtime > at):
                    target = kept
            moved += _move(figure, target, at)
        with contextlib.suppress(OSError):  # newer figures of the name's new holder stay
            folder.rmdir()
    return moved


def set_aside(ledger: Ledger, root: Path, siblings: Iterable[Path] = ()) -> int:
    """Act on every note: returns how many files were moved."""
    rows = ledger.query("SELECT rel, key, reason, figures_to, at FROM stale_outputs")
    if not rows:
        return 0
    elsewhere = held_elsewhere(siblings)
    layout = OutputLayout(root)
    moved = 0
    for rel, key, reason, figures_to, at in rows:
        if str(rel).casefold() not in elsewhere:
            count = _set_aside_one(layout, str(rel), str(key), figures_to, float(at))
            if count:
                log.info(
                    "%s: %d stale output file(s) moved to %s/%s (%s)",
                    rel, count, RETIRED_DIR, key, reason,
                )  # fmt: skip
            moved += count
        with ledger.transaction() as db:  # unless noted again meanwhile
            db.execute("DELETE FROM stale_outputs WHERE rel=? AND at=?", (rel, at))
    return moved
