"""Copies of one PDF across runs (issue 11, A7 and its review): the `duplicates` table is
exactly the copies there are now, every input path's outputs are its own, and every figure
link of every Markdown resolves. CLI in real processes, real PDFs, real SQLite."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ocrfleet.testing import samples

from .conftest import run_cli

FIGURE = ["--engine", "tests.fakes:scripted", "--vllm-arg", 'script={"1": ["figure"]}']
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def _run(root: Path, out: Path, *engine: str) -> None:
    result = run_cli("run", str(root), "-o", str(out), *(engine or ("--engine", "text")))
    assert result.returncode == 0, result.stderr


def _manifest(out: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text("utf-8").splitlines()]
    return {Path(r["source"]).name if r["source"] else "": r for r in rows}


def _image_links(markdown: Path) -> list[Path]:
    text = markdown.read_text("utf-8")
    return [markdown.parent / unquote(target) for target in IMAGE_LINK.findall(text)]


def _check_figure_links(out: Path) -> None:
    for name, row in _manifest(out).items():
        markdown = out / row["output"]
        links = _image_links(markdown)
        assert links, f"{name}: no figure link in {markdown}"
        for link in links:
            assert link.is_file(), f"{name}: {link} does not resolve"


def test_every_copy_links_figures_that_resolve(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    original = samples.mixed_pdf(root / "a.pdf", [("image", "Εικόνα ένα"), ("text", "δύο")])
    shutil.copyfile(original, root / "z (copy).pdf")  # another name, the same folder
    (root / "deep" / "er").mkdir(parents=True)
    shutil.copyfile(original, root / "deep" / "er" / "b.pdf")  # another folder
    _run(root, out, *FIGURE)
    rows = _manifest(out)
    assert {name: r["status"] for name, r in rows.items()} == dict.fromkeys(
        ("a.pdf", "z (copy).pdf", "b.pdf"), "done"
    )
    for name, row in rows.items():
        markdown = out / row["output"]
        links = _image_links(markdown)
        assert links, f"{name}: no figure link in {markdown}"
        for link in links:
            assert link.is_file(), f"{name}: {link} does not resolve"
        jsonl = out / "pages" / Path(row["output"]).relative_to("markdown").with_suffix(".jsonl")
        figures = [f for line in jsonl.read_text("utf-8").splitlines()
                   for f in json.loads(line).get("figures", [])]  # fmt: skip
        assert figures and all((out / f).is_file() for f in figures), (name, figures)
        # The copy's folder is its own: it survives whatever happens to the original's.
        assert all(link.parent == markdown.parent / f"{markdown.stem}_figures" for link in links)
    # A copy written without a folder of its own (an older ocrfleet; the folder removed) is
    # written again by the next run.
    shutil.rmtree(out / "markdown" / "deep" / "er" / "b_figures")
    _run(root, out, *FIGURE)
    _check_figure_links(out)


def _copies(out: Path) -> dict[str, str]:
    """The ledger's duplicates: copy path → the path its document is read from."""
    with sqlite3.connect(out / "ocrfleet.sqlite") as db:
        rows = db.execute(
            "SELECT c.path, d.path FROM duplicates c JOIN documents d USING (doc_id)"
        ).fetchall()
    return {Path(copy).name: Path(primary).name for copy, primary in rows}


def _records(out: Path, output: str) -> list[dict[str, Any]]:
    jsonl = out / "pages" / Path(output).relative_to("markdown").with_suffix(".jsonl")
    return [json.loads(line) for line in jsonl.read_text("utf-8").splitlines()]


def _check_outputs(out: Path, expected: dict[str, str | None]) -> None:
    """Each input path (name → the name it is a copy of, or None) has its own current files."""
    rows = _manifest(out)
    assert set(rows) == set(expected)
    for name, primary in expected.items():
        row = rows[name]
        assert row["status"] == "done", row
        assert (row.get("duplicate_of") and Path(row["duplicate_of"]).name == primary) or (
            primary is None and "duplicate_of" not in row
        ), row
        # Its own name: a.pdf → markdown/a.md, sub/c.pdf → markdown/sub/c.md.
        assert Path(row["output"]).stem == Path(name).stem, row
        for record in _records(out, row["output"]):
            assert record["source"] == row["source"], record
            assert record.get("duplicate_of") == row.get("duplicate_of"), record
    # Markdown under OUT/markdown is exactly the current outputs: nothing stale left there.
    outputs = {r["output"] for r in rows.values()}
    on_disk = {str(p.relative_to(out)) for p in (out / "markdown").rglob("*.md")}
    assert on_disk == outputs


