"""Outputs of documents that are retired or renamed are set aside, never left where the
current output of an input belongs, and never deleted (issue 11, review of A2/B1/A7)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ocrfleet.config import RunConfig
from ocrfleet.layout import RETIRED_DIR, OutputLayout, ledger_path
from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument
from ocrfleet.manifest import manifest_rows
from ocrfleet.plan import make_plan
from ocrfleet.stale_outputs import note_stale, set_aside
from ocrfleet.testing import samples

from .conftest import run_cli

FIGURE = ["--engine", "tests.fakes:scripted", "--vllm-arg", 'script={"1": ["figure"]}']


def _manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text("utf-8").splitlines()]


def test_a_replaced_pdf_leaves_no_stale_text_or_figures_at_its_name(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    pdf = samples.mixed_pdf(root / "sub" / "a.pdf", [("image", "old figure page"), ("text", "x")])
    result = run_cli("run", str(root), "-o", str(out), *FIGURE)
    assert result.returncode == 0, result.stderr
    layout = OutputLayout(out)
    old_figures = sorted(p.name for p in layout.figures_dir("sub/a").iterdir())
    old_text = "# Τίτλος"  # the scripted figure page's text
    assert old_figures and old_text in layout.markdown("sub/a").read_text("utf-8")
    samples.text_pdf(pdf, ["new bytes one", "new bytes two", "new bytes three"])
    # Planned but not processed (a run interrupted before its first page): nothing of the
    # old bytes is left at the name the new document writes to.
    ledger = Ledger(ledger_path(out, 1, 0))
    make_plan(RunConfig(inputs=(str(root),), output_dir=out), ledger)
    ledger.close()
    for path in (layout.markdown("sub/a"), layout.pages("sub/a"), layout.figures_dir("sub/a")):
        assert not path.exists(), path
    # Nothing is lost: set aside under OUT/retired/<id>/, in the same layout.
    (aside,) = (out / RETIRED_DIR).iterdir()
    kept = OutputLayout(aside)
    assert old_text in kept.markdown("sub/a").read_text("utf-8")
    assert kept.pages("sub/a").is_file()
    assert sorted(p.name for p in kept.figures_dir("sub/a").iterdir()) == old_figures
    result = run_cli("run", str(root), "-o", str(out), "--engine", "text")
    assert result.returncode == 0, result.stderr
    markdown = layout.markdown("sub/a").read_text("utf-8")
    assert "new bytes three" in markdown and old_text not in markdown
    assert not layout.figures_dir("sub/a").exists()
    records = [json.loads(x) for x in layout.pages("sub/a").read_text("utf-8").splitlines()]
    assert [r["text"].strip() for r in records] == [
        f"new bytes {n}" for n in ("one", "two", "three")
    ]
    (row,) = _manifest(out)
    assert row["output"] == "markdown/sub/a.md" and row["status"] == "done"


def test_the_manifest_names_no_output_before_the_document_is_finished(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    samples.text_pdf(root / "a.pdf", ["only page"])
    ledger = Ledger(ledger_path(out, 1, 0))
    plan = make_plan(RunConfig(inputs=(str(root),), output_dir=out), ledger)
    layout = OutputLayout(out)
    # Text another document left at the name (a crash before it was set aside).
    layout.markdown("a").parent.mkdir(parents=True)
    layout.markdown("a").write_text("stale text of other bytes\n", encoding="utf-8")
    (row,) = manifest_rows(ledger, layout, plan.entries, plan.missing_inputs)
    assert row["status"] == "pending" and row["output"] is None
    ledger.close()


def _ledger_with(path: Path, rel: str) -> Ledger:
    ledger = Ledger(path)
    ledger.add_documents([NewDocument("d" * 64, "/in/x.pdf", "/in/x.pdf", rel, 10, 1, None)])
    return ledger


def test_files_written_after_the_note_or_held_by_another_shard_stay(tmp_path: Path) -> None:
    out = tmp_path / "out"
    layout = OutputLayout(out)
    ledger = _ledger_with(ledger_path(out, 2, 0), "mine")
    sibling = _ledger_with(ledger_path(out, 2, 1), "theirs")
    sibling.close()
    with ledger.transaction() as db:
        note_stale(db, "old", "k1", "retired")
        note_stale(db, "newer", "k2", "retired")
        note_stale(db, "theirs", "k3", "retired")
    for rel in ("old", "newer", "theirs"):
        layout.markdown(rel).parent.mkdir(parents=True, exist_ok=True)
        layout.markdown(rel).write_text(rel, encoding="utf-8")
    past = time.time() - 60
    for rel in ("old", "theirs"):  # written before the note
        os.utime(layout.markdown(rel), (past, past))
    later = time.time() + 60  # written by the name's new holder after the note
    os.utime(layout.markdown("newer"), (later, later))
    assert set_aside(ledger, out, [ledger_path(out, 2, 1)]) == 1
    assert not layout.markdown("old").exists()
    assert (out / RETIRED_DIR / "k1" / "markdown" / "old.md").read_text("utf-8") == "old"
    assert layout.markdown("newer").read_text("utf-8") == "newer"
    assert layout.markdown("theirs").read_text("utf-8") == "theirs"
    assert ledger.query("SELECT COUNT(*) FROM stale_outputs")[0][0] == 0  # acted on once
    ledger.close()


def test_a_renamed_document_takes_its_figures_along(tmp_path: Path) -> None:
    """a.pdf (with a figure) is renamed to b.pdf: the document is not redone, its outputs
    move to b's name and b's Markdown links figures that resolve."""
    root, out = tmp_path / "in", tmp_path / "out"
    samples.mixed_pdf(root / "a.pdf", [("image", "figure page")])
    assert run_cli("run", str(root), "-o", str(out), *FIGURE).returncode == 0
    shutil.move(root / "a.pdf", root / "b.pdf")
    result = run_cli("run", str(root), "-o", str(out), "--engine", "text")
    assert result.returncode == 0, result.stderr
    layout = OutputLayout(out)
    markdown = layout.markdown("b").read_text("utf-8")
    assert "![](b_figures/p0001_" in markdown  # the page was not redone by the text engine
    for link in markdown.split("](")[1:]:
        assert (layout.markdown("b").parent / link.split(")")[0]).is_file()
    assert not layout.markdown("a").exists() and not layout.figures_dir("a").exists()
    (row,) = _manifest(out)
    assert row["source"] == str(root / "b.pdf") and row["output"] == "markdown/b.md"


def _figure(layout: OutputLayout, rel: str, body: str, when: float) -> None:
    path = layout.figures_dir(rel) / "p0001_1.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    os.utime(path, (when, when))


def test_renames_in_a_chain_or_a_swap_never_mix_two_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    layout = OutputLayout(out)
    ledger = _ledger_with(ledger_path(out, 1, 0), "unrelated")
    past = time.time() - 60
    # X a→b while b's old files (a copy of W) are set aside; Y c→d and Z d→c swap names.
    for rel, body in (("a", "X"), ("b", "W"), ("c", "Y"), ("d", "Z")):
        _figure(layout, rel, body, past)
    with ledger.transaction() as db:
        note_stale(db, "a", "kx", "renamed", figures_to="b")
        note_stale(db, "b", "kw", "no longer a copy")
        note_stale(db, "c", "ky", "renamed", figures_to="d")
        note_stale(db, "d", "kz", "renamed", figures_to="c")
    set_aside(ledger, out)
    figure = "p0001_1.jpg"
    assert (layout.figures_dir("b") / figure).read_text("utf-8") == "X"
    assert (out / RETIRED_DIR / "kw" / "markdown" / "b_figures" / figure).read_text() == "W"
    assert "no longer a copy" in (out / RETIRED_DIR / "kw" / "REASON.txt").read_text("utf-8")
    assert (layout.figures_dir("d") / figure).read_text("utf-8") == "Y"
    assert (layout.figures_dir("c") / figure).read_text("utf-8") == "Z"
    assert not layout.figures_dir("a").exists()
    ledger.close()


def test_a_document_moved_over_a_copy_of_another_keeps_its_figures(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    samples.mixed_pdf(root / "a.pdf", [("image", "X " * 200)])
    other = samples.mixed_pdf(root / "w.pdf", [("image", "W " * 200)])
    shutil.copyfile(other, root / "b.pdf")
    assert run_cli("run", str(root), "-o", str(out), *FIGURE).returncode == 0
    layout = OutputLayout(out)
    x_figure = (layout.figures_dir("a") / "p0001_1.jpg").read_bytes()
    assert x_figure != (layout.figures_dir("w") / "p0001_1.jpg").read_bytes()
    (root / "a.pdf").replace(root / "b.pdf")  # b.pdf, a copy of w.pdf, now holds a's bytes
    result = run_cli("run", str(root), "-o", str(out), *FIGURE)
    assert result.returncode == 0, result.stderr
    assert (layout.figures_dir("b") / "p0001_1.jpg").read_bytes() == x_figure
    rows = {Path(r["source"]).name: r for r in _manifest(out)}
    assert rows["b.pdf"]["output"] == "markdown/b.md" and "duplicate_of" not in rows["b.pdf"]
    assert "![](b_figures/p0001_1.jpg)" in layout.markdown("b").read_text("utf-8")
