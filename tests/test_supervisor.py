"""Several engine workers on one ledger: real processes, real signals, kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.testing import samples
from tests.conftest import cli_env, outputs_without_timings, read_records, run_cli

pytestmark = pytest.mark.slow


def make_corpus(root: Path, docs: int = 6, pages: int = 20) -> int:
    for d in range(docs):
        samples.text_pdf(
            root / f"doc{d}.pdf",
            [f"Έγγραφο {d}, σελίδα {p}. " + samples.paragraph(p) for p in range(pages)],
        )
    return docs * pages


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ocrfleet", "run", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


def finished_pages(out: Path) -> int:
    db = out / "ocrfleet.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(
                conn.execute("SELECT COUNT(*) FROM pages WHERE status!='pending'").fetchone()[0]
            )
    except sqlite3.OperationalError:
        return 0


def wait_for(condition: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def worker_pids(out: Path) -> list[int]:
    """Live workers' pids; none while the ledger is still being created."""
    try:
        with sqlite3.connect(out / "ocrfleet.sqlite", timeout=5) as conn:
            rows = conn.execute("SELECT pid FROM workers WHERE stopped_at IS NULL").fetchall()
    except sqlite3.OperationalError:
        return []
    return [int(r[0]) for r in rows]


SCRIPTED = ["--engine", "tests.fakes:scripted"]


def start_two_slow_workers(inputs: Path, out: Path) -> subprocess.Popen[str]:
    """Two scripted workers at 50 ms a page: slow enough to be interrupted mid-run."""
    return start(
        str(inputs), "-o", str(out), *SCRIPTED, "--workers", "2", *scripted_args(delay=0.05)
    )


def scripted_args(**extra: object) -> list[str]:
    return [arg for k, v in extra.items() for arg in ("--vllm-arg", f"{k}={json.dumps(v)}")]


def run_scripted_workers(tmp_path: Path, workers: int, *options: str) -> tuple[Path, Any]:
    """`ocrfleet run` over tmp_path/in with N scripted workers; its output and run summary."""
    out = tmp_path / "out"
    result = run_cli(
        "run", str(tmp_path / "in"), "-o", str(out), *SCRIPTED, "--workers", str(workers), *options
    )
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "run-summary.json").read_text("utf-8"))


def test_n_workers_process_every_page_exactly_once(tmp_path: Path) -> None:
    total = make_corpus(tmp_path / "in", docs=4, pages=10)
    out, summary = run_scripted_workers(
        tmp_path,
        3,
        # All three start together, so each can claim pages of the long documents.
        *scripted_args(delay=0.02, barrier={"dir": str(tmp_path / "started"), "count": 3}),
    )
    keys = Counter((r["source"], r["page"]) for r in read_records(out))
    assert len(keys) == total and set(keys.values()) == {1}
    assert [w["slot"] for w in summary["workers"]] == [0, 1, 2]
    assert sum(w["pages"] for w in summary["workers"]) == total
    assert all(w["pages"] > 0 for w in summary["workers"])  # the long documents were shared
    assert all((out / "logs" / f"worker-{n}.log").exists() for n in range(3))


def test_the_worker_ready_first_leaves_a_late_one_its_share(tmp_path: Path) -> None:
    """Each engine can hold every page (--batch-pages 1000), one page at a time inside: the
    first ready must not take the whole corpus while the second is still starting."""
    total = make_corpus(tmp_path / "in", docs=2, pages=20)
    _, summary = run_scripted_workers(
        tmp_path,
        2,
        "--batch-pages",
        "1000",
        *scripted_args(
            delay=0.1, concurrency=1, stagger={"dir": str(tmp_path / "ready"), "seconds": 1.0}
        ),
    )
    pages = [w["pages"] for w in summary["workers"]]
    assert sum(pages) == total and min(pages) >= 10, pages


def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    total = make_corpus(tmp_path / "in")
    out = tmp_path / "out"
    proc = start_two_slow_workers(tmp_path / "in", out)
    wait_for(lambda: finished_pages(out) >= 10)
    victim = worker_pids(out)[0]
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "died" in stderr and "restart" in stderr
    keys = Counter((r["source"], r["page"]) for r in read_records(out))
    assert len(keys) == total and set(keys.values()) == {1}
    statuses = {r["status"] for r in read_records(out)}
    assert statuses == {"done"}


