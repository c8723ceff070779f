"""The periodic sync of an s3:// run never leaves a ledger checkpoint that calls a document
done while its files are missing from the bucket: a node that dies then would resume from
that checkpoint and never write them (the Ray runs rely on this to lose nothing)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ocrfleet.config import EngineConfig, RunConfig
from ocrfleet.layout import ledger_path
from ocrfleet.output_sync import OutputSync
from ocrfleet.runner import PeriodicSync, run
from tests.conftest import Corpus

pytest.importorskip("moto")
pytest.importorskip("s3fs")


class FinishingDuringUpload(OutputSync):
    """An OutputSync during whose upload a worker finishes one more document (its files are
    renamed into place, then the ledger marks it done, as the writers do)."""

    def __init__(self, local_dir: Path, remote: str, finish: list[tuple[Path, Path]], db: Path):
        super().__init__(local_dir, remote)
        self.finish, self.db = finish, db

    def upload(self, paths: object = None) -> int:
        uploaded = super().upload()
        for parked, final in self.finish:
            parked.replace(final)
        with sqlite3.connect(self.db) as db:
            db.execute("UPDATE documents SET status='done' WHERE status='pending'")
        self.finish = []
        return uploaded


def test_no_checkpoint_calls_a_document_done_before_its_files_are_uploaded(
    bucket: str, greek_corpus: Corpus, tmp_path: Path
) -> None:
    from ocrfleet.s3_client import make_filesystem

    out = tmp_path / "out"
    config = RunConfig(
        inputs=(str(greek_corpus.root),),
        output_dir=out,
        engine=EngineConfig(name="text"),
        progress=False,
    )
    assert run(config).exit_code == 0
    db = ledger_path(out, 1, 0)
    # Take one document back to the moment before it was assembled: pages done, files not
    # there yet, the document pending in the ledger.
    rel = "a/report"
    finish = []
    for final in (out / "markdown" / f"{rel}.md", out / "pages" / f"{rel}.jsonl"):
        parked = tmp_path / final.name
        final.replace(parked)
        finish.append((parked, final))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE documents SET status='pending' WHERE rel=?", (rel,))

    remote = f"s3://{bucket}/out"
    PeriodicSync(FinishingDuringUpload(out, remote, finish, db), db, 3600).now()

    fs = make_filesystem()
    checkpoint = tmp_path / "checkpoint.sqlite"
    fs.get_file(f"{bucket}/out/ledger/{db.name}", str(checkpoint))
    with sqlite3.connect(checkpoint) as conn:
        done = [r for (r,) in conn.execute("SELECT rel FROM documents WHERE status='done'")]
    assert done, "the checkpoint holds finished documents"
    for name in done:
        assert fs.exists(f"{bucket}/out/markdown/{name}.md"), f"{name}: done, not uploaded"
        assert fs.exists(f"{bucket}/out/pages/{name}.jsonl"), f"{name}: done, not uploaded"


class DyingMidUpload(OutputSync):
    """An upload cut short (the node is lost, or S3 fails) before any file is sent."""

    def upload(self, paths: object = None) -> int:
        raise OSError("connection reset: the node went away mid-upload")


def test_an_upload_cut_short_publishes_no_checkpoint_ahead_of_the_files(
    bucket: str, greek_corpus: Corpus, tmp_path: Path
) -> None:
    from ocrfleet.s3_client import make_filesystem

    out = tmp_path / "out"
    config = RunConfig(
        inputs=(str(greek_corpus.root),),
        output_dir=out,
        engine=EngineConfig(name="text"),
        progress=False,
    )
    assert run(config).exit_code == 0
    db = ledger_path(out, 1, 0)
    PeriodicSync(DyingMidUpload(out, f"s3://{bucket}/out"), db, 3600).now()
    fs = make_filesystem()
    # No file made it, so no checkpoint may say any document is done.
    assert not fs.exists(f"{bucket}/out/ledger/{db.name}")
    assert not list(db.parent.glob(".ocrfleet-checkpoint-*"))  # the snapshot is cleaned up
