"""What a run tells its user: results on stdout, dated logs with an end line, run history,
empty inputs, the paths tried for inputs not found, exit statuses in --help."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ocrfleet.testing import samples
from tests.conftest import run_cli

DATED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [A-Z]+ ")


def test_results_on_stdout_logs_on_stderr_dated_with_an_end_line(tmp_path: Path) -> None:
    samples.text_pdf(tmp_path / "in" / "doc.pdf", ["one", "two"])
    out = tmp_path / "out"
    result = run_cli("run", str(tmp_path / "in"), "-o", str(out), "--engine", "text")
    assert result.returncode == 0, result.stderr
    stdout = result.stdout.splitlines()
    assert stdout[0].startswith("documents: 1 done, 0 failed, 0 pending | pages: ")
    assert f"summary: {out / 'run-summary.json'}" in stdout
    assert f"report: {out / 'report.html'}" in stdout
    assert "documents:" not in result.stderr
    log = (out / "logs" / "run.log").read_text("utf-8").splitlines()
    assert all(DATED.match(line) for line in log), log
    assert "run ended: exit 0" in log[-1]


def test_a_no_op_rerun_keeps_the_history_and_the_last_real_numbers(tmp_path: Path) -> None:
    samples.text_pdf(tmp_path / "in" / "doc.pdf", ["one", "two", "three"])
    out = tmp_path / "out"
    first = run_cli("run", str(tmp_path / "in"), "-o", str(out), "--engine", "text")
    assert first.returncode == 0, first.stderr
    worked = json.loads((out / "run-summary.json").read_text("utf-8"))
    again = run_cli("run", str(tmp_path / "in"), "-o", str(out), "--engine", "text")
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    assert summary["this_run"]["pages_processed"] == 0  # this run, as it was
    assert summary["pages"]["done"] == 3  # the corpus, as it stands
    last = summary["last_run_with_pages"]
    assert last["run_id"] == worked["run_id"] and last["pages_processed"] == 3
    history = sorted((out / "runs").glob("*.json"))
    assert [json.loads(p.read_text("utf-8"))["run_id"] for p in history] == [
        worked["run_id"],
        summary["run_id"],
    ]
    assert "Runs" in (out / "report.html").read_text("utf-8")


def test_an_input_directory_without_pdfs_warns_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not a pdf", "utf-8")
    result = run_cli("run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--engine", "text")
    assert result.returncode == 1
    assert f"no PDF found in {tmp_path / 'in'}" in result.stderr


def test_input_not_found_shows_the_path_tried(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    samples.text_pdf(tmp_path / "pdfs" / "here.pdf", ["x"])
    lists.mkdir()
    corpus = lists / "corpus.txt"
    corpus.write_text("../pdfs/here.pdf\npdfs/gone.pdf\n", "utf-8")
    result = run_cli("run", str(corpus), "-o", str(tmp_path / "out"), "--engine", "text")
    assert result.returncode == 1
    tried = lists / "pdfs" / "gone.pdf"  # relative to the list file, not the working dir
    assert f"input not found: pdfs/gone.pdf (listed in {corpus}; tried {tried})" in result.stderr
    summary = json.loads((tmp_path / "out" / "run-summary.json").read_text("utf-8"))
    pages = summary["pages"]  # the entry that resolved was processed
    assert sum(pages.values()) == 1 and pages["pending"] == 0


def test_help_lists_the_exit_statuses() -> None:
    for args in (("--help",), ("run", "--help")):
        result = run_cli(*args)
        assert result.returncode == 0
        assert "exit status of `ocrfleet run`:" in result.stdout
        assert re.search(r"^\s+2\s+bad options or a wrong setup", result.stdout, re.M)
        assert re.search(r"^\s+130\s+a second Ctrl-C", result.stdout, re.M)