def test_sigterm_then_rerun_gives_the_uninterrupted_output(tmp_path: Path) -> None:
    total = make_corpus(tmp_path / "in")
    reference = tmp_path / "reference"
    assert (
        run_cli(
            "run", str(tmp_path / "in"), "-o", str(reference), *SCRIPTED, "--workers", "2"
        ).returncode
        == 0
    )
    out = tmp_path / "out"
    proc = start_two_slow_workers(tmp_path / "in", out)
    wait_for(lambda: finished_pages(out) >= 10)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr  # stopped with pages left
    assert 10 <= finished_pages(out) < total
    rerun = run_cli("run", str(tmp_path / "in"), "-o", str(out), *SCRIPTED, "--workers", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert outputs_without_timings(out) == outputs_without_timings(reference)


def test_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    make_corpus(tmp_path / "in", docs=2, pages=5)
    out = tmp_path / "out"
    proc = start(
        str(tmp_path / "in"), "-o", str(out), *SCRIPTED, "--workers", "2", *scripted_args(delay=60)
    )
    wait_for(lambda: (out / "ocrfleet.sqlite").exists() and len(worker_pids(out)) == 2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - began < 15
    rerun = run_cli("run", str(tmp_path / "in"), "-o", str(out), *SCRIPTED)
    assert rerun.returncode == 0, rerun.stderr
    assert len(read_records(out)) == 10


def test_poison_page_is_failed_with_the_reason_and_the_rest_finishes(tmp_path: Path) -> None:
    samples.text_pdf(tmp_path / "in" / "doc.pdf", [f"σελίδα {n}" for n in range(6)])
    samples.text_pdf(tmp_path / "in" / "other.pdf", ["άλλο"])
    out = tmp_path / "out"
    result = run_cli(
        "run",
        str(tmp_path / "in"),
        "-o",
        str(out),
        *SCRIPTED,
        *scripted_args(script={"3": ["crash", "crash", "crash", "crash"]}),
    )
    assert result.returncode == 1, result.stderr  # the document with the poison page failed
    records = {(Path(r["source"]).name, r["page"]): r for r in read_records(out)}
    poison = records[("doc.pdf", 3)]
    assert poison["status"] == "failed" and "poison page" in poison["error"]
    assert all(r["status"] == "done" for k, r in records.items() if k != ("doc.pdf", 3))
    status = json.loads(run_cli("status", str(out), "--json").stdout)
    assert status["documents"]["failed"] == 1 and status["documents"]["done"] == 1
    assert "page 3" in status["failed_documents"][0]["reason"]


def test_a_worker_that_cannot_start_is_given_up_after_the_cap(tmp_path: Path) -> None:
    samples.text_pdf(tmp_path / "in" / "doc.pdf", ["x"])
    out = tmp_path / "out"
    result = run_cli(
        "run",
        str(tmp_path / "in"),
        "-o",
        str(out),
        *SCRIPTED,
        "--max-worker-restarts",
        "1",
        *scripted_args(fail_start=True),
    )
    assert result.returncode == 3
    assert "giving up" in result.stderr
    assert "scripted engine cannot start" in (out / "logs" / "worker-0.log").read_text("utf-8")


def test_a_workers_pages_per_second_runs_from_its_engine_ready() -> None:
    from ocrfleet.engine_slots import WorkerSpec
    from ocrfleet.supervisor import SlotState

    # A GPU engine's first batch of pages lands together, 10 s after the engine was ready.
    state = SlotState(WorkerSpec(slot=0, gpus=(0,), render_workers=2), ready_at=100.0)
    state.pages, state.first_page_at, state.last_page_at = 100, 109.9, 110.0
    assert state.pages_per_second() == pytest.approx(10.0)
    # Without a ready time (an engine that never said so): first to last page.
    state.ready_at = None
    assert state.pages_per_second() == pytest.approx(99 / 0.1)
