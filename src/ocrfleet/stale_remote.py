"""Set-aside outputs, also in the bucket of --sync-to.

stale_outputs.py moves a stale name's local files to OUT/retired/<key>/ and queues the name
(table stale_remote). The uploader never deletes, so without this the bucket would keep the
retired or ex-copy text at the current path for good; and a node that restored the ledger
from a checkpoint has no local files to move at all. Before each upload, every queued name's
objects (Markdown, JSONL, figures) are moved server-side to <remote>/retired/<key>/ (the same
layout; a key already used there gets a name from the note's time) and their manifest
entries dropped. An object whose local file, or whose upload, is newer than the note
belongs to the name's new holder and stays, and so does a name another shard's ledger
checkpoint in the bucket holds.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .layout import LEDGER_NAME, REMOTE_LEDGER_DIR, RETIRED_DIR, OutputLayout
from .output_sync import OutputSync
from .s3_client import download, object_mtime, with_retries
from .stale_outputs import aside_name, held_elsewhere

log = logging.getLogger(__name__)
# An object stamped this much after a note was uploaded after it (S3's clock is not ours).
CLOCK_SLACK_S = 5.0


@dataclass(frozen=True)
class RemoteNote:
    rel: str
    key: str
    at: float


def queued(ledger_path: Path) -> list[RemoteNote]:
    db = sqlite3.connect(ledger_path, timeout=60)
    try:
        rows = db.execute("SELECT rel, key, at FROM stale_remote").fetchall()
    except sqlite3.OperationalError:  # a ledger of an older ocrfleet: nothing queued
        rows = []
    finally:
        db.close()
    return [RemoteNote(str(r[0]), str(r[1]), float(r[2])) for r in rows]


def _settle(ledger_path: Path, notes: list[RemoteNote]) -> None:
    db = sqlite3.connect(ledger_path, timeout=60)
    try:
        with db:  # unless queued again meanwhile
            db.executemany(
                "DELETE FROM stale_remote WHERE rel=? AND at=?", [(n.rel, n.at) for n in notes]
            )
    finally:
        db.close()


class _Bucket:
    def __init__(self, sync: OutputSync) -> None:
        self.sync = sync
        self.moved = 0
        self.local = OutputLayout(sync.local_dir)

    def call(self, what: str, action: Any) -> Any:
        sync = self.sync
        return with_retries(action, f"{what} in {sync.remote}", sync.retries, sync.backoff)

    def info(self, rel: str) -> dict[str, Any] | None:
        path = self.sync.remote_path(rel)
        try:
            found: dict[str, Any] = self.call(f"stat {rel}", lambda: self.sync.fs.info(path))
        except FileNotFoundError:
            return None
        return found

    def exists(self, rel: str) -> bool:
        return self.info(rel) is not None

    def rel_of(self, path: Path) -> str:
        return path.relative_to(self.local.root).as_posix()

    def under(self, folder: str) -> list[str]:
        """Objects below `folder` (relative paths)."""
        root = self.sync.remote_path(folder)
        try:
            found: list[str] = self.call(f"list {folder}", lambda: self.sync.fs.find(root))
        except FileNotFoundError:
            return []
        start = len(self.sync.remote_path(""))
        return [name[start:] for name in found if name.startswith(root + "/")]

    def names(self, note: RemoteNote) -> list[str]:
        """The note's output files, relative to the output directory."""
        files = [
            self.rel_of(self.local.markdown(note.rel)),
            self.rel_of(self.local.pages(note.rel)),
        ]
        return files + self.under(self.rel_of(self.local.figures_dir(note.rel)))

    def target_root(self, note: RemoteNote) -> str:
        def taken(name: str) -> bool:
            kept = OutputLayout(self.local.root / RETIRED_DIR / name)
            paths = (kept.markdown(note.rel), kept.pages(note.rel))
            return any(self.exists(self.rel_of(p)) for p in paths) or bool(
                self.under(self.rel_of(kept.figures_dir(note.rel)))
            )

        return f"{RETIRED_DIR}/{aside_name(note.key, note.at, taken)}"

    def set_aside(self, note: RemoteNote) -> list[str]:
        """Move the note's objects aside; returns the relative paths no longer in place."""
        gone: list[str] = []
        root: str | None = None
        fs = self.sync.fs
        for rel in self.names(note):
            local = self.local.root / rel
            if local.exists() and local.stat().st_mtime > note.at:
                continue  # the name's new holder wrote it after the note
            info = self.info(rel)
            when = object_mtime(info) if info is not None else None
            if when is not None and when > note.at + CLOCK_SLACK_S:
                continue  # uploaded by the new holder (a replayed checkpoint's queue)
            gone.append(rel)
            if info is None:
                continue
            root = root or self.target_root(note)
            source, target = self.sync.remote_path(rel), self.sync.remote_path(f"{root}/{rel}")
            self.call(f"copy {rel}", lambda s=source, t=target, fs=fs: fs.copy(s, t))
            self.call(f"remove {rel}", lambda s=source, fs=fs: fs.rm(s))
            self.moved += 1
        return gone


def _held_by_other_shards(bucket: _Bucket, own: str) -> set[str]:
    """Names (casefolded) the other shards' ledger checkpoints in the bucket hold: each
    shard syncs from its own directory, and a name another shard holds is its to write."""
    mine = LEDGER_NAME.match(own)
    if mine is None or mine.group(2) is None:
        return set()  # unsharded: no sibling (as plan._siblings)
    names = [PurePosixPath(rel).name for rel in bucket.under(REMOTE_LEDGER_DIR)]
    others = [
        n for n in names if (m := LEDGER_NAME.match(n)) and m.group(2) == mine.group(2) and n != own
    ]
    if not others:
        return set()
    sync = bucket.sync
    with tempfile.TemporaryDirectory(prefix="ocrfleet-shards-") as tmp:
        paths: list[Path] = []
        for name in others:
            rel = f"{REMOTE_LEDGER_DIR}/{name}"
            info = bucket.info(rel)
            if info is not None:
                local = Path(tmp) / name
                download(sync.fs, sync.remote_path(rel), local, info, sync.retries, sync.backoff)
                paths.append(local)
        return held_elsewhere(paths)


def set_aside_remote(sync: OutputSync, ledger_path: Path) -> int:
    """Act on every queued name; returns how many objects were moved. A failure
    raises (the sync fails and is retried) and leaves the names queued."""
    notes = queued(ledger_path)
    if not notes:
        return 0
    sync.fs.invalidate_cache()
    bucket = _Bucket(sync)
    elsewhere = _held_by_other_shards(bucket, ledger_path.name)
    mine = [note for note in notes if note.rel.casefold() not in elsewhere]
    gone = [rel for note in mine for rel in bucket.set_aside(note)]
    sync.forget(gone)
    _settle(ledger_path, notes)
    if bucket.moved:
        log.info("%d stale output(s) set aside in %s/%s", bucket.moved, sync.remote, RETIRED_DIR)
    return bucket.moved
