"""End to end through the real CLI, in real processes, with the text-layer engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ocrfleet.testing import samples
from tests.conftest import REPO, Corpus, outputs_without_timings, read_records, run_cli


def test_greek_corpus_end_to_end(greek_corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("run", str(greek_corpus.root), "-o", str(out), "--engine", "text")
    assert result.returncode == 0, result.stderr
    for rel, pages in greek_corpus.pages.items():
        markdown = (out / "markdown" / f"{rel}.md").read_text("utf-8")
        assert markdown.count("<!-- page ") == pages
    records = read_records(out)
    assert len(records) == sum(greek_corpus.pages.values())
    for record in records:
        assert {"source", "page", "status", "text", "doc_id", "quality_flags"} <= record.keys()
        assert Path(record["source"]).exists()
    by_key = {(Path(r["source"]).name, r["page"]): r for r in records}
    mixed = "Μελέτη με κενά 'και' \"εισαγωγικά\".pdf"
    assert by_key[(mixed, 1)]["status"] == "done" and "ελληνικής" not in by_key[(mixed, 2)]["text"]
    assert by_key[(mixed, 2)]["status"] == "blank"
    assert by_key[(mixed, 3)]["status"] == "done"
    assert "empty_output" in by_key[(mixed, 3)]["quality_flags"]  # a scan has no text layer
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    assert summary["pages"] == {
        "pending": 0,
        "done": 7,
        "blank": 1,
        "truncated": 0,
        "failed": 0,
        "needs_ocr": 0,
    }
    assert summary["this_run"]["pages_processed"] == 8

    status = run_cli("status", str(out), "--json")
    assert status.returncode == 0
    counts = json.loads(status.stdout)
    assert counts["documents"]["done"] == 3 and counts["pages"]["blank"] == 1


def test_rerun_resumes_and_redoes_nothing(greek_corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_cli("run", str(greek_corpus.root), "-o", str(out), "--engine", "text")
    assert first.returncode == 0, first.stderr
    before = outputs_without_timings(out)
    again = run_cli("run", str(greek_corpus.root), "-o", str(out), "--engine", "text")
    assert again.returncode == 0, again.stderr
    assert "0 page(s) to do" in again.stderr
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    assert summary["this_run"]["pages_processed"] == 0
    assert outputs_without_timings(out) == before


def test_moved_and_renamed_file_is_not_redone(greek_corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        run_cli("run", str(greek_corpus.root), "-o", str(out), "--engine", "text").returncode == 0
    )
    shutil.move(greek_corpus.root / "a" / "report.pdf", greek_corpus.root / "moved.pdf")
    again = run_cli("run", str(greek_corpus.root), "-o", str(out), "--engine", "text")
    assert again.returncode == 0 and "0 page(s) to do" in again.stderr


def test_bad_inputs_are_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "in"
    samples.text_pdf(root / "good.pdf", ["Καλό έγγραφο."])
    (root / "empty.pdf").write_bytes(b"")
    samples.html_pdf(root / "download.pdf")
    samples.corrupt_pdf(root / "broken.pdf")
    samples.text_pdf(root / "locked.pdf", ["μυστικό"], password="secret")
    out = tmp_path / "out"
    result = run_cli(
        "run", str(root), str(tmp_path / "absent.pdf"), "-o", str(out), "--engine", "text"
    )
    assert result.returncode == 1
    for name in ("empty.pdf", "download.pdf", "broken.pdf", "locked.pdf"):
        assert f"{name}:" in result.stdout  # each failure names its file (results: stdout)
    assert "input not found" in result.stderr and "absent.pdf" in result.stderr
    status = json.loads(run_cli("status", str(out), "--json").stdout)
    assert status["documents"] == {"pending": 0, "done": 1, "failed": 4}
    reasons = {Path(d["source"]).name: d["reason"] for d in status["failed_documents"]}
    assert "0 bytes" in reasons["empty.pdf"] and "HTML" in reasons["download.pdf"]
    assert "password" in reasons["locked.pdf"] and "damaged" in reasons["broken.pdf"]
    assert (out / "markdown" / "good.md").exists()


def test_shards_partition_the_corpus(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for n in range(7):
        samples.text_pdf(
            root / f"d{n}.pdf", [f"{n}.{k} " + samples.paragraph(k) for k in range(n % 3 + 1)]
        )
    out = tmp_path / "out"
    for shard in range(3):
        result = run_cli(
            "run",
            str(root),
            "-o",
            str(out),
            "--engine",
            "text",
            "--num-shards",
            "3",
            "--shard-index",
            str(shard),
        )
        assert result.returncode == 0, result.stderr
    sources = [r["source"] for r in read_records(out) if r["page"] == 1]
    assert sorted(sources) == sorted(str(root / f"d{n}.pdf") for n in range(7))  # once each
    assert len(list(out.glob("ocrfleet.shard-*-of-3.sqlite"))) == 3
    status = json.loads(run_cli("status", str(out), "--json").stdout)
    assert status["documents"]["done"] == 7 and len(status["shards"]) == 3


def test_plan_command_verbatim_explains_the_topology(tmp_path: Path) -> None:
    samples.text_pdf(tmp_path / "in" / "x.pdf", ["x"])
    import subprocess
    import sys

    from tests.conftest import cli_env

    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "run_pdf_ocr_vllm.py"),
            "--input-dir",
            str(tmp_path / "in"),
            "--output-dir",
            str(tmp_path / "out"),
            "--mode",
            "clean",
            "--tensor-parallel-size",
            "4",
            "--mm-encoder-tp-mode",
            "data",
            "--num-shards",
            "4",
            "--shard-index",
            "0",
            "--batch-pages",
            "16",
            "--gpu-memory-utilization",
            "0.93",
            "--log-level",
            "INFO",
            "--timeout-seconds",
            "300",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "must divide its 10 attention heads" in result.stderr
    assert (
        "--gpus 0,1,2,3" in result.stderr
        and "--tensor-parallel-size" not in result.stderr.split("What was meant:")[1].split("\n")[1]
    )
    assert not (tmp_path / "out" / "ocrfleet.shard-0-of-4.sqlite").exists()  # nothing loaded


def test_help_lists_examples() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "ocrfleet status out/ --json" in result.stdout
