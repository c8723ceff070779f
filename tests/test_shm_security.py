"""/dev/shm page files against another local user: unpredictable names, exclusive no-follow
creation, mode 0600, only our own regular files taken or swept; none outlive a kill -9
past the next run's start."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ocrfleet.handover import ShmFiles
from ocrfleet.page import RenderRequest, RenderSettings
from ocrfleet.render import DocumentCache, render_page
from ocrfleet.testing import samples
from tests.conftest import run_cli

PAGE = memoryview(b"page image bytes " * 64)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious\n", encoding="utf-8")
    return path


def test_names_are_unpredictable_and_files_private() -> None:
    shm = ShmFiles()
    old = os.umask(0)
    try:
        paths = [shm.write(PAGE) for _ in range(3)]
    finally:
        os.umask(old)
    assert all(p is not None for p in paths)
    names = [Path(p).name for p in paths if p is not None]
    try:
        suffixes = {name.rsplit("-", 1)[1] for name in names}
        assert len(suffixes) == 3 and all(len(s) >= 32 for s in suffixes)  # 128 random bits
        assert all(Path(p).stat().st_mode & 0o777 == 0o600 for p in paths if p)
    finally:
        for p in paths:
            if p:
                Path(p).unlink(missing_ok=True)


def test_a_planted_file_or_symlink_is_never_written_read_or_removed(
    victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker who guessed the next name: a symlink to a file of root's, then a file
    of their own waiting to receive page images."""
    guessed = "f" * 32
    monkeypatch.setattr(secrets, "token_hex", lambda _n=16: guessed)
    shm = ShmFiles()
    planted = ShmFiles.ROOT / f"{shm.prefix}{guessed}"
    try:
        planted.symlink_to(victim)
        assert shm.write(PAGE) is None  # the page goes by pipe instead
        assert victim.read_text("utf-8") == "precious\n" and planted.is_symlink()
        maker = shm.bitmap_maker()
        assert maker._file_memory(4096) is None
        maker.discard()
        assert planted.is_symlink()  # not removed either
        planted.unlink()
        planted.write_bytes(b"")  # a regular file, the attacker's
        planted.chmod(0o666)
        assert shm.write(PAGE) is None
        assert planted.read_bytes() == b""  # no page image leaked into it
    finally:
        planted.unlink(missing_ok=True)


def test_the_receiver_takes_only_its_own_regular_files(victim: Path) -> None:
    link = ShmFiles.ROOT / f"ocrfleet-{os.getpid()}-{os.getpid()}-{secrets.token_hex(16)}"
    link.symlink_to(victim)
    try:
        with pytest.raises(OSError):
            ShmFiles.take(str(link), 8)
        assert victim.exists() and link.is_symlink()
    finally:
        link.unlink(missing_ok=True)
    if os.geteuid() == 0:
        foreign = link.with_name(link.name + "x")
        foreign.write_bytes(b"x" * 16)
        os.chown(foreign, 65534, 65534)
        try:
            with pytest.raises(PermissionError):
                ShmFiles.take(str(foreign), 8)
        finally:
            foreign.unlink(missing_ok=True)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_runs_page_files_go_when_the_next_run_starts(tmp_path: Path) -> None:
    """Even a run with nothing left to do sweeps them; another user's look-alikes stay."""
    pdf = samples.text_pdf(tmp_path / "in" / "a.pdf", ["one page"])
    out = tmp_path / "out"
    run = ("run", str(pdf), "-o", str(out), "--engine", "text", "--no-progress")
    assert run_cli(*run).returncode == 0
    gone = dead_pid()
    leftover = ShmFiles.ROOT / f"ocrfleet-{gone}-{gone}-{secrets.token_hex(16)}"
    leftover.write_bytes(b"a page image")
    foreign = ShmFiles.ROOT / f"ocrfleet-{gone}-{gone}-{secrets.token_hex(16)}"
    foreign.write_bytes(b"someone else's")
    if os.geteuid() == 0:
        os.chown(foreign, 65534, 65534)
    try:
        assert run_cli(*run).returncode == 0  # nothing pending: no worker starts
        assert not leftover.exists()
        if os.geteuid() == 0:
            assert foreign.exists()
    finally:
        leftover.unlink(missing_ok=True)
        foreign.unlink(missing_ok=True)


def test_pages_still_render_through_files_and_arrive_intact(tmp_path: Path) -> None:
    pdf = samples.text_pdf(tmp_path / "a.pdf", [samples.paragraph(0)])
    docs = DocumentCache()
    try:
        plain = render_page(docs, RenderRequest("d", str(pdf), 1), RenderSettings())
        shm = ShmFiles()
        via_file = render_page(docs, RenderRequest("d", str(pdf), 1), RenderSettings(), shm)
    finally:
        docs.close()
    assert via_file.pixels_path is not None and plain.pixels is not None
    size = via_file.height * via_file.stride
    drawn = np.frombuffer(via_file.pixels, np.uint8, count=size).copy()  # type: ignore[arg-type]
    path = via_file.pixels_path
    via_file.pixels = via_file.owner = None
    mapped = ShmFiles.take(path, size)
    assert not Path(path).exists()
    assert np.array_equal(np.frombuffer(mapped, np.uint8, count=size), drawn)
    assert np.array_equal(drawn, np.frombuffer(plain.pixels, np.uint8, count=size))


def test_page_files_of_a_reused_pid_are_swept() -> None:
    """The pid in a leftover's name now belongs to a process started after the file was
    written (here: this test's own process, the file dated a day back): it is an orphan."""
    reused = ShmFiles.ROOT / f"ocrfleet-{os.getpid()}-{os.getpid()}-{secrets.token_hex(16)}"
    fresh = ShmFiles.ROOT / f"ocrfleet-{os.getpid()}-{os.getpid()}-{secrets.token_hex(16)}"
    reused.write_bytes(b"old page")
    fresh.write_bytes(b"a page in flight")
    day_ago = reused.stat().st_mtime - 86_400
    os.utime(reused, (day_ago, day_ago))
    try:
        ShmFiles.sweep_orphans()
        assert not reused.exists() and fresh.exists()
    finally:
        reused.unlink(missing_ok=True)
        fresh.unlink(missing_ok=True)
