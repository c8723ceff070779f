"""The ledger as a file: refuse one that is empty or unreadable, and read one without writing.

A ledger holds every page's progress, so ocrfleet never silently replaces it: SQLite would
happily treat a 0-byte file as a new database (all work redone), and a corrupt one fails
with a raw traceback. `check_ledger_file` names the problem in one line; with
`--fresh-ledger` the unusable file is moved aside (never deleted) and a new ledger starts.

Readers beside a running run (`status`, export) give a ledger caught mid-creation a moment
to become whole (`reader_problem`). `status` must only read: `connect_read_only` opens the
ledger without creating tables, stamping a schema version or switching the journal mode, and
works in a read-only output directory (there it reads a private copy, since SQLite cannot read
a WAL database in a directory where it may not create its shared-memory file).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from .errors import LedgerError

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
COMPANIONS = ("-wal", "-shm")
# Every ledger has it once its run's schema transaction has committed.
SCHEMA_MARK_TABLE = "pages"
# A ledger being created becomes whole within milliseconds; a loaded disk gets more.
READER_SETTLE_SECONDS = 3.0


def ledger_problem(path: Path) -> str | None:
    """Why the ledger at `path` cannot be used, or None (also when there is none yet)."""
    problem, db = _open_checked(path)
    if db is not None:
        db.close()
    return problem


def _open_checked(path: Path) -> tuple[str | None, sqlite3.Connection | None]:
    """The ledger's problem, or none and a read-only connection (none when there is no
    ledger yet)."""
    try:
        if not path.exists():
            return None, None
        if not path.is_file():
            return "the ledger is not a regular file", None
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        return f"the ledger cannot be read ({exc.strerror or exc})", None
    if not head:
        return "the ledger is empty (0 bytes): it holds no progress at all", None
    if head != SQLITE_HEADER:
        return "the ledger is corrupt (not an SQLite database)", None
    try:
        return None, connect_read_only(path)
    except LedgerError as exc:
        return (str(exc.args[0]) if exc.args else "the ledger is corrupt"), None


def reader_problem(path: Path, settle_s: float = READER_SETTLE_SECONDS) -> str | None:
    """`ledger_problem` for a reader beside a running run (status, export). A run creates
    its ledger in steps: SQLite makes an empty file, then writes its header, then commits the
    schema; a reader in between would call a healthy ledger empty or foreign. A ledger in
    such a state gets `settle_s` to become whole before it is called unusable."""
    deadline = time.monotonic() + settle_s
    while True:
        problem, being_created = _problem_seen_by_reader(path)
        if problem is None or not being_created or time.monotonic() >= deadline:
            return problem
        time.sleep(0.05)


def _problem_seen_by_reader(path: Path) -> tuple[str | None, bool]:
    """The ledger's problem, and whether it may be one that its run is still creating."""
    problem, db = _open_checked(path)
    if problem is not None:
        with contextlib.suppress(OSError):
            return problem, path.stat().st_size == 0
        return problem, False
    if db is None:
        return None, False
    try:
        found = db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            (SCHEMA_MARK_TABLE,),
        ).fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return f"the ledger is corrupt ({exc})", False
    finally:
        db.close()
    if found:
        return None, False
    return "the ledger has no ocrfleet tables (not an ocrfleet ledger)", True


def check_ledger_file(path: Path, *, fresh: bool) -> None:
    """Raise LedgerError for an empty or unreadable ledger; with `fresh`, move it aside."""
    problem = ledger_problem(path)
    if problem is None:
        return
    if not fresh:
        raise LedgerError(
            f"{path}: {problem}. Nothing was changed: restore the ledger (a checkpoint, a "
            "backup), or run again with --fresh-ledger to start a new one (every page is "
            "redone; the old file is kept aside)"
        )
    aside = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%dT%H%M%S')}")
    path.rename(aside)
    for suffix in COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(aside.with_name(aside.name + suffix))
    log.warning("%s: %s; moved aside to %s, starting a new ledger", path, problem, aside.name)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write to the ledger; LedgerError when it is unreadable."""
    try:
        db = _open(f"file:{quote(str(path))}?mode=ro")
    except sqlite3.OperationalError:
        # A read-only directory: SQLite cannot create the WAL's shared-memory file next to
        # it. Read a private copy of the database and its WAL instead.
        db = _read_copy(path)
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"the ledger is corrupt ({exc})") from None
    return db


def _open(uri: str) -> sqlite3.Connection:
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        db.row_factory = sqlite3.Row
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        db.close()
        raise
    return db


def _read_copy(path: Path) -> sqlite3.Connection:
    tmp = Path(tempfile.mkdtemp(prefix="ocrfleet-status-"))
    try:
        for suffix in ("", "-wal"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                shutil.copyfile(source, tmp / (path.name + suffix))
        try:
            # The copy is opened writable so SQLite can replay its WAL; the original is
            # never touched.
            return _open(f"file:{quote(str(tmp / path.name))}")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"the ledger cannot be read ({exc})") from None
    except OSError as exc:
        raise LedgerError(f"the ledger cannot be read ({exc.strerror or exc})") from None
    finally:
        # The open connection keeps its files; the directory entry can go (Linux).
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
