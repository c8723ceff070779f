"""`status` over shards that listed the corpus at different times (issue 11, A1): the newest
listing of each input path counts; a path a newer listing no longer holds is not unclaimed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from ocrfleet.shards import shard_of
from ocrfleet.testing import samples

from .conftest import run_cli

SHARDS = ["--num-shards", "2", "--shard-index"]


def _pdf_of_shard(path: Path, shard: int, label: str) -> Path:
    """A one-page PDF at `path` whose content id belongs to `shard` (of 2)."""
    n = 0
    while True:
        samples.text_pdf(path, [f"{label} {n}"])
        if shard_of(hashlib.sha256(path.read_bytes()).hexdigest(), 2) == shard:
            return path
        n += 1


def _status(out: Path) -> dict[str, Any]:
    result = run_cli("status", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _shard(root: Path, out: Path, index: int) -> None:
    result = run_cli("run", str(root), "-o", str(out), "--engine", "text", *SHARDS, str(index))
    assert result.returncode == 0, result.stderr


def test_status_uses_the_newest_listing_of_each_path(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    _pdf_of_shard(root / "stays0.pdf", 0, "stays in shard 0")
    _pdf_of_shard(root / "stays1.pdf", 1, "stays in shard 1")
    gone = _pdf_of_shard(root / "gone.pdf", 1, "removed before shard 1 runs")
    edited = _pdf_of_shard(root / "edited.pdf", 1, "old bytes")
    _shard(root, out, 0)  # lists the corpus first: its listing is the older one
    gone.unlink()
    _pdf_of_shard(edited, 1, "new bytes")  # the same path now holds other bytes
    _pdf_of_shard(root / "late.pdf", 0, "arrived after shard 0 ran")
    _shard(root, out, 1)
    status = _status(out)
    # Only the file that really is claimed by no shard: not the removed file, nor the
    # old bytes of the edited one, which shard 0's older listing still holds.
    assert [d["source"] for d in status["unclaimed_documents"]] == [str(root / "late.pdf")]
    assert status["unclaimed_documents"][0]["shard"] == 0
    _shard(root, out, 0)
    status = _status(out)
    assert status["unclaimed_documents"] == [] and status["progress"] == 1.0
    assert status["documents"]["done"] == 4


def test_a_listing_that_found_no_pdf_does_not_hide_the_other_shards_documents(
    tmp_path: Path,
) -> None:
    """Node 1 of a SLURM array with the corpus not mounted lists nothing (and exits 1): that
    listing must not tell `status` that shard 1's document is gone: it was never done."""
    root, out = tmp_path / "in", tmp_path / "out"
    _pdf_of_shard(root / "mine.pdf", 0, "shard 0's")
    theirs = _pdf_of_shard(root / "theirs.pdf", 1, "shard 1's")
    _shard(root, out, 0)
    assert [d["source"] for d in _status(out)["unclaimed_documents"]] == [str(theirs)]
    shutil.move(root, tmp_path / "elsewhere")
    root.mkdir()  # the mount point, empty
    empty = run_cli("run", str(root), "-o", str(out), "--engine", "text", *SHARDS, "1")
    assert empty.returncode == 1 and "no PDF found" in empty.stderr
    assert [d["source"] for d in _status(out)["unclaimed_documents"]] == [str(theirs)]
    # The same with the input missing altogether.
    root.rmdir()
    gone = run_cli("run", str(root), "-o", str(out), "--engine", "text", *SHARDS, "1")
    assert gone.returncode != 0
    assert [d["source"] for d in _status(out)["unclaimed_documents"]] == [str(theirs)]