def test_the_duplicates_table_follows_edits_deletes_and_moves(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    original = samples.text_pdf(root / "a.pdf", ["shared text", "shared page two"])
    shutil.copyfile(original, root / "b.pdf")
    (root / "sub").mkdir()
    shutil.copyfile(original, root / "sub" / "c.pdf")
    _run(root, out)
    assert _copies(out) == {"b.pdf": "a.pdf", "c.pdf": "a.pdf"}
    _check_outputs(out, {"a.pdf": None, "b.pdf": "a.pdf", "c.pdf": "a.pdf"})

    # The primary is deleted: a copy becomes the document, under its own name.
    original.unlink()
    _run(root, out)
    assert _copies(out) == {"c.pdf": "b.pdf"}
    _check_outputs(out, {"b.pdf": None, "c.pdf": "b.pdf"})
    assert "shared text" in (out / "markdown" / "b.md").read_text("utf-8")

    # A copy is edited: it is no longer a copy, its outputs hold its own new text.
    samples.text_pdf(root / "sub" / "c.pdf", ["edited c"])
    _run(root, out)
    assert _copies(out) == {}
    _check_outputs(out, {"b.pdf": None, "c.pdf": None})
    assert "edited c" in (out / "markdown" / "sub" / "c.md").read_text("utf-8")
    assert "shared text" not in (out / "markdown" / "sub" / "c.md").read_text("utf-8")

    # The primary is moved and a copy appears at a name that sorts first: the first path
    # in input order names the document now.
    shutil.move(root / "b.pdf", root / "z.pdf")
    shutil.copyfile(root / "z.pdf", root / "a.pdf")
    _run(root, out)
    assert _copies(out) == {"z.pdf": "a.pdf"}
    _check_outputs(out, {"a.pdf": None, "c.pdf": None, "z.pdf": "a.pdf"})

    # The primary is edited in place while its copy keeps the old bytes.
    samples.text_pdf(root / "a.pdf", ["edited a"])
    _run(root, out)
    assert _copies(out) == {}
    _check_outputs(out, {"a.pdf": None, "c.pdf": None, "z.pdf": None})
    assert "edited a" in (out / "markdown" / "a.md").read_text("utf-8")
    assert "shared text" in (out / "markdown" / "z.md").read_text("utf-8")

    # A document's path now holds a copy of another's bytes: it is retired, the path a copy.
    shutil.copyfile(root / "z.pdf", root / "sub" / "c.pdf")
    _run(root, out)
    assert _copies(out) == {"c.pdf": "z.pdf"}
    _check_outputs(out, {"a.pdf": None, "c.pdf": "z.pdf", "z.pdf": None})
    assert "edited c" not in (out / "markdown" / "sub" / "c.md").read_text("utf-8")
    # Nothing was deleted: every file set aside is under OUT/retired.
    retired = [p.read_text("utf-8") for p in (out / "retired").rglob("*.md")]
    assert any("edited c" in text for text in retired)


def test_a_copy_shows_its_own_documents_figures_after_the_old_name_was_taken(
    tmp_path: Path,
) -> None:
    """A moved document's records still name its old figure folder; once a new document
    holds that name (and figures of the same file names), a copy must get the moved
    document's figures, not the newcomer's (compared byte for byte)."""
    root, out = tmp_path / "in", tmp_path / "out"
    samples.mixed_pdf(root / "a.pdf", [("image", "X " * 200)])
    _run(root, out, *FIGURE)
    x_figure = (out / "markdown" / "a_figures" / "p0001_1.jpg").read_bytes()
    shutil.move(root / "a.pdf", root / "b.pdf")
    samples.mixed_pdf(root / "a.pdf", [("image", "Z " * 200)])
    _run(root, out, *FIGURE)
    assert (out / "markdown" / "b_figures" / "p0001_1.jpg").read_bytes() == x_figure
    assert (out / "markdown" / "a_figures" / "p0001_1.jpg").read_bytes() != x_figure
    shutil.copyfile(root / "b.pdf", root / "c.pdf")
    _run(root, out, *FIGURE)
    assert (out / "markdown" / "c_figures" / "p0001_1.jpg").read_bytes() == x_figure
    _check_figure_links(out)
