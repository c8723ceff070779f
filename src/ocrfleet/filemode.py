"""One rule for the mode of every file ocrfleet writes: 0666 minus the umask.

Markdown, JSONL, the summary, the ledger (with its -wal/-shm), logs, the upload manifest and
staged inputs all get what any program's new file gets under the user's umask (022: 0644,
077: 0600, 002: 0664). Atomic writes go through mkstemp (always 0600) and sqlite3 creates
databases 0644, so both are set to the rule explicitly. Exception: page images in /dev/shm
are always 0600 (handover.py): they pass between this user's processes only.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (/proc)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text("ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:  # elsewhere: set and restore (other threads could see it briefly)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def apply_file_mode(fd: int) -> None:
    """Give a file ocrfleet created (by descriptor) the rule's mode."""
    os.fchmod(fd, file_mode())


def apply_to_ledger(db_path: Path) -> None:
    """Give a ledger ocrfleet just created, and its WAL files, the rule's mode."""
    mode = file_mode()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            db_path.with_name(db_path.name + suffix).chmod(mode)
