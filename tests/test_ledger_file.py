"""An unusable ledger is refused in one line, never silently replaced; status only reads."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument
from ocrfleet.testing import samples
from tests.conftest import run_cli


def ledger_of(out: Path) -> Path:
    return out / "ocrfleet.sqlite"


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def done_run(tmp_path: Path) -> tuple[Path, Path]:
    pdf = samples.text_pdf(tmp_path / "in" / "a.pdf", [samples.paragraph(0)])
    out = tmp_path / "out"
    result = run_cli("run", str(pdf), "-o", str(out), "--engine", "text", "--no-progress")
    assert result.returncode == 0, result.stderr
    return pdf, out


def test_a_zero_byte_ledger_is_refused_unless_a_fresh_start_is_asked(
    done_run: tuple[Path, Path],
) -> None:
    pdf, out = done_run
    ledger_of(out).write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        ledger_of(out).with_name("ocrfleet.sqlite" + suffix).unlink(missing_ok=True)
    run = ("run", str(pdf), "-o", str(out), "--engine", "text", "--no-progress")
    refused = run_cli(*run)
    assert refused.returncode == 2
    line = one_line_error(refused.stderr)
    assert "ocrfleet.sqlite" in line and "empty" in line and "--fresh-ledger" in line
    assert ledger_of(out).stat().st_size == 0  # nothing was changed
    status = run_cli("status", str(out))
    assert status.returncode == 2 and "empty" in one_line_error(status.stderr)
    fresh = run_cli(*run, "--fresh-ledger")
    assert fresh.returncode == 0, fresh.stderr
    assert ledger_of(out).stat().st_size > 0
    kept = list(out.glob("ocrfleet.sqlite.unusable-*"))
    assert len(kept) == 1 and kept[0].stat().st_size == 0  # moved aside, never deleted


def test_a_corrupt_ledger_fails_in_one_line_for_run_and_status(
    done_run: tuple[Path, Path],
) -> None:
    pdf, out = done_run
    path = ledger_of(out)
    data = bytearray(path.read_bytes())
    data[: len(b"SQLite format 3\x00")] = b"garbage garbage!"
    path.write_bytes(bytes(data))
    for args in (
        ("run", str(pdf), "-o", str(out), "--engine", "text", "--no-progress"),
        ("status", str(out)),
    ):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "ocrfleet.sqlite" in one_line_error(result.stderr)


def test_a_ledger_damaged_inside_fails_in_one_line(done_run: tuple[Path, Path]) -> None:
    pdf, out = done_run
    path = ledger_of(out)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(3996)  # the schema page, its header intact
    path.write_bytes(bytes(data))
    result = run_cli("run", str(pdf), "-o", str(out), "--engine", "text", "--no-progress")
    assert result.returncode == 2
    assert "ocrfleet.sqlite" in one_line_error(result.stderr)


def old_ledger(path: Path) -> None:
    """A ledger as an early ocrfleet wrote it: no meta (version) table."""
    ledger = Ledger(path)
    ledger.add_documents([NewDocument("a" * 64, "a.pdf", "/in/a.pdf", "a", 1, 3)])
    ledger.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE meta")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.name.endswith("-shm")  # readers may touch the WAL index
    }


def test_status_only_reads_an_old_ledger(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old_ledger(ledger_of(out))
    before = digest(out)
    result = run_cli("status", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert '"pending": 3' in result.stdout
    assert digest(out) == before  # no version stamped, no journal switched, no file added
    with sqlite3.connect(ledger_of(out)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert "meta" not in tables


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """OUT and a read-only bind mount of it (as root, chmod would not stop a write)."""
    out, view = tmp_path / "out", tmp_path / "view"
    out.mkdir()
    view.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    try:
        subprocess.run(["mount", "--bind", str(out), str(view)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount: {exc}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(view)], check=True, capture_output=True
        )
        yield out, view
    finally:
        subprocess.run(["umount", str(view)], check=False, capture_output=True)


def test_status_works_on_a_read_only_output_dir(read_only_view: tuple[Path, Path]) -> None:
    out, view = read_only_view
    ledger = Ledger(ledger_of(out))  # a live WAL ledger, its last writes not checkpointed
    ledger.add_documents([NewDocument("b" * 64, "b.pdf", "/in/b.pdf", "b", 1, 4)])
    result = run_cli("status", str(view), "--json")
    ledger.close()
    assert result.returncode == 0, result.stderr
    assert '"pending": 4' in result.stdout


def test_damage_deep_inside_the_ledger_fails_in_one_line_when_it_is_read(
    tmp_path: Path,
) -> None:
    """The schema reads fine; the pages table's own pages are garbage."""
    pdf = samples.long_pdf(tmp_path / "in" / "a.pdf", 120)
    out = tmp_path / "out"
    run = ("run", str(pdf), "-o", str(out), "--engine", "text", "--no-progress")
    assert run_cli(*run).returncode == 0
    path = ledger_of(out)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages_root = db.execute("SELECT rootpage FROM sqlite_master WHERE name='pages'").fetchone()[
            0
        ]
    data = bytearray(path.read_bytes())
    start = (pages_root - 1) * page_size
    data[start : start + page_size] = b"\xff" * page_size
    path.write_bytes(bytes(data))
    for args in (run, ("status", str(out))):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        line = one_line_error(
            "\n".join(x for x in result.stderr.splitlines() if x.startswith("ocrfleet:"))
        )
        assert "ledger" in line and "Traceback" not in result.stderr


def _being_created(path: Path, stage: str) -> None:
    """The ledger as a run leaves it for a moment while creating it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if stage == "empty file":
        path.touch()  # sqlite3.connect's open(O_CREAT)
    else:
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")  # the header, before the schema commits
        db.close()


@pytest.mark.parametrize("stage", ["empty file", "header, no tables yet"])
def test_status_and_export_wait_for_a_ledger_that_its_run_is_creating(
    tmp_path: Path, stage: str
) -> None:
    """A reader that catches a run's ledger mid-creation (CI saw `no such table: pages`) waits
    for its schema instead of calling a healthy ledger empty or foreign."""
    import threading

    from ocrfleet.export import ExportOptions, export
    from ocrfleet.status import collect_status

    out = tmp_path / "out"
    for documents in (  # a new ledger: no document yet, and no error
        lambda: sum(collect_status(out)["documents"].values()),
        lambda: export(ExportOptions((str(out),), tmp_path / "export", format="jsonl")).documents,
    ):
        path = ledger_of(out)
        for leftover in out.glob("ocrfleet.sqlite*"):
            leftover.unlink()
        _being_created(path, stage)

        def finish_creating(path: Path = path) -> None:
            time.sleep(0.5)
            Ledger(path).close()

        creator = threading.Thread(target=finish_creating)
        creator.start()
        try:
            assert documents() == 0
        finally:
            creator.join()


@pytest.mark.parametrize("command", ["status", "export"])
def test_a_ledger_that_never_gets_its_tables_fails_in_one_line(
    tmp_path: Path, command: str
) -> None:
    out = tmp_path / "out"
    _being_created(ledger_of(out), "header, no tables yet")
    to = () if command == "status" else ("--to", str(tmp_path / "x"))
    result = run_cli(command, str(out), *to)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result.stderr)
    assert "ocrfleet.sqlite" in line and "no ocrfleet tables" in line
