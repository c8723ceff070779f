"""kill -9 of the whole run, then the same command: every page once, output as if never killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import cli_env, outputs_without_timings, read_records, run_cli
from tests.test_supervisor import finished_pages, make_corpus, wait_for

pytestmark = pytest.mark.slow


def test_kill_9_then_resume_is_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    total = make_corpus(tmp_path / "in", docs=8, pages=25)
    reference = tmp_path / "reference"
    first = run_cli(
        "run", str(tmp_path / "in"), "-o", str(reference), "--engine", "text", "--dpi", "200"
    )
    assert first.returncode == 0, first.stderr

    out = tmp_path / "out"
    in_ram_before = set(Path("/dev/shm").glob("ocrfleet-*"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ocrfleet",
            "run",
            str(tmp_path / "in"),
            "-o",
            str(out),
            "--engine",
            "text",
            "--render-workers",
            "1",
            "--dpi",
            "200",
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    wait_for(lambda: finished_pages(out) >= 30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = finished_pages(out)
    assert done_before < total, "the run finished before it could be killed"

    resumed = run_cli(
        "run", str(tmp_path / "in"), "-o", str(out), "--engine", "text", "--dpi", "200"
    )
    assert resumed.returncode == 0, resumed.stderr
    keys = Counter((r["source"], r["page"]) for r in read_records(out))
    assert len(keys) == total and set(keys.values()) == {1}
    assert outputs_without_timings(out) == outputs_without_timings(reference)
    # Page images the killed run left in /dev/shm were swept when the resumed run started.
    assert set(Path("/dev/shm").glob("ocrfleet-*")) <= in_ram_before
