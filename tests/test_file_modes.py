"""One rule for every file a run writes under OUT: 0666 minus the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ocrfleet.testing import samples
from tests.conftest import cli_env


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_every_output_file_follows_the_umask(tmp_path: Path, umask: int) -> None:
    pdf = samples.mixed_pdf(
        tmp_path / "in" / "doc.pdf", [("text", samples.paragraph(0)), ("blank", "")]
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "ocrfleet", "run", str(pdf), "-o", str(out), "--engine", "text"],
        env=cli_env(),
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(umask),
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"ocrfleet.sqlite", "run.log", "doc.md", "doc.jsonl"} <= names
    assert any(n.endswith("summary.json") or n.startswith("summary") for n in names), names
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
