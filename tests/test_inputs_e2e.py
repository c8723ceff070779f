"""Inputs and planning end to end: the CLI in real processes, real PDFs, real SQLite.

Every case here lost data, crashed or wedged an output dir before (issue 11)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.config import RunConfig
from ocrfleet.errors import ConfigError
from ocrfleet.ledger import Ledger
from ocrfleet.outdir import check_layout
from ocrfleet.plan import make_plan
from ocrfleet.shards import shard_of
from ocrfleet.testing import samples

from .conftest import read_records, run_cli


def _run(inputs: list[str], out: Path, *extra: str) -> Any:
    return run_cli("run", *inputs, "-o", str(out), "--engine", "text", *extra)


def _status(out: Path) -> dict[str, Any]:
    result = run_cli("status", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _manifest(out: Path, name: str = "manifest.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / name).read_text("utf-8").splitlines()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _text(path: Path) -> str:
    return path.read_text("utf-8")


# ---- A1: shards and a growing corpus ------------------------------------------------------


def test_a_file_added_between_shard_runs_moves_nothing_and_status_sees_it(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for n in range(7):
        samples.text_pdf(root / f"d{n}.pdf", [f"doc {n} page {k}" for k in range(n % 3 + 1)])
    out = tmp_path / "out"
    shard = ["--num-shards", "3", "--shard-index"]
    assert _run([str(root)], out, *shard, "0").returncode == 0
    # A file arrives before shards 1 and 2 start; pick one whose shard (0) has already run.
    n = 0
    while True:
        late = samples.text_pdf(tmp_path / "late.pdf", [f"late arrival {n}"])
        if shard_of(_sha(late), 3) == 0:
            break
        n += 1
    shutil.move(late, root / "late.pdf")
    for index in ("1", "2"):
        assert _run([str(root)], out, *shard, index).returncode == 0
    firsts = [r["source"] for r in read_records(out) if r["page"] == 1]
    assert len(firsts) == len(set(firsts)) == 7  # none processed twice, none lost
    status = _status(out)
    assert [d["source"] for d in status["unclaimed_documents"]] == [str(root / "late.pdf")]
    assert status["progress"] < 1.0
    assert "claimed by no shard" in run_cli("status", str(out)).stdout
    assert _run([str(root)], out, *shard, "0").returncode == 0
    status = _status(out)
    assert status["unclaimed_documents"] == [] and status["documents"]["done"] == 8
    firsts = [r["source"] for r in read_records(out) if r["page"] == 1]
    assert sorted(firsts) == sorted({*firsts}) and len(firsts) == 8


# ---- A6: sharded and unsharded on one OUT --------------------------------------------------


def test_sharded_and_unsharded_runs_on_one_output_dir_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for n in range(3):
        samples.text_pdf(root / f"d{n}.pdf", [f"doc {n}"])
    out = tmp_path / "out"
    assert _run([str(root)], out).returncode == 0
    mixed = _run([str(root)], out, "--num-shards", "2", "--shard-index", "0")
    assert mixed.returncode == 2
    assert mixed.stderr.strip().count("\n") == 0 and "unsharded" in mixed.stderr
    assert "Traceback" not in mixed.stderr
    other = tmp_path / "out2"
    assert _run([str(root)], other, "--num-shards", "2", "--shard-index", "1").returncode == 0
    for args in ([], ["--num-shards", "3", "--shard-index", "0"]):
        refused = _run([str(root)], other, *args)
        assert refused.returncode == 2 and "2 shards" in refused.stderr, refused.stderr
    assert _run([str(root)], other, "--num-shards", "2", "--shard-index", "0").returncode == 0
    assert _status(other)["documents"]["done"] == 3


# ---- A4: a moved corpus ---------------------------------------------------------------------


def test_a_moved_corpus_is_found_by_content_and_finished_at_its_new_path(tmp_path: Path) -> None:
    root = tmp_path / "in"
    samples.text_pdf(root / "a.pdf", ["alpha one", "alpha two"])
    samples.text_pdf(root / "sub" / "b.pdf", ["bravo one"])
    out = tmp_path / "out"
    # An interrupted run: planned, nothing processed yet.
    ledger = Ledger(out / "ocrfleet.sqlite")
    make_plan(RunConfig(inputs=(str(root),), output_dir=out), ledger)
    ledger.close()
    moved = tmp_path / "elsewhere"
    shutil.move(root, moved)
    result = _run([str(moved)], out)
    assert result.returncode == 0, result.stderr
    assert "cannot open PDF" not in result.stderr
    sources = {r["source"] for r in read_records(out)}
    assert sources == {str(moved / "a.pdf"), str(moved / "sub" / "b.pdf")}
    assert "alpha two" in _text(out / "markdown" / "a.md")


def test_retry_failed_after_a_move_opens_the_new_path(tmp_path: Path) -> None:
    root = tmp_path / "in"
    samples.text_pdf(root / "a.pdf", ["alpha one", "alpha two"])
    out = tmp_path / "out"
    first = run_cli(  # page 2 fails (the engine rejects it), then the corpus moves
        "run",
        str(root),
        "-o",
        str(out),
        "--engine",
        "tests.fakes:scripted",
        "--max-attempts",
        "1",
        "--vllm-arg",
        f"script={json.dumps({'2': ['error']})}",
    )
    assert first.returncode == 1, first.stderr
    moved = tmp_path / "moved"
    shutil.move(root, moved)
    again = _run([str(moved)], out, "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert "alpha two" in _text(out / "markdown" / "a.md")
    assert {r["source"] for r in read_records(out)} == {str(moved / "a.pdf")}


# ---- A5 / B1: replaced files, reused names ---------------------------------------------------


def test_a_replacement_with_the_same_size_and_mtime_is_reprocessed(tmp_path: Path) -> None:
    root = tmp_path / "in"
    target = samples.text_pdf(root / "a.pdf", ["Alpha text"])
    other = samples.text_pdf(tmp_path / "b.pdf", ["Bravo text"])
    assert target.stat().st_size == other.stat().st_size
    out = tmp_path / "out"
    assert _run([str(root)], out).returncode == 0
    before = target.stat()
    shutil.copyfile(other, target)  # what `cp -p` / `rsync -t` leave: same size, same mtime
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = _run([str(root)], out)
    assert again.returncode == 0, again.stderr
    assert "Bravo text" in _text(out / "markdown" / "a.md")
    assert "Alpha" not in _text(out / "pages" / "a.jsonl")


def test_reused_output_names_never_wedge_the_output_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first_dir, second_dir = tmp_path / "in1", tmp_path / "in2"
    # A file still 0 bytes at the first run.
    (first_dir).mkdir()
    (first_dir / "late.pdf").write_bytes(b"")
    samples.text_pdf(first_dir / "report.pdf", ["first report"])
    assert _run([str(first_dir)], out).returncode == 1
    samples.text_pdf(first_dir / "late.pdf", ["late text"])
    # A PDF edited in place.
    samples.text_pdf(first_dir / "report.pdf", ["edited report", "with a second page"])
    for _ in range(2):  # and every later run too
        result = _run([str(first_dir)], out)
        assert result.returncode == 0, result.stderr
        assert "IntegrityError" not in result.stderr
    assert "late text" in _text(out / "markdown" / "late.md")
    assert "edited report" in _text(out / "markdown" / "report.md")
    # A second input directory with the same names.
    samples.text_pdf(second_dir / "report.pdf", ["another report"])
    for _ in range(2):
        result = _run([str(second_dir)], out)
        assert result.returncode == 0, result.stderr
    assert "edited report" in _text(out / "markdown" / "report.md")  # not overwritten
    row = _manifest(out)[0]
    assert row["source"] == str(second_dir / "report.pdf") and row["status"] == "done"
    assert row["output"] != "markdown/report.md"
    assert "another report" in _text(out / row["output"])
    assert _status(out)["documents"]["pending"] == 0


# ---- A2: a PDF rewritten during the run -----------------------------------------------------


def _run_rewriting(
    root: Path, out: Path, extra: dict[str, object]
) -> subprocess.CompletedProcess[str]:
    """`ocrfleet run` with the engine that rewrites its input mid-run (tests/rewriter.py),
    two pages in flight and one render process, so the rewrite lands between pages."""
    args = [arg for k, v in extra.items() for arg in ("--vllm-arg", f"{k}={json.dumps(v)}")]
    return run_cli(
        "run", str(root), "-o", str(out), "--engine", "tests.rewriter:rewriting",
        "--batch-pages", "2", "--render-workers", "1", *args,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("chunks", "keep_mtime"),
    # 12: a slow copy, still going when detected; keep_mtime: `cp -p` of a file of the same
    # size, which keeps size, mtime and inode (only ctime tells).
    [(1, False), (12, False), (1, True)],
)
def test_a_pdf_rewritten_during_the_run_is_replanned(
    tmp_path: Path, chunks: int, keep_mtime: bool
) -> None:
    root = tmp_path / "in"
    target = samples.text_pdf(root / "doc.pdf", [f"old page {i}" for i in range(1, 21)])
    new = samples.text_pdf(tmp_path / "new.pdf", [f"new page {i}" for i in range(1, 31)])
    if keep_mtime:  # the same size: pad the old file after its %%EOF (pdfium ignores it)
        with target.open("ab") as handle:
            handle.write(b"\n" * (new.stat().st_size - target.stat().st_size))
    out = tmp_path / "out"
    extra = {
        "target": str(target),
        "replacement": str(new),
        "at_page": 3,
        "chunks": chunks,
        "pause": 0.05,
        "keep_mtime": keep_mtime,
    }
    result = _run_rewriting(root, out, extra)
    assert result.returncode == 0, result.stderr
    assert "changed during the run" in _text(out / "logs" / "worker-0.log")
    records = [r for r in read_records(out) if r["source"] == str(root / "doc.pdf")]
    assert [r["page"] for r in records] == list(range(1, 31))
    assert all(r["pages"] == 30 for r in records)
    for r in records:
        assert r["text"].strip() == f"new page {r['page']}", r
    assert "old page" not in _text(out / "markdown" / "doc.md")
    # The manifest follows the document its path holds now, not the one it was planned with.
    rows = _manifest(out)
    assert [(r["status"], r["output"]) for r in rows] == [("done", "markdown/doc.md")]


def test_a_rewritten_pdf_whose_copy_still_has_the_old_bytes_loses_nothing(tmp_path: Path) -> None:
    """a.pdf and b.pdf hold the same bytes; a.pdf is overwritten mid-run: b.pdf takes the
    document over (its pages, under its own name) and a.pdf's new bytes are done too."""
    root = tmp_path / "in"
    target = samples.text_pdf(root / "a.pdf", [f"old page {i}" for i in range(1, 11)])
    shutil.copyfile(target, root / "b.pdf")
    new = samples.text_pdf(tmp_path / "new.pdf", [f"new page {i}" for i in range(1, 13)])
    out = tmp_path / "out"
    extra = {"target": str(target), "replacement": str(new), "at_page": 3}
    result = _run_rewriting(root, out, extra)
    assert result.returncode == 0, result.stderr
    by_source: dict[str, list[dict[str, object]]] = {}
    for record in read_records(out):
        by_source.setdefault(Path(str(record["source"])).name, []).append(record)
    assert [r["text"].strip() for r in by_source["b.pdf"]] == [  # type: ignore[union-attr]
        f"old page {i}" for i in range(1, 11)
    ]
    assert [r["text"].strip() for r in by_source["a.pdf"]] == [  # type: ignore[union-attr]
        f"new page {i}" for i in range(1, 13)
    ]
    assert "new page" not in _text(out / "markdown" / "b.md")
    assert "old page" not in _text(out / "markdown" / "a.md")
    rows = {Path(r["source"]).name: r for r in _manifest(out)}
    assert {name: r["status"] for name, r in rows.items()} == {"a.pdf": "done", "b.pdf": "done"}
    assert rows["a.pdf"]["output"] == "markdown/a.md" and rows["b.pdf"]["output"] == "markdown/b.md"
    assert "duplicate_of" not in rows["b.pdf"]  # the document is b.pdf's own now


