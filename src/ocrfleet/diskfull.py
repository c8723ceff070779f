"""A full disk stops the run cleanly: one line, exit 3, the ledger consistent.

Every ledger write is one transaction, so a write that finds no room leaves the ledger as
it was; the pages not yet stored are simply still to do. What must not happen is a
traceback, a supervisor that dies without stopping its workers, or workers restarted over
and over into the same full disk. An engine worker that hits it exits with EXIT_DISK_FULL;
the supervisor stops every worker and raises DiskFull, which the CLI reports in one line
with exit status 3 (the run stopped with pages left). Resuming on a disk with room gives
the same outputs as an uninterrupted run.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import sys
from pathlib import Path

from .errors import OcrfleetError

EXIT_DISK_FULL = 5  # an engine worker's exit status
SQLITE_FULL = 13
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFull(OcrfleetError):
    """No room left where the run writes; resume once there is."""

    def __init__(self, output_dir: Path | str, detail: str = "") -> None:
        self.output_dir = str(output_dir)
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"the disk holding {self.output_dir} is full{why}: the run stopped, the ledger "
            "keeps every finished page. Free some space (or copy the output directory to a "
            "bigger disk) and run the same command again to resume"
        )


def is_disk_full(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception it was raised from, says the disk (or quota) is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull):
            return True
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if isinstance(exc, sqlite3.OperationalError) and (
            getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc)
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def detail(exc: BaseException) -> str:
    """A short reason for the message: the OS's or SQLite's words, no traceback."""
    if isinstance(exc, OSError):
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or 'no space left on device'}{where}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class LogFileHandler(logging.FileHandler):
    """A log file that stays quiet when the disk is full: logging's own error report (a
    traceback on stderr for every record) would bury the one line that says what happened.
    Other errors are reported as usual."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if is_disk_full(sys.exc_info()[1]):
            return
        super().handleError(record)

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:  # the last flush found no room either
            if not is_disk_full(exc):
                raise
