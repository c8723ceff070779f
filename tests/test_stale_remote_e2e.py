"""Set-aside outputs leave the bucket of --sync-to too: a copy that stops being one leaves no
stale object at its name, also on a node that resumed from the ledger checkpoint with no
local files to move (issue 11 review, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocrfleet.testing import samples
from tests.conftest import run_cli

pytest.importorskip("moto")
pytest.importorskip("s3fs")


def _corpus(root: Path) -> Path:
    samples.text_pdf(root / "a.pdf", [samples.paragraph(0)])
    (root / "copy").mkdir()
    copy = root / "copy" / "a.pdf"
    copy.write_bytes((root / "a.pdf").read_bytes())
    return copy


def _listing(bucket: str) -> set[str]:
    from ocrfleet.s3_client import make_filesystem

    fs = make_filesystem()
    fs.invalidate_cache()
    return {path.split("/", 2)[2] for path in fs.find(f"{bucket}/out")}


STALE = {"markdown/copy/a.md", "pages/copy/a.jsonl"}


def test_a_removed_copy_leaves_no_object_on_a_resumed_node(bucket: str, tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    copy = _corpus(root)
    args = ["run", str(root), "-o", f"s3://{bucket}/out", "--engine", "text"]
    first = run_cli(*args, "--work-dir", str(tmp_path / "node-1"))
    assert first.returncode == 0, first.stderr
    assert _listing(bucket) >= STALE
    copy.unlink()
    # A replacement node: only the ledger checkpoint, no local file of the copy to move.
    again = run_cli(*args, "--work-dir", str(tmp_path / "node-2"))
    assert again.returncode == 0, again.stderr
    listing = _listing(bucket)
    assert not STALE & listing, listing
    # Nothing is deleted: moved server-side under retired/<key>/, in the same layout.
    kept = {name.split("/", 2)[2] for name in listing if name.startswith("retired/")}
    assert kept >= STALE, listing
    assert "markdown/a.md" in listing
    # The manifest of uploads forgets them: a third run uploads nothing back.
    third = run_cli(*args, "--work-dir", str(tmp_path / "node-2"))
    assert third.returncode == 0, third.stderr
    assert not STALE & _listing(bucket)


def test_a_removed_copy_leaves_no_object_with_sync_to(bucket: str, tmp_path: Path) -> None:
    root, out = tmp_path / "corpus", tmp_path / "out"
    copy = _corpus(root)
    args = ["run", str(root), "-o", str(out), "--sync-to", f"s3://{bucket}/out", "--engine", "text"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert _listing(bucket) >= STALE
    copy.unlink()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    listing = _listing(bucket)
    assert not STALE & listing, listing
    assert not (out / "markdown" / "copy" / "a.md").exists()
    kept = {name.split("/", 2)[2] for name in listing if name.startswith("retired/")}
    assert kept >= STALE, listing
