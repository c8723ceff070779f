"""--render-timeout: a render process stuck on a page (here: stopped with SIGSTOP, as a
pdfium infinite loop would leave it) is killed and replaced; that page fails with the
reason, the pages queued behind it render, the run goes on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ocrfleet.errors import RenderTimeout
from ocrfleet.page import RenderRequest, RenderSettings
from ocrfleet.render_pool import RenderPool
from ocrfleet.testing import samples
from tests.conftest import cli_env


def test_a_stuck_render_process_is_killed_and_the_page_fails_with_the_reason(
    tmp_path: Path,
) -> None:
    pdf = samples.text_pdf(tmp_path / "doc.pdf", [samples.paragraph(i) for i in range(3)])

    async def go() -> tuple[list[object], int, float]:
        pool = RenderPool(1, RenderSettings(), render_timeout=1.5)
        pool.start()
        try:
            pid = pool._slots[0].process.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)  # stuck: alive, never answers
            began = time.monotonic()
            jobs = [pool.render(RenderRequest("d", str(pdf), p, "doc.pdf")) for p in (1, 2, 3)]
            results = await asyncio.wait_for(
                asyncio.gather(*jobs, return_exceptions=True), timeout=60
            )
            return list(results), pool.restarts, time.monotonic() - began
        finally:
            pool.close()

    results, restarts, took = asyncio.run(go())
    first, *rest = results
    assert isinstance(first, RenderTimeout)
    assert "doc.pdf page 1" in str(first) and "--render-timeout 1.5 s" in str(first)
    assert [getattr(r, "page", None) for r in rest] == [2, 3]  # re-sent and rendered
    assert restarts == 1 and took < 30


def test_no_timeout_for_pages_that_wait_behind_a_slow_one(tmp_path: Path) -> None:
    """The clock runs only for the page being rendered: a queue of pages is not a hang."""
    pdf = samples.text_pdf(tmp_path / "doc.pdf", [samples.paragraph(i) for i in range(12)])

    async def go() -> list[int]:
        pool = RenderPool(1, RenderSettings(dpi=300), per_worker=12, render_timeout=5.0)
        pool.start()
        try:
            pages = await asyncio.gather(
                *(pool.render(RenderRequest("d", str(pdf), p)) for p in range(1, 13))
            )
            return [p.page for p in pages]
        finally:
            pool.close()

    assert asyncio.run(go()) == list(range(1, 13))


def rendering(root: psutil.Process, pdf: Path) -> list[psutil.Process]:
    """Render processes at work: spawned children of an engine worker (itself a spawned
    child) that have the PDF open."""
    found = []
    for child in root.children(recursive=True):
        try:
            parent = child.parent()
            if (
                parent is not None
                and parent.pid != root.pid
                and "spawn_main" in " ".join(child.cmdline())
                and any(f.path == str(pdf) for f in child.open_files())
            ):
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_the_run_goes_on_past_a_stuck_render_process(tmp_path: Path) -> None:
    pages = 60  # more than rendering can finish while the test looks for the process
    pdf = samples.long_pdf(tmp_path / "in" / "doc.pdf", pages)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "ocrfleet", "run", str(pdf), "-o", str(out)]
    args += ["--engine", "text", "--no-progress", "--render-workers", "1"]
    args += ["--render-timeout", "3", "--max-worker-restarts", "0"]
    cli = subprocess.Popen(args, env=cli_env(), stderr=subprocess.PIPE, text=True)
    stopped: list[int] = []
    deadline = time.monotonic() + 60
    root = psutil.Process(cli.pid)
    while not stopped and time.monotonic() < deadline and cli.poll() is None:
        for proc in rendering(root, pdf):
            os.kill(proc.pid, signal.SIGSTOP)
            stopped.append(proc.pid)
        time.sleep(0.005)
    _, stderr = cli.communicate(timeout=120)
    assert stopped, "no render process seen"
    assert cli.returncode == 1, stderr  # one page failed, the rest done
    records = [
        json.loads(line) for line in (out / "pages" / "doc.jsonl").read_text("utf-8").splitlines()
    ]
    failed = [r for r in records if r["status"] == "failed"]
    assert len(records) == pages and len(failed) == 1, failed
    assert "--render-timeout 3 s" in failed[0]["error"]
    assert all(r["status"] == "done" for r in records if r is not failed[0])
    for pid in stopped:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_a_restarted_render_process_that_never_starts_is_replaced_blaming_no_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ocrfleet.render_pool as render_module

    monkeypatch.setattr(render_module, "START_TIMEOUT", 2.0)
    pdf = samples.text_pdf(tmp_path / "doc.pdf", [samples.paragraph(0)])

    async def go() -> tuple[int, int]:
        pool = RenderPool(1, RenderSettings())
        pool.start()
        try:
            first = pool._slots[0].process.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while pool._slots[0].process.pid == first and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            second = pool._slots[0].process.pid
            assert second is not None and second != first
            os.kill(second, signal.SIGSTOP)  # it never gets to READY
            page = await asyncio.wait_for(
                pool.render(RenderRequest("d", str(pdf), 1, "doc.pdf")), timeout=60
            )
            return page.page, pool.restarts
        finally:
            pool.close()

    page, restarts = asyncio.run(go())
    assert page == 1 and restarts == 2
