"""`ocrfleet run s3://… -o s3://…` end to end against a local S3 server, and a resume on a
"replacement instance" (a fresh local directory) from the uploaded ledger checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ocrfleet.testing import samples
from tests.conftest import run_cli

pytest.importorskip("moto")
pytest.importorskip("s3fs")


def test_s3_in_s3_out_and_resume_on_a_new_instance(bucket: str, tmp_path: Path) -> None:
    from ocrfleet.s3_client import make_filesystem

    fs = make_filesystem()
    local = tmp_path / "corpus"
    samples.text_pdf(local / "a" / "έκθεση.pdf", [samples.paragraph(0), samples.paragraph(1)])
    samples.text_pdf(local / "b" / "report.pdf", [samples.paragraph(2, greek=False)])
    for pdf in local.rglob("*.pdf"):
        fs.put_file(str(pdf), f"{bucket}/corpus/{pdf.relative_to(local).as_posix()}")

    args = ["run", f"s3://{bucket}/corpus/", "-o", f"s3://{bucket}/out", "--engine", "text"]
    first = run_cli(*args, "--work-dir", str(tmp_path / "node-1"))
    assert first.returncode == 0, first.stderr
    listing = {path.split("/", 2)[2] for path in fs.find(f"{bucket}/out")}
    assert {
        "markdown/a/έκθεση.md",
        "markdown/b/report.md",
        "pages/a/έκθεση.jsonl",
        "pages/b/report.jsonl",
        "run-summary.json",
        "ledger/ocrfleet.sqlite",
    } <= listing
    records = [
        json.loads(line)
        for line in fs.cat(f"{bucket}/out/pages/a/έκθεση.jsonl").decode().splitlines()
    ]
    assert [r["source"] for r in records] == [f"s3://{bucket}/corpus/a/έκθεση.pdf"] * 2
    assert records[0]["status"] == "done" and "ελληνικής" in records[0]["text"]

    # A replacement instance: nothing local, the same command. The ledger checkpoint comes
    # back from the bucket, so nothing is redone.
    second = run_cli(*args, "--work-dir", str(tmp_path / "node-2"))
    assert second.returncode == 0, second.stderr
    assert "resuming from the ledger checkpoint" in second.stderr
    assert "0 page(s) to do" in second.stderr


def test_a_failed_final_upload_is_not_a_success(s3_endpoint: str, tmp_path: Path) -> None:
    """Everything is done locally but the bucket never got it: exit 3 (a Ray shard is run
    again), one line that says how to finish, and the same command uploads it later."""
    from ocrfleet.s3_client import make_filesystem

    samples.text_pdf(tmp_path / "in" / "a.pdf", [samples.paragraph(0)])
    bucket = "ocrfleet-not-yet-created"
    args = ["run", str(tmp_path / "in"), "-o", f"s3://{bucket}/out", "--engine", "text"]
    first = run_cli(*args, "--work-dir", str(tmp_path / "w"))
    assert first.returncode == 3, first.stderr
    assert "the final upload" in first.stderr and "run the same command again" in first.stderr
    summary = json.loads((tmp_path / "w" / "run-summary.json").read_text("utf-8"))
    assert summary["exit_code"] == 3 and summary["pages"]["done"] == 1
    make_filesystem().mkdir(bucket)  # the bucket is there now
    again = run_cli(*args, "--work-dir", str(tmp_path / "w"))
    assert again.returncode == 0, again.stderr
    assert make_filesystem().exists(f"{bucket}/out/markdown/a.md")


def test_a_copys_outputs_are_written_on_a_node_that_resumed_from_the_checkpoint(
    bucket: str, tmp_path: Path
) -> None:
    """The node that finished a document is gone before its copy's files reached the bucket:
    the replacement, with only the ledger checkpoint, writes them from the ledger."""
    from ocrfleet.s3_client import make_filesystem

    fs = make_filesystem()
    local = tmp_path / "corpus"
    samples.text_pdf(local / "a.pdf", [samples.paragraph(0)])
    (local / "copy").mkdir()
    (local / "copy" / "a.pdf").write_bytes((local / "a.pdf").read_bytes())
    args = ["run", str(local), "-o", f"s3://{bucket}/out", "--engine", "text"]
    assert run_cli(*args, "--work-dir", str(tmp_path / "node-1")).returncode == 0
    fs.rm(f"{bucket}/out/markdown/copy/a.md")
    fs.rm(f"{bucket}/out/pages/copy/a.jsonl")
    again = run_cli(*args, "--work-dir", str(tmp_path / "node-2"))
    assert again.returncode == 0, again.stderr
    assert fs.exists(f"{bucket}/out/markdown/copy/a.md")
    record = json.loads(fs.cat(f"{bucket}/out/pages/copy/a.jsonl").decode().splitlines()[0])
    assert record["source"] == str(local / "copy" / "a.pdf")
    assert record["duplicate_of"] == str(local / "a.pdf")
