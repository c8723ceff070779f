"""A page inside the engine when another page re-planned its document (the file was
rewritten) saves no figure under the name the new bytes now own (issue 11 review, item 2)."""

from __future__ import annotations

import json
from pathlib import Path

from ocrfleet.layout import OutputLayout, ledger_path
from ocrfleet.testing import samples

from .conftest import run_cli


def test_a_figure_of_retired_bytes_is_not_saved_at_the_new_documents_name(
    tmp_path: Path,
) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    pages = [("image", "old figure page")] + [("text", f"old page {n}") for n in range(2, 7)]
    target = samples.mixed_pdf(root / "a.pdf", pages)
    new = samples.text_pdf(tmp_path / "new.pdf", ["new page one", "new page two"])
    extra = {"target": str(target), "replacement": str(new), "ledger": str(ledger_path(out, 1, 0))}
    args = [arg for k, v in extra.items() for arg in ("--vllm-arg", f"{k}={json.dumps(v)}")]
    result = run_cli(
        "run", str(root), "-o", str(out), "--engine", "tests.figure_race:racing",
        "--batch-pages", "2", "--render-workers", "1", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    layout = OutputLayout(out)
    worker_log = (out / "logs" / "worker-0.log").read_text("utf-8")
    assert "changed during the run" in worker_log  # another page re-planned it
    markdown = layout.markdown("a").read_text("utf-8")
    assert "new page two" in markdown and "old" not in markdown
    # The new bytes have no figure: none of the old page may sit in their folder.
    figures = layout.figures_dir("a")
    assert not figures.exists() or not list(figures.iterdir()), list(figures.iterdir())
