"""What the parent process asks of an engine's kind: the GPU share of each engine slot, the
GPUs a run uses, and what a worker reports when its engine fails to start or fails a page."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.config import EngineConfig, RunConfig
from ocrfleet.engine_slots import GIB, WorkerSpec, plan_workers
from ocrfleet.engines import engine_kind
from ocrfleet.engines.auto import AutoEngine
from ocrfleet.engines.base import OcrRequest, OcrResult
from ocrfleet.layout import ledger_path
from ocrfleet.ledger import Ledger
from ocrfleet.page_worker import PageWorker
from ocrfleet.plan import make_plan
from ocrfleet.resolve import resolve_run_config
from ocrfleet.supervisor import EXIT_ENGINE_START, EXIT_ERROR, _serve
from ocrfleet.testing import samples
from tests.conftest import run_cli
from tests.fakes import ScriptedEngine
from tests.test_supervisor import SCRIPTED, make_corpus


def slots(engine: EngineConfig, gpus: tuple[int, ...], per_gpu: int, kv: int | None) -> Any:
    config = RunConfig(
        inputs=("x.pdf",), output_dir=Path("out"), engine=engine, gpus=gpus,
        engines_per_gpu=per_gpu,
    )  # fmt: skip
    return [engine_kind(engine).per_slot_config(engine, s) for s in plan_workers(config, 8, kv)]


def test_engines_sharing_a_gpu_split_its_memory_and_get_their_kv_budget() -> None:
    vllm = EngineConfig(name="vllm", gpu_memory_utilization=0.9)
    shared = slots(vllm, (0, 1), 3, 20 * GIB)
    assert len(shared) == 6
    assert all(c.gpu_memory_utilization == pytest.approx(0.3) for c in shared)
    assert all(c.extra_args["kv_cache_memory_bytes"] == 20 * GIB for c in shared)
    # auto hands its OCR pages to vLLM: the same split.
    auto = replace(vllm, name="auto", ocr_engine="vllm")
    assert [c.gpu_memory_utilization for c in slots(auto, (0,), 2, None)] == [0.45, 0.45]
    # A budget the user set with --vllm-arg wins over the planner's.
    own = replace(vllm, extra_args={"kv_cache_memory_bytes": 5})
    assert slots(own, (0,), 2, 20 * GIB)[0].extra_args["kv_cache_memory_bytes"] == 5


def test_slots_that_share_nothing_keep_the_engine_config() -> None:
    vllm = EngineConfig(name="vllm", gpu_memory_utilization=0.8)
    assert slots(vllm, (0,), 1, None) == [vllm]
    tp = replace(vllm, tensor_parallel_size=2)  # one engine over two GPUs
    assert slots(tp, (0, 1), 1, None) == [tp]
    text = EngineConfig(name="text")
    cpu = WorkerSpec(0, (), 2)
    assert engine_kind(text).per_slot_config(text, cpu) is text


def test_the_engine_kind_decides_which_gpus_a_run_uses(tmp_path: Path) -> None:
    def gpus(engine: EngineConfig, given: tuple[int, ...]) -> tuple[int, ...]:
        config = RunConfig(inputs=("x.pdf",), output_dir=tmp_path, engine=engine, gpus=given)
        return resolve_run_config(config).fleet.gpus

    assert gpus(EngineConfig(name="text"), (0, 1)) == ()  # a CPU engine drops --gpus
    assert gpus(EngineConfig(name="auto", ocr_engine="none"), (0,)) == ()
    assert gpus(EngineConfig(name="vllm"), (1, 3)) == (1, 3)
    assert gpus(EngineConfig(name="tests.fakes:scripted"), (2,)) == (2,)  # as given


@pytest.mark.slow
def test_each_worker_runs_its_engine_with_its_share_of_the_gpu(tmp_path: Path) -> None:
    """Real worker processes: the config an engine is built with is its slot's."""
    make_corpus(tmp_path / "in", docs=1, pages=2)
    out = tmp_path / "out"
    result = run_cli(
        "run", str(tmp_path / "in"), "-o", str(out), *SCRIPTED, "--gpus", "0",
        "--engines-per-gpu", "2", "--gpu-memory-utilization", "0.8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    assert summary["this_run"]["engine"]["gpu_memory_utilization"] == pytest.approx(0.4)


def make_worker(tmp_path: Path, engine: Any) -> tuple[PageWorker, Ledger]:
    pdf = samples.text_pdf(tmp_path / "in" / "doc.pdf", ["Λέξεις"])
    config = RunConfig(
        inputs=(str(pdf),),
        output_dir=tmp_path / "out",
        engine=EngineConfig(name="tests.fakes:scripted"),
        max_attempts=2,
    )
    ledger = Ledger(ledger_path(config.output_dir, 1, 0))
    make_plan(config, ledger)
    return PageWorker(config, ledger, engine, "w", render_workers=1), ledger


def serve(worker: PageWorker) -> int:
    parent, child = multiprocessing.Pipe(duplex=True)
    try:
        return asyncio.run(_serve(worker, child, lambda _event: None))
    finally:
        parent.close()
        child.close()


def test_an_engine_that_fails_to_start_is_told_apart_from_a_worker_failure(
    tmp_path: Path,
) -> None:
    """Whatever the engine (auto wraps another one and has no start flag of its own)."""
    failing = ScriptedEngine(EngineConfig(name="x:y", extra_args={"fail_start": True}))
    worker, ledger = make_worker(tmp_path / "a", AutoEngine(failing))
    assert serve(worker) == EXIT_ENGINE_START
    ledger.close()

    class FailsLater(ScriptedEngine):
        async def close(self) -> None:  # after the engine started and did its pages
            raise OSError("the engine left a mess")

    later, ledger = make_worker(tmp_path / "b", AutoEngine(FailsLater(EngineConfig(name="x:y"))))
    assert serve(later) == EXIT_ERROR
    ledger.close()


class BuggyEngine(ScriptedEngine):
    async def ocr(self, request: OcrRequest) -> OcrResult:
        raise RuntimeError("index out of range in the engine's own code")


def test_an_exception_other_than_engine_error_is_an_engine_crash_not_a_page_failure(
    tmp_path: Path,
) -> None:
    """EngineError is how an engine fails a page; anything else takes the worker down, and
    the supervisor counts a crash against the pages in flight (poison after two)."""
    worker, ledger = make_worker(tmp_path, BuggyEngine(EngineConfig(name="x:y")))
    with pytest.raises(RuntimeError, match="engine's own code"):
        asyncio.run(worker.run())
    assert ledger.counts().pages["failed"] == 0
    ledger.close()


def test_engine_names_are_checked_when_the_config_is_made(tmp_path: Path) -> None:
    from ocrfleet.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown OCR engine 'vlm'"):
        EngineConfig(name="auto", ocr_engine="vlm")
    with pytest.raises(ConfigError, match="--ocr-engine vllm applies to --engine auto only"):
        EngineConfig(name="text", ocr_engine="vllm")

    def ocr_capable(name: str, ocr_engine: str = "default") -> bool:
        engine = EngineConfig(name=name, ocr_engine=ocr_engine)
        return RunConfig(inputs=("x.pdf",), output_dir=tmp_path, engine=engine).ocr_capable

    assert not ocr_capable("text") and not ocr_capable("auto", "none")
    assert ocr_capable("auto", "tesseract") and ocr_capable("vllm") and ocr_capable("x:y")
