"""Engines sharing a GPU: started one after another, a slot that fails at start, fair share
over the slots, and the `--engines-per-gpu auto` rule. Real processes with the scripted engine
pinned to "GPU 0" (CUDA_VISIBLE_DEVICES is set; nothing uses it on CPU)."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.engine_slots import GIB, GpuInfo, choose_engines_per_gpu, model_weight_bytes
from tests.conftest import run_cli
from tests.test_supervisor import SCRIPTED, make_corpus, scripted_args


def run_on_one_gpu(
    tmp_path: Path, engines: int, *options: str, timeout: float = 300
) -> tuple[Path, dict[str, Any], subprocess.CompletedProcess[str]]:
    """`ocrfleet run` with the scripted engine, K engines on "GPU 0": output, summary, process."""
    out = tmp_path / "out"
    result = run_cli(
        "run", str(tmp_path / "in"), "-o", str(out), *SCRIPTED, "--gpus", "0",
        "--engines-per-gpu", str(engines), *options, timeout=timeout,
    )  # fmt: skip
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    return out, summary, result


def worker_start_times(out: Path) -> list[float]:
    with sqlite3.connect(out / "ocrfleet.sqlite") as db:
        return sorted(r[0] for r in db.execute("SELECT started_at FROM workers"))


@pytest.mark.slow
def test_engines_on_one_gpu_start_one_after_another_and_all_get_pages(tmp_path: Path) -> None:
    total = make_corpus(tmp_path / "in", docs=3, pages=10)
    out, summary, result = run_on_one_gpu(
        tmp_path,
        3,
        "--batch-pages",
        "1000",
        # 30 s of pages for one engine alone; the third is ready ~5 s after the first.
        *scripted_args(start_seconds=1.5, delay=1.0, concurrency=1),
    )
    assert result.returncode == 0, result.stderr
    starts = worker_start_times(out)
    # Each engine process starts only once its neighbour's engine is ready (1.5 s to start).
    assert len(starts) == 3 and all(b - a >= 1.4 for a, b in itertools.pairwise(starts)), starts
    pages = [w["pages"] for w in summary["workers"]]
    assert sum(pages) == total and min(pages) > 0, pages
    assert summary["engines_per_gpu"]["engines"] == 3


@pytest.mark.slow
def test_a_slot_that_fails_at_start_restarts_and_still_gets_its_share(tmp_path: Path) -> None:
    total = make_corpus(tmp_path / "in", docs=3, pages=12)
    _, summary, result = run_on_one_gpu(
        tmp_path,
        3,
        "--batch-pages",
        "1000",
        *scripted_args(
            delay=0.5,
            concurrency=1,
            fail_first_starts={"dir": str(tmp_path / "starts"), "count": 1},
        ),
    )
    assert result.returncode == 0, result.stderr
    pages = [w["pages"] for w in summary["workers"]]
    assert sum(pages) == total and min(pages) > 0, pages  # the restarted slot did pages too
    assert sorted(w["restarts"] for w in summary["workers"]) == [0, 0, 1]
    assert all(w["engine_ready"] for w in summary["workers"])
    assert not any(w["stopped_while_starting"] for w in summary["workers"])


@pytest.mark.slow
def test_a_slot_given_up_at_start_is_reported_and_the_others_do_every_page(
    tmp_path: Path,
) -> None:
    total = make_corpus(tmp_path / "in", docs=2, pages=10)
    _, summary, result = run_on_one_gpu(
        tmp_path, 2, "--max-worker-restarts", "0", "--batch-pages", "1000",
        *scripted_args(
            delay=0.02,
            concurrency=1,
            fail_first_starts={"dir": str(tmp_path / "starts"), "count": 1},
        ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dead = [w for w in summary["workers"] if w["gave_up"]]
    live = [w for w in summary["workers"] if not w["gave_up"]]
    assert len(dead) == 1 and not dead[0]["engine_ready"] and dead[0]["pages"] == 0
    assert "out of GPU memory" in dead[0]["start_error"]
    assert live[0]["pages"] == total
    assert "out of GPU memory" in result.stderr  # the give-up line quotes the cause


@pytest.mark.slow
def test_engines_still_starting_when_every_page_is_done_are_stopped(tmp_path: Path) -> None:
    total = make_corpus(tmp_path / "in", docs=1, pages=4)
    # The first engine is ready at once (the others would take 120 s) and does every page.
    out, summary, result = run_on_one_gpu(
        tmp_path, 3, *scripted_args(stagger={"dir": str(tmp_path / "ready"), "seconds": 120}),
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [w["pages"] for w in summary["workers"]] == [total, 0, 0]
    assert [w["engine_ready"] for w in summary["workers"]] == [True, False, False]
    assert all(w["start_error"] is None and not w["gave_up"] for w in summary["workers"])
    # Why the two have no page: they were stopped while starting, said in the summary and log.
    assert [w["stopped_while_starting"] for w in summary["workers"]] == [False, True, True]
    stopped = [line for line in result.stderr.splitlines() if "still starting: stopped" in line]
    assert len(stopped) == 2, result.stderr[-2000:]
    with sqlite3.connect(out / "ocrfleet.sqlite") as db:
        assert (
            db.execute("SELECT COUNT(*) FROM workers WHERE stopped_at IS NULL").fetchone()[0] == 0
        )


@pytest.mark.slow
def test_a_slot_whose_restart_is_not_ready_before_the_end_says_why_it_has_no_page(
    tmp_path: Path,
) -> None:
    """H200, 2026-12-03: one of four engines failed at start, and its restart was still
    starting when the others had done every page. Its summary entry and the log say so."""
    total = make_corpus(tmp_path / "in", docs=1, pages=4)
    _, summary, result = run_on_one_gpu(
        tmp_path, 2,
        *scripted_args(
            fail_first_starts={"dir": str(tmp_path / "starts"), "count": 1},
            # The first engine to get through its start is ready at once, the next in 120 s.
            stagger={"dir": str(tmp_path / "ready"), "seconds": 120},
        ),
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    failed, other = summary["workers"]
    assert other["pages"] == total and not other["stopped_while_starting"]
    assert failed["pages"] == 0 and failed["restarts"] == 1 and not failed["gave_up"]
    assert failed["stopped_while_starting"] and not failed["engine_ready"]
    assert "out of GPU memory" in failed["start_error"]
    [line] = [x for x in result.stderr.splitlines() if "still starting: stopped" in x]
    assert "worker 0 (gpu0): every page is done" in line, line
    assert "its last start failed: RuntimeError: scripted engine failed at start" in line, line


@pytest.mark.parametrize(
    ("name", "gib", "gpus", "cores", "expected"),
    [
        # g6.12xlarge: 4× L4 (22.5 GiB usable), 48 vCPUs: memory allows one engine.
        ("NVIDIA L4", 22.5, 4, 48, 1),
        ("NVIDIA A100-SXM4-40GB", 39.4, 8, 96, 2),
        # Memory allows 5 (4.1 GiB of KV each), and so does the CPU.
        ("NVIDIA H100 80GB HBM3", 79.6, 8, 208, 5),
        # The lent H200 host: 16 cores, 5 engines (the cap); with 12 cores the CPU allows 4.
        ("NVIDIA H200", 139.8, 1, 16, 5),
        ("NVIDIA H200", 139.8, 1, 12, 4),
        ("NVIDIA H200", 139.8, 1, 64, 5),
        # The same H200 with 6 cores: CPU-bound engines, two of them.
        ("NVIDIA H200", 139.8, 1, 6, 2),
        ("NVIDIA H200", 139.8, 1, 2, 1),
    ],
)
def test_engines_per_gpu_auto_rule(
    name: str, gib: float, gpus: int, cores: int, expected: int
) -> None:
    choice = choose_engines_per_gpu(
        GpuInfo(name, int(gib * GIB)),
        gpus=gpus,
        cpu_cores=cores,
        weights_bytes=model_weight_bytes("deepseek-ai/DeepSeek-OCR"),
        gpu_memory_utilization=0.9,
    )
    assert choice.engines == expected, choice
    assert choice.by_memory is not None and choice.by_cpu is not None
    assert choice.engines == max(1, min(choice.by_memory, choice.by_cpu, 5))


def test_weights_come_from_a_local_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "model-00001.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / "model-00002.safetensors").write_bytes(b"\0" * 500)
    assert model_weight_bytes(str(tmp_path)) == 1500
    assert model_weight_bytes(str(tmp_path / "absent")) == 6_670_000_000