# ---- A7: every input path accounted for -----------------------------------------------------


def test_duplicates_get_their_own_outputs_and_the_manifest_lists_every_path(
    tmp_path: Path,
) -> None:
    root = tmp_path / "in"
    original = samples.text_pdf(root / "a.pdf", ["shared text", "page two"])
    (root / "copies").mkdir()
    shutil.copyfile(original, root / "copies" / "a.pdf")
    shutil.copyfile(original, root / "z.pdf")
    (root / "bad.pdf").write_bytes(b"\x7fELF not a pdf")
    out = tmp_path / "out"
    result = _run([str(root), str(tmp_path / "absent.pdf")], out)
    assert result.returncode == 1
    for copy in ("copies/a", "z"):
        records = [json.loads(line) for line in _text(out / "pages" / f"{copy}.jsonl").splitlines()]
        assert [r["page"] for r in records] == [1, 2]
        assert {r["source"] for r in records} == {str(root / f"{copy}.pdf")}
        assert {r["duplicate_of"] for r in records} == {str(original)}
        assert "shared text" in _text(out / "markdown" / f"{copy}.md")
    rows = {Path(r["source"]).name if r["doc_id"] else "absent": r for r in _manifest(out)}
    by_source = {r["source"]: r for r in _manifest(out)}
    assert by_source[str(original)]["status"] == "done"
    assert by_source[str(root / "z.pdf")]["duplicate_of"] == str(original)
    assert by_source[str(root / "z.pdf")]["output"] == "markdown/z.md"
    assert by_source[str(root / "bad.pdf")]["status"] == "failed"
    assert "ELF" in by_source[str(root / "bad.pdf")]["reason"]
    assert rows["absent"]["status"] == "missing" and "absent.pdf" in rows["absent"]["source"]
    assert len(by_source) == 5
    summary = json.loads(_text(out / "run-summary.json"))
    assert summary["inputs"] == {"done": 3, "failed": 1, "missing": 1}


