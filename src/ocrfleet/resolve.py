"""What a run decides from the machine it starts on, before anything is written.

The GPUs it may use (CUDA_VISIBLE_DEVICES, else what nvidia-smi lists), the OCR engine behind
`--engine auto`, and whether a progress bar is drawn (the local side of an s3:// output is
`RunConfig.for_output`). The CLI and the Python API (`ocrfleet.run`) both go through
`resolve_run_config`, so a run behaves the same from either.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

from .config import EngineConfig, RunConfig
from .setup_checks import listed_gpus


def visible_gpus() -> list[int]:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(v) for v in visible.split(",") if v.strip().isdigit()]
    return listed_gpus()


def uses_vllm(engine: EngineConfig) -> bool:
    return engine.name == "vllm" or (engine.name == "auto" and engine.ocr_engine == "vllm")


def resolve_ocr_engine(engine: EngineConfig, gpus: tuple[int, ...]) -> EngineConfig:
    """`--engine auto` with no `--ocr-engine`: vLLM when a GPU and vLLM are there, else
    Tesseract when installed, else none. Tesseract (as the engine or the OCR engine) is
    checked here, so a missing binary or language stops the run before it starts."""
    from .engines.choose import check_tesseract, default_ocr_engine

    if engine.name == "auto" and engine.ocr_engine == "default":
        chosen = default_ocr_engine(gpus or tuple(visible_gpus()), engine.tesseract_langs)
        engine = replace(engine, ocr_engine=chosen)
    if engine.name == "tesseract" or (engine.name == "auto" and engine.ocr_engine == "tesseract"):
        check_tesseract(engine.tesseract_langs)
    return engine


def resolve_run_config(config: RunConfig) -> RunConfig:
    """Fill in what `config` leaves to the machine: idempotent, cheap on a resolved config."""
    engine = resolve_ocr_engine(config.engine, config.fleet.gpus)
    gpus = config.fleet.gpus
    if engine.name in ("text", "tesseract", "auto") and not uses_vllm(engine):
        gpus = ()  # CPU engines: --gpus would only multiply the workers
    elif not gpus and config.fleet.detect_gpus and uses_vllm(engine):
        gpus = tuple(visible_gpus())
    progress = sys.stderr.isatty() if config.progress is None else config.progress
    fleet = replace(config.fleet, gpus=gpus)
    return replace(config, engine=engine, fleet=fleet, progress=progress)
