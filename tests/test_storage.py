"""s3:// staging, output upload and ledger checkpoints against a local S3 server (moto).

The endpoint reaches s3fs only through AWS_ENDPOINT_URL_S3, the variable botocore reads, so
these tests also check that the product honours it without an option of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("moto")
pytest.importorskip("s3fs")

from ocrfleet.layout import UPLOAD_MANIFEST
from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument
from ocrfleet.output_sync import OutputSync
from ocrfleet.s3_client import make_filesystem, with_retries
from ocrfleet.sources import discover
from ocrfleet.storage import _safe_rel, is_remote, split_uri, stage_inputs

GREEK = "Μελέτη με κενά.pdf"


class CountingFS:
    """Delegates to a real filesystem; counts transfers and can fail the n-th upload."""

    def __init__(self, fs: Any, fail_put_at: int | None = None, error: Exception | None = None):
        self._fs = fs
        self.fail_put_at = fail_put_at
        self.error = error or RuntimeError("simulated crash")
        self.puts: list[str] = []
        self.gets: list[str] = []
        self.put_calls = 0

    def put_file(self, lpath: str, rpath: str, **kwargs: Any) -> Any:
        self.put_calls += 1
        if self.fail_put_at is not None and self.put_calls == self.fail_put_at:
            raise self.error
        result = self._fs.put_file(lpath, rpath, **kwargs)
        self.puts.append(rpath)
        return result

    def get_file(self, rpath: str, lpath: str, **kwargs: Any) -> Any:
        self.gets.append(rpath)
        return self._fs.get_file(rpath, lpath, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)


def put_pdfs(bucket: str) -> dict[str, bytes]:
    fs = make_filesystem()
    objects = {
        "corpus/a/report.pdf": b"%PDF-1.4 a report",
        "corpus/b/report.pdf": b"%PDF-1.4 b report, longer",
        f"corpus/{GREEK}": b"%PDF-1.4 greek",
        "corpus/deep/er/x.PDF": b"%PDF-1.4 upper-case suffix",
        "corpus/notes.txt": b"not a pdf",
        "corpus2/other.pdf": b"%PDF-1.4 other prefix",
    }
    for key, data in objects.items():
        fs.pipe(f"{bucket}/{key}", data)
    return objects


def test_uri_helpers() -> None:
    assert is_remote("s3://b/k") and not is_remote("/data/s3://x") and not is_remote("scans/")
    assert split_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split_uri("s3://bucket") == ("bucket", "")
    assert _safe_rel("a/../../etc/passwd") is None and _safe_rel("/") is None
    assert str(_safe_rel("a//b/c.pdf")) == "a/b/c.pdf"


def test_local_inputs_pass_through_without_s3(tmp_path: Path) -> None:
    assert stage_inputs(["scans/", "list.txt"], tmp_path) == ["scans/", "list.txt"]


def test_stage_a_prefix_mirrors_keys(bucket: str, tmp_path: Path) -> None:
    objects = put_pdfs(bucket)
    cache = tmp_path / "cache"
    local_input = str(tmp_path / "local.pdf")
    staged = stage_inputs([f"s3://{bucket}/corpus", local_input], cache)
    root = cache / bucket / "corpus"
    assert staged == [str(root), local_input]
    assert (root / "a" / "report.pdf").read_bytes() == objects["corpus/a/report.pdf"]
    assert (root / GREEK).read_bytes() == objects[f"corpus/{GREEK}"]
    assert (root / "deep" / "er" / "x.PDF").is_file()
    assert not (root / "notes.txt").exists()
    assert not (cache / bucket / "corpus2").exists()
    assert not [p for p in root.rglob("*") if p.name.endswith(".part")]
    # The object's LastModified becomes the mtime: the ledger's probe cache keeps hitting.
    info = make_filesystem().info(f"{bucket}/corpus/a/report.pdf")
    assert abs((root / "a" / "report.pdf").stat().st_mtime - info["LastModified"].timestamp()) < 1
    # Outputs mirror the keys.
    files, missing = discover([staged[0]])
    assert not missing
    assert {str(f.rel) for f in files} == {"a/report", "b/report", "Μελέτη με κενά", "deep/er/x"}


def test_second_stage_skips_complete_files(bucket: str, tmp_path: Path) -> None:
    put_pdfs(bucket)
    cache = tmp_path / "cache"
    first = CountingFS(make_filesystem())
    stage_inputs([f"s3://{bucket}/corpus/"], cache, fs=first)
    assert len(first.gets) == 4
    # A download cut short on the previous instance leaves a wrong-size file: fetched again.
    broken = cache / bucket / "corpus" / "b" / "report.pdf"
    broken.write_bytes(b"%PDF-1.4 b rep")
    second = CountingFS(make_filesystem())
    staged = stage_inputs([f"s3://{bucket}/corpus/"], cache, fs=second)
    assert second.gets == [f"{bucket}/corpus/b/report.pdf"]
    assert broken.read_bytes() == b"%PDF-1.4 b report, longer"
    assert staged == [str(cache / bucket / "corpus")]


def test_stage_a_key_a_glob_and_a_missing_prefix(bucket: str, tmp_path: Path) -> None:
    put_pdfs(bucket)
    cache = tmp_path / "cache"
    key = f"s3://{bucket}/corpus/a/report.pdf"
    pattern = f"s3://{bucket}/corpus/*.pdf"
    missing = f"s3://{bucket}/nothing/here"
    staged = stage_inputs([key, pattern, missing], cache)
    assert staged[0] == str(cache / bucket / "corpus" / "a" / "report.pdf")
    assert Path(staged[0]).is_file()
    assert staged[1] == str(cache / bucket / "corpus" / "*.pdf")
    assert (cache / bucket / "corpus" / GREEK).is_file()
    assert staged[2] == missing  # the planner reports it as a missing input
    files, not_found = discover(staged)
    assert not_found == [missing]
    assert {str(f.rel) for f in files} == {"report", "Μελέτη με κενά"}


def make_outputs(root: Path) -> list[str]:
    """An output tree as a run leaves it, with the files that must not be uploaded."""
    files = {
        "markdown/a/report.md": "# report\n",
        f"markdown/{GREEK[:-4]}.md": "Μελέτη\n",
        "markdown/a/report_figures/p0001_0.jpg": "jpeg",
        "pages/a/report.jsonl": '{"page": 1}\n',
        "run-summary.json": "{}\n",
        "logs/run.log": "12:00 INFO start\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    for rel in (
        "ocrfleet.sqlite",
        "ocrfleet.sqlite-wal",
        "ocrfleet.shard-0-of-2.sqlite",
        ".ocrfleet.lock",
        ".ocrfleet-inputs/x.pdf",
        "markdown/a/.report.md.k3j2.tmp",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x", encoding="utf-8")
    return sorted(files)


def remote_files(bucket: str, prefix: str) -> set[str]:
    fs = make_filesystem()
    return {name[len(f"{bucket}/{prefix}/") :] for name in fs.find(f"{bucket}/{prefix}")}


def test_upload_a_tree_then_only_changes(bucket: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    expected = make_outputs(out)
    sync = OutputSync(out, f"s3://{bucket}/runs/r1/")
    assert sync.upload() == len(expected)
    assert remote_files(bucket, "runs/r1") == set(expected)
    fs = make_filesystem()
    assert fs.cat(f"{bucket}/runs/r1/markdown/{GREEK[:-4]}.md") == "Μελέτη\n".encode()
    assert (out / UPLOAD_MANIFEST).is_file()
    assert sync.upload() == 0
    (out / "logs" / "run.log").write_text("12:00 INFO start\n12:05 INFO more\n", encoding="utf-8")
    (out / "markdown" / "b.md").write_text("new\n", encoding="utf-8")
    assert sync.upload() == 2
    # Only the files given, when the runner knows which ones it just wrote.
    (out / "pages" / "b.jsonl").write_text("{}\n", encoding="utf-8")
    (out / "markdown" / "c.md").write_text("c\n", encoding="utf-8")
    assert sync.upload([out / "pages" / "b.jsonl"]) == 1
    assert "markdown/c.md" not in remote_files(bucket, "runs/r1")


def test_interrupted_upload_resumes_without_redoing_finished_files(
    bucket: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    expected = make_outputs(out)
    remote = f"s3://{bucket}/runs/r2"
    crashing = CountingFS(make_filesystem(), fail_put_at=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        OutputSync(out, remote, fs=crashing, concurrency=1).upload()
    # Uploads already running when the 4th failed still finish and are recorded.
    done_first = {p.split("/runs/r2/", 1)[1] for p in crashing.puts}
    assert 3 <= len(done_first) < len(expected)
    again = CountingFS(make_filesystem())
    assert OutputSync(out, remote, fs=again).upload() == len(expected) - len(done_first)
    done_again = {p.split("/runs/r2/", 1)[1] for p in again.puts}
    assert not done_first & done_again and done_first | done_again == set(expected)
    assert remote_files(bucket, "runs/r2") == set(expected)


def test_transient_errors_are_retried(bucket: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    expected = make_outputs(out)
    flaky = CountingFS(make_filesystem(), fail_put_at=2, error=OSError("connection reset"))
    sync = OutputSync(out, f"s3://{bucket}/runs/r3", fs=flaky, backoff=0.001)
    assert sync.upload() == len(expected)
    assert remote_files(bucket, "runs/r3") == set(expected)
    permanent = CountingFS(make_filesystem(), fail_put_at=1, error=PermissionError("denied"))
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        permanent.put_file(str(out / "run-summary.json"), f"{bucket}/x")

    with pytest.raises(PermissionError):
        with_retries(action, "upload", retries=5, backoff=0.001)
    assert len(calls) == 1


def test_ledger_checkpoint_and_restore_on_a_new_instance(bucket: str, tmp_path: Path) -> None:
    remote = f"s3://{bucket}/runs/r4"
    out = tmp_path / "instance-1"
    make_outputs(out)
    ledger_path = out / "ocrfleet.sqlite"
    ledger_path.unlink()
    (out / "ocrfleet.sqlite-wal").unlink()
    ledger = Ledger(ledger_path)
    docs = [
        NewDocument(f"doc{i}", f"s3://{bucket}/c/{i}.pdf", f"/local/{i}.pdf", f"d{i}", 10, i + 1)
        for i in range(3)
    ]
    ledger.add_documents(docs)
    sync = OutputSync(out, remote)
    sync.upload()
    # Checkpoint while the run still holds the ledger open (WAL mode, not checkpointed).
    sync.checkpoint_ledger(ledger_path)
    expected = [(d.doc_id, d.rel, d.pages) for d in ledger.documents()]
    counts = ledger.counts().as_dict()
    ledger.close()
    assert "ledger/ocrfleet.sqlite" in remote_files(bucket, "runs/r4")

    fresh = tmp_path / "instance-2"
    fresh_sync = OutputSync(fresh, remote)
    assert fresh_sync.restore_ledger(fresh / "ocrfleet.sqlite") is True
    restored = Ledger(fresh / "ocrfleet.sqlite")
    try:
        assert [(d.doc_id, d.rel, d.pages) for d in restored.documents()] == expected
        assert restored.counts().as_dict() == counts
    finally:
        restored.close()
    # What the first instance uploaded is known from the bucket: nothing is uploaded again,
    # new outputs are.
    watching = CountingFS(make_filesystem())
    resync = OutputSync(fresh, remote, fs=watching)
    assert resync.upload() == 0
    (fresh / "markdown").mkdir()
    (fresh / "markdown" / "new.md").write_text("new\n", encoding="utf-8")
    assert resync.upload() == 1 and watching.puts == [f"{bucket}/runs/r4/markdown/new.md"]
    # A local ledger always wins; no checkpoint means nothing to restore.
    assert fresh_sync.restore_ledger(fresh / "ocrfleet.sqlite") is False
    assert (
        OutputSync(tmp_path / "other", f"s3://{bucket}/runs/none").restore_ledger(
            tmp_path / "other" / "ocrfleet.sqlite"
        )
        is False
    )
