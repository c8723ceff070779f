"""A full disk: one line, a clean stop with exit 3, no traceback, a consistent ledger; the
same command on a disk with room finishes with outputs identical to an uninterrupted run."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocrfleet.diskfull import DiskFull, is_disk_full
from ocrfleet.testing import samples
from tests.conftest import outputs_without_timings, run_cli
from tests.mounts import tmpfs_at


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only); unmounted afterwards."""
    with tmpfs_at(tmp_path / "small", "1m") as mnt:
        yield mnt


def test_disk_full_stops_cleanly_and_resumes_identically(tmp_path: Path, small_disk: Path) -> None:
    corpus = tmp_path / "in"
    for n, pages in enumerate((40, 41, 42)):
        samples.long_pdf(corpus / f"d{n}.pdf", pages)
    reference = tmp_path / "reference"
    run = ("--engine", "text", "--no-progress")
    assert run_cli("run", str(corpus), "-o", str(reference), *run).returncode == 0

    out = small_disk / "out"
    full = run_cli("run", str(corpus), "-o", str(out), *run)
    assert full.returncode == 3, full.stderr
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("ocrfleet:")]
    assert len(errors) == 1 and "is full" in errors[0] and str(out) in errors[0], full.stderr
    with sqlite3.connect(f"file:{out / 'ocrfleet.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        pending = db.execute("SELECT COUNT(*) FROM pages WHERE status='pending'").fetchone()[0]
    assert pending > 0  # it really stopped part-way

    subprocess.run(
        ["mount", "-o", "remount,size=256m", str(small_disk)], check=True, capture_output=True
    )
    resumed = run_cli("run", str(corpus), "-o", str(out), *run)
    assert resumed.returncode == 0, resumed.stderr
    assert outputs_without_timings(out) == outputs_without_timings(reference)


def test_what_counts_as_a_full_disk() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("while writing a page") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert is_disk_full(DiskFull("/out"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))


def test_a_log_file_on_a_full_disk_stays_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    """/dev/full answers every write with ENOSPC: logging's own error report (a traceback
    per record) must not bury the one line; the plain FileHandler shows what it would be."""
    import logging

    from ocrfleet.diskfull import LogFileHandler

    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "a page failed", None, None)
    quiet = LogFileHandler("/dev/full", encoding="utf-8")
    quiet.handle(record)
    quiet.close()
    assert capsys.readouterr().err == ""
    plain = logging.FileHandler("/dev/full", encoding="utf-8")
    plain.handle(record)
    with contextlib.suppress(OSError):
        plain.close()
    assert "Logging error" in capsys.readouterr().err


def test_the_redactor_keeps_draining_when_it_cannot_write() -> None:
    from ocrfleet.redact_stream import copy_redacted

    read, write = os.pipe()
    with os.fdopen(write, "wb") as pipe:
        pipe.write(b"line one\nline two\n" * 1000)
    copy_redacted(read, Path("/dev/full"))  # returns at EOF, no exception
