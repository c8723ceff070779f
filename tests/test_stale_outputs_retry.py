"""Setting stale outputs aside: a failed move keeps its note for the next planning, and a
second set-aside under the same key keeps the first (issue 11 review, items 3 and 4)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocrfleet.layout import RETIRED_DIR, OutputLayout, ledger_path
from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument
from ocrfleet.stale_outputs import note_stale, set_aside
from tests.mounts import tmpfs_at


def _ledger(out: Path) -> Ledger:
    ledger = Ledger(ledger_path(out, 1, 0))
    ledger.add_documents([NewDocument("d" * 64, "/in/x.pdf", "/in/x.pdf", "other", 10, 1, None)])
    return ledger


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    past = time.time() - 60  # written before the note that follows
    os.utime(path, (past, past))


def _notes(ledger: Ledger) -> list[str]:
    return [str(r[0]) for r in ledger.query("SELECT rel FROM stale_outputs")]


def test_a_failed_move_keeps_its_note_and_the_next_pass_moves_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    layout = OutputLayout(out)
    ledger = _ledger(out)
    _write(layout.markdown("x"), "stale text")
    _write(layout.markdown("y"), "other stale text")
    with ledger.transaction() as db:
        note_stale(db, "x", "kx", "retired")
    # OUT/retired cannot be made (a file is in the way: a move fails with an OSError, as
    # EACCES or EXDEV would): the stale file stays, and so does its note.
    (out / RETIRED_DIR).write_text("in the way", encoding="utf-8")
    assert set_aside(ledger, out) == 0
    assert layout.markdown("x").read_text("utf-8") == "stale text"
    assert _notes(ledger) == ["x"]
    assert ledger.query("SELECT COUNT(*) FROM stale_remote")[0][0] == 0  # not yet for S3
    # Fixed: the next planning moves it and only then forgets the note.
    (out / RETIRED_DIR).unlink()
    with ledger.transaction() as db:
        note_stale(db, "y", "ky", "retired")
    assert set_aside(ledger, out) == 2
    assert not layout.markdown("x").exists()
    assert (out / RETIRED_DIR / "kx" / "markdown" / "x.md").read_text("utf-8") == "stale text"
    assert _notes(ledger) == []
    queued = sorted(str(r[0]) for r in ledger.query("SELECT rel FROM stale_remote"))
    assert queued == ["x", "y"]
    ledger.close()


@pytest.fixture
def read_only_markdown(tmp_path: Path) -> Iterator[Path]:
    """OUT whose markdown/ is a read-only bind mount of itself (as root, chmod would not
    stop a move)."""
    out = tmp_path / "out"
    markdown = OutputLayout(out).markdown_dir
    markdown.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    try:
        subprocess.run(["mount", "--bind", markdown, markdown], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount: {exc}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", markdown], check=True, capture_output=True
        )
        yield out
    finally:
        subprocess.run(["umount", markdown], check=False, capture_output=True)


def test_a_stale_file_in_a_read_only_markdown_dir_keeps_its_note(
    read_only_markdown: Path,
) -> None:
    out = read_only_markdown
    layout = OutputLayout(out)
    ledger = _ledger(out)
    subprocess.run(["mount", "-o", "remount,bind,rw", layout.markdown_dir], check=True)
    _write(layout.markdown("x"), "stale text")
    subprocess.run(["mount", "-o", "remount,bind,ro", layout.markdown_dir], check=True)
    with ledger.transaction() as db:
        note_stale(db, "x", "kx", "retired")
    assert set_aside(ledger, out) == 0  # EXDEV or EROFS: the file cannot leave
    assert layout.markdown("x").read_text("utf-8") == "stale text"
    assert _notes(ledger) == ["x"]
    subprocess.run(["umount", layout.markdown_dir], check=True)
    assert set_aside(ledger, out) == 1  # writable again: the next planning moves it
    assert (out / RETIRED_DIR / "kx" / "markdown" / "x.md").read_text("utf-8") == "stale text"
    assert _notes(ledger) == []
    ledger.close()


def test_a_second_set_aside_under_one_key_keeps_the_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    layout = OutputLayout(out)
    ledger = _ledger(out)
    for version in ("first version", "second version"):
        _write(layout.markdown("x"), version)
        _write(layout.pages("x"), version + " record")
        _write(layout.figures_dir("x") / "p0001_1.jpg", version + " figure")
        with ledger.transaction() as db:
            note_stale(db, "x", "k1", f"{version} retired")
        assert set_aside(ledger, out) == 3
        time.sleep(0.01)
    folders = sorted((out / RETIRED_DIR).iterdir())
    assert len(folders) == 2 and folders[0].name == "k1"
    assert folders[1].name.startswith("k1~")
    for folder, version in zip(folders, ("first version", "second version"), strict=True):
        kept = OutputLayout(folder)
        assert kept.markdown("x").read_text("utf-8") == version
        assert kept.pages("x").read_text("utf-8") == version + " record"
        assert (kept.figures_dir("x") / "p0001_1.jpg").read_text("utf-8") == version + " figure"
        assert f"x: {version} retired" in (folder / "REASON.txt").read_text("utf-8")
    ledger.close()


@pytest.fixture
def retired_on_another_filesystem(tmp_path: Path) -> Iterator[Path]:
    """OUT whose retired/ is a tmpfs of its own: a rename into it fails with EXDEV."""
    out = tmp_path / "out"
    with tmpfs_at(out / RETIRED_DIR, "16m"):
        yield out


def test_stale_files_move_onto_another_filesystem(retired_on_another_filesystem: Path) -> None:
    out = retired_on_another_filesystem
    layout = OutputLayout(out)
    ledger = _ledger(out)
    _write(layout.markdown("x"), "stale text")
    _write(layout.pages("x"), "stale record")
    _write(layout.figures_dir("x") / "p0001_1.jpg", "stale figure")
    written = layout.markdown("x").stat().st_mtime
    with ledger.transaction() as db:
        note_stale(db, "x", "kx", "retired")
    assert set_aside(ledger, out) == 3
    kept = OutputLayout(out / RETIRED_DIR / "kx")
    assert kept.markdown("x").read_text("utf-8") == "stale text"
    assert kept.pages("x").read_text("utf-8") == "stale record"
    assert (kept.figures_dir("x") / "p0001_1.jpg").read_text("utf-8") == "stale figure"
    assert kept.markdown("x").stat().st_mtime == written  # its age goes with it
    assert not layout.markdown("x").exists() and not layout.pages("x").exists()
    assert not list((out / RETIRED_DIR).rglob("*.partial"))
    assert _notes(ledger) == []
    ledger.close()