# ---- B2 / B3 / B4 / B5 / B7 / D3: hostile names, file types and page trees ---------------


def test_hostile_names_and_files_are_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "in"
    # 126 characters, 251 bytes: the PDF's name fits in 255 bytes, its .jsonl does not.
    greek = ("Ιστορίατηςελληνικήςγλώσσας" * 5)[:125] + "1"
    assert len(greek.encode()) == 251
    samples.text_pdf(root / f"{greek}.pdf", ["ελληνικό κείμενο"])
    latin1 = os.fsdecode(b"caf\xe9.pdf")
    samples.text_pdf(root / latin1, ["cafe text"])
    os.mkfifo(root / "pipe.pdf")
    (root / "zero.pdf").symlink_to("/dev/zero")
    (root / "loop.pdf").symlink_to(root / "loop.pdf")
    samples.text_pdf(root / "long.pdf", [f"p{i}" for i in range(5)])
    (root / "shadow.pdf").write_bytes(b"root:$6$SECRETHASH:19000:0:99999:7:::\n")
    out = tmp_path / "out"
    for _ in range(2):  # a second run must not crash either
        result = run_cli(
            "run",
            str(root),
            "-o",
            str(out),
            "--engine",
            "text",
            "--max-pages-per-document",
            "3",
            timeout=120,
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr and "Error:" not in result.stderr
    said = result.stdout  # the failed documents, with their reasons, are results
    assert "FIFO" in said and "character device" in said
    assert "symlink loop" in said and "--max-pages-per-document 3" in said
    summary_text = _text(out / "run-summary.json")
    assert "SECRETHASH" not in summary_text and "root:" not in summary_text
    assert "SECRETHASH" not in _text(out / "logs" / "run.log")
    with sqlite3.connect(out / "ocrfleet.sqlite") as db:
        assert not db.execute("SELECT 1 FROM documents WHERE error LIKE '%SECRET%'").fetchall()
    names = [p.name for p in (out / "pages").iterdir()]
    assert all(len(n.encode()) <= 255 for n in names)
    by_source = {r["source"]: r for r in _manifest(out)}
    greek_row = by_source[str(root / f"{greek}.pdf")]
    assert greek_row["status"] == "done" and greek_row["output"].startswith("markdown/Ιστορία")
    assert "ελληνικό κείμενο" in _text(out / greek_row["output"])
    cafe_row = by_source[str(root) + "/caf\\xe9.pdf"]
    assert cafe_row["status"] == "done"
    assert "cafe text" in _text(out / cafe_row["output"])


def _pdf_in_shard(path: Path, text: str, shard: int, shards: int) -> Path:
    n = 0
    while shard_of(_sha(samples.text_pdf(path, [f"{text} {n}"])), shards) != shard:
        n += 1
    return path


def test_shards_never_hand_out_a_name_another_shard_writes(tmp_path: Path) -> None:
    first = _pdf_in_shard(tmp_path / "in1" / "report.pdf", "first", 0, 2)
    second = _pdf_in_shard(tmp_path / "in2" / "report.pdf", "second", 1, 2)
    out = tmp_path / "out"
    for root in (first.parent, second.parent):
        for index in ("0", "1"):
            result = _run([str(root)], out, "--num-shards", "2", "--shard-index", index)
            assert result.returncode == 0, result.stderr
    assert "first" in _text(out / "markdown" / "report.md")
    row = _manifest(out, "manifest.shard-1-of-2.jsonl")[0]
    assert row["source"] == str(second) and row["output"] != "markdown/report.md"
    assert "second" in _text(out / row["output"])


def test_a_touched_pdf_keeps_its_pages(tmp_path: Path) -> None:
    root = tmp_path / "in"
    target = samples.text_pdf(root / "doc.pdf", [f"old page {i}" for i in range(1, 9)])
    same = tmp_path / "same.pdf"
    shutil.copyfile(target, same)  # rewritten with its own bytes: new mtime, same content
    out = tmp_path / "out"
    extra = {"target": str(target), "replacement": str(same), "at_page": 2}
    result = _run_rewriting(root, out, extra)
    assert result.returncode == 0, result.stderr
    assert "changed during the run" not in _text(out / "logs" / "worker-0.log")
    records = read_records(out)
    assert [r["text"].strip() for r in records] == [f"old page {i}" for i in range(1, 9)]
    summary = json.loads(_text(out / "run-summary.json"))
    assert summary["this_run"]["pages_processed"] == 8  # nothing done twice


def test_the_layout_check_turns_an_unusable_output_dir_into_a_config_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "out").write_text("not a directory", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cannot use .*out as the output directory"):
        check_layout(tmp_path / "out", 1)


def test_a_copy_added_later_gets_its_own_outputs(tmp_path: Path) -> None:
    root = tmp_path / "in"
    original = samples.text_pdf(root / "z.pdf", ["zeta text"])
    out = tmp_path / "out"
    assert _run([str(root)], out).returncode == 0
    shutil.copyfile(original, root / "a.pdf")  # sorts first, arrives second
    result = _run([str(root)], out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(x) for x in _text(out / "pages" / "a.jsonl").splitlines()]
    assert records[0]["source"] == str(root / "a.pdf")
    assert records[0]["duplicate_of"] == str(original)
    by_source = {r["source"]: r for r in _manifest(out)}
    assert by_source[str(original)]["output"] == "markdown/z.md"
    assert by_source[str(root / "a.pdf")]["output"] == "markdown/a.md"
    zeta = [json.loads(x) for x in _text(out / "pages" / "z.jsonl").splitlines()]
    assert zeta[0]["source"] == str(original) and "duplicate_of" not in zeta[0]


def test_an_unclaimed_unreadable_document_still_keeps_status_below_100(tmp_path: Path) -> None:
    from ocrfleet.catalog import record_listing
    from ocrfleet.status import collect_status

    out = tmp_path / "out"
    ledger = Ledger(out / "ocrfleet.shard-0-of-2.sqlite")
    record_listing(ledger, [("f" * 64, "/in/empty.pdf", 1, 0)], 2)  # shard 1 never ran
    ledger.close()
    status = collect_status(out)
    assert [d["source"] for d in status["unclaimed_documents"]] == ["/in/empty.pdf"]
    assert status["progress"] < 1.0
