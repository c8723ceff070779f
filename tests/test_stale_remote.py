"""stale_remote.set_aside_remote against a local S3 server: what stays in place and where
the moved objects go."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ocrfleet.layout import OutputLayout, ledger_path
from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument
from ocrfleet.output_sync import OutputSync
from ocrfleet.stale_remote import queued, set_aside_remote

pytest.importorskip("moto")
pytest.importorskip("s3fs")


def _uploaded(out: Path, bucket: str, rels: list[str], when: float) -> OutputSync:
    layout = OutputLayout(out)
    for rel in rels:
        for path, text in ((layout.markdown(rel), f"{rel} text"), (layout.pages(rel), "{}")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            os.utime(path, (when, when))
    sync = OutputSync(out, f"s3://{bucket}/out", retries=1, backoff=0.01)
    assert sync.upload() == 2 * len(rels)
    return sync


def _queue(ledger: Ledger, rel: str, key: str, at: float) -> None:
    with ledger.transaction() as db:
        db.execute("INSERT INTO stale_remote (rel, key, at) VALUES (?, ?, ?)", (rel, key, at))


def _objects(sync: OutputSync) -> set[str]:
    sync.fs.invalidate_cache()
    return {p.split("/", 2)[2] for p in sync.fs.find(sync.remote_path(""))}


def test_objects_of_the_names_new_holder_stay(bucket: str, tmp_path: Path) -> None:
    """A queue replayed from an older checkpoint, or a name its new holder wrote locally
    after the note: those objects are current and are not moved."""
    out = tmp_path / "out"
    ledger = Ledger(ledger_path(out, 1, 0))
    sync = _uploaded(out, bucket, ["old", "uploaded-after", "local-newer"], time.time() - 600)
    layout = OutputLayout(out)
    for rel in ("old", "uploaded-after"):  # set aside locally (or a fresh node: none)
        layout.markdown(rel).unlink()
        layout.pages(rel).unlink()
    after_upload = time.time() + 1
    _queue(ledger, "old", "k1", after_upload)
    _queue(ledger, "uploaded-after", "k2", time.time() - 300)  # noted before the upload
    _queue(ledger, "local-newer", "k3", after_upload)
    for path in (layout.markdown("local-newer"), layout.pages("local-newer")):
        os.utime(path, (after_upload + 60, after_upload + 60))  # rewritten by the new holder
    assert set_aside_remote(sync, ledger.path) == 2  # old.md, old.jsonl
    objects = _objects(sync)
    assert {"retired/k1/markdown/old.md", "retired/k1/pages/old.jsonl"} <= objects
    assert not {"markdown/old.md", "pages/old.jsonl"} & objects
    assert {"markdown/uploaded-after.md", "pages/uploaded-after.jsonl"} <= objects
    assert {"markdown/local-newer.md", "pages/local-newer.jsonl"} <= objects
    assert not any(o.startswith(("retired/k2", "retired/k3")) for o in objects)
    assert queued(ledger.path) == []
    ledger.close()


def test_a_key_already_used_in_the_bucket_keeps_the_earlier_copy(
    bucket: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    ledger = Ledger(ledger_path(out, 1, 0))
    sync = _uploaded(out, bucket, ["x"], time.time() - 600)
    sync.fs.pipe(sync.remote_path("retired/k/markdown/x.md"), b"an earlier set-aside")
    _queue(ledger, "x", "k", time.time() + 1)
    assert set_aside_remote(sync, ledger.path) == 2
    objects = _objects(sync)
    assert sync.fs.cat(sync.remote_path("retired/k/markdown/x.md")) == b"an earlier set-aside"
    (later,) = [o for o in objects if o.startswith("retired/k~") and o.endswith("/x.md")]
    assert sync.fs.cat(sync.remote_path(later)) == b"x text"
    ledger.close()


def test_a_name_another_shard_holds_stays_in_the_bucket(bucket: str, tmp_path: Path) -> None:
    """Shards sync from their own directories (Ray): the other shard's checkpoint says the
    name is its now, whatever this shard's queue says."""
    out, other = tmp_path / "shard-0", tmp_path / "shard-1"
    ledger = Ledger(ledger_path(out, 2, 0))
    sync = _uploaded(out, bucket, ["x", "y"], time.time() - 600)
    sibling = Ledger(ledger_path(other, 2, 1))
    sibling.add_documents([NewDocument("e" * 64, "/in/x.pdf", "/in/x.pdf", "X", 10, 1, None)])
    sibling.close()
    sync.publish_ledger(ledger_path(other, 2, 1), ledger_path(other, 2, 1).name)
    for rel in ("x", "y"):
        _queue(ledger, rel, f"k{rel}", time.time() + 1)
    assert set_aside_remote(sync, ledger.path) == 2  # y's; x is held (case-insensitively)
    objects = _objects(sync)
    assert {"markdown/x.md", "pages/x.jsonl", "retired/ky/markdown/y.md"} <= objects
    assert "markdown/y.md" not in objects
    assert queued(ledger.path) == []
    ledger.close()
