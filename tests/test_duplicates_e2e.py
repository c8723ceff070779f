"""Copies of one PDF across runs (issue 11, A7 and its review): the `duplicates` table is
exactly the copies there are now, every input path's outputs are its own, and every figure
link of every Markdown resolves. CLI in real processes, real PDFs, real SQLite."""

from __future__ import annotations

import json
import re
import shutil
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
