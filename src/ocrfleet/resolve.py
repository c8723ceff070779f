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

from .config import RunConfig
from .engines import engine_kind
from .setup_checks import listed_gpus


def visible_gpus() -> list[int]:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(v) for v in visible.split(",") if v.strip().isdigit()]
    return listed_gpus()


def resolve_run_config(config: RunConfig) -> RunConfig:
    """Fill in what `config` leaves to the machine: idempotent, cheap on a resolved config.

    The engine's kind decides auto's OCR engine (vLLM when a GPU and vLLM are there, else
    Tesseract when installed, else none) and checks Tesseract, so a missing binary or language
    stops the run before it starts; then whether the run's GPUs are detected or dropped."""
    engine = engine_kind(config.engine).resolve(config.engine, config.fleet.gpus, visible_gpus)
    use = engine_kind(engine).gpu_use(engine)
    gpus = config.fleet.gpus
    if use == "none":
        gpus = ()  # CPU engines: --gpus would only multiply the workers
    elif not gpus and config.fleet.detect_gpus and use == "planned":
        gpus = tuple(visible_gpus())
    progress = sys.stderr.isatty() if config.progress is None else config.progress
    fleet = replace(config.fleet, gpus=gpus)
    return replace(config, engine=engine, fleet=fleet, progress=progress)
