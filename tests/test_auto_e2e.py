"""`--engine auto` end to end: per-page routes, needs_ocr without an OCR engine, redo of
exactly those pages with real Tesseract, --redo-flag, and the main command without Tesseract."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from ocrfleet.evaluate import compare
from ocrfleet.testing.routeset import GREEK_TEXT, make_pdf
from tests.conftest import REPO, cli_env, read_records, run_cli

SCAN_TEXT = GREEK_TEXT[:420]


def records_by_page(out: Path) -> dict[int, dict[str, Any]]:
    return {r["page"]: r for r in read_records(out)}


def attempts(out: Path) -> dict[int, int]:
    with sqlite3.connect(out / "ocrfleet.sqlite") as db:
        return dict(db.execute("SELECT page, COUNT(*) FROM attempts GROUP BY page").fetchall())


def test_needs_ocr_pages_and_a_tesseract_redo_of_exactly_them(tmp_path: Path) -> None:
    make_pdf(tmp_path / "in" / "mixed.pdf", [("text", GREEK_TEXT), ("scan", SCAN_TEXT)])
    out = tmp_path / "out"
    first = run_cli("run", str(tmp_path / "in"), "-o", str(out), "--ocr-engine", "none")
    assert first.returncode == 0, first.stderr
    pages = records_by_page(out)
    assert pages[1]["route"] == "text" and pages[1]["status"] == "done"
    assert pages[1]["engine"] == "text" and "\ufffe" not in pages[1]["text"]
    assert pages[2]["route"] == "ocr" and pages[2]["status"] == "needs_ocr"
    assert "no_text_layer" in pages[2]["route_reasons"] and pages[2]["route_scores"]["ink"] > 0
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    assert summary["pages"]["needs_ocr"] == 1 and summary["pages"]["done"] == 1
    assert summary["routes"] == {"ocr": 1, "text": 1}
    assert summary["attention"][0]["page"] == 2
    status = json.loads(run_cli("status", str(out), "--json").stdout)
    assert status["pages"]["needs_ocr"] == 1 and status["attention_total"] == 1
    table = run_cli("status", str(out)).stdout
    assert "routes     ocr 1  text 1" in table and "mixed.pdf page 2: needs_ocr" in table
    assert "routes: 1 ocr, 1 text" in first.stderr and "1 page(s) need OCR" in first.stderr
    assert "needs OCR" in (out / "markdown" / "mixed.md").read_text("utf-8")

    second = run_cli("run", str(tmp_path / "in"), "-o", str(out), "--ocr-engine", "tesseract")
    assert second.returncode == 0, second.stderr
    again = records_by_page(out)
    assert again[1] == pages[1]  # the text page is not touched
    assert attempts(out) == {1: 1, 2: 2}  # page 2 once without OCR, once with Tesseract
    assert again[2]["status"] == "done" and again[2]["engine"] == "tesseract"
    assert compare(again[2]["text"], SCAN_TEXT)["strict"].cer <= 0.05
    third = run_cli("run", str(tmp_path / "in"), "-o", str(out), "--ocr-engine", "tesseract")
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    assert third.returncode == 0 and summary["this_run"]["pages_processed"] == 0


def test_redo_flag_sends_only_flagged_pages_to_ocr(tmp_path: Path) -> None:
    table = "Πίνακας 1: 2024-03-15 1234 5678 9012 3456 7890 1234 5678"  # few letters: low_text
    make_pdf(tmp_path / "in" / "doc.pdf", [("text", GREEK_TEXT), ("text", table)])
    out = tmp_path / "out"
    assert (
        run_cli("run", str(tmp_path / "in"), "-o", str(out), "--ocr-engine", "none").returncode == 0
    )
    before = records_by_page(out)
    assert before[2]["route"] == "text" and "low_text" in before[2]["quality_flags"]
    scripted = ["--ocr-engine", "tests.fakes:scripted"]
    plain = run_cli("run", str(tmp_path / "in"), "-o", str(out), *scripted)
    assert plain.returncode == 0 and records_by_page(out) == before  # nothing needs OCR
    redo = run_cli(
        "run", str(tmp_path / "in"), "-o", str(out), *scripted, "--redo-flag", "low_text"
    )
    assert redo.returncode == 0, redo.stderr
    after = records_by_page(out)
    assert after[1] == before[1]
    assert after[2]["engine"] == "scripted" and after[2]["route"] == "ocr"
    assert after[2]["route_reasons"] == ["redo_flag"]


def test_main_command_without_tesseract(tmp_path: Path) -> None:
    """The README's command on a machine with neither GPU nor Tesseract: text pages are done,
    the scanned page waits as needs_ocr, and the run still succeeds."""
    env = {**cli_env(), "PATH": str(tmp_path / "empty-bin")}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "ocrfleet", "run", str(REPO / "examples" / "pdfs"), "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    assert summary["ocr_engine"] == "none" and summary["pages"]["needs_ocr"] >= 1
    assert summary["pages"]["done"] >= 1 and "needs_ocr" in result.stdout + result.stderr


def test_tesseract_languages_are_checked_before_the_run(tmp_path: Path) -> None:
    result = run_cli(
        "run", str(tmp_path), "-o", str(tmp_path / "out"), "--engine", "tesseract",
        "--tesseract-langs", "ell+nosuchlang",
    )  # fmt: skip
    assert result.returncode == 2 and "nosuchlang" in result.stderr
