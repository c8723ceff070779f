"""Wrong setups caught in the parent process, before any worker starts or any file is written.

Each check raises ConfigError with one line that says what to do (the CLI exits 2). They
cost milliseconds: nothing heavy is imported (vLLM and torch are only looked up), so a user
who forgot `uv sync --extra vllm` learns it at once instead of after six worker restarts.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .config import RunConfig
from .engines import engine_kind
from .engines.base import ModuleFinder
from .errors import ConfigError
from .gpu_sharing import choose_mps

# Below this, the ledger and a few documents' outputs do not fit: the run would die mid-way.
# A disk with (nearly) no room left: refused before anything starts. Running out later is
# handled as it happens (diskfull.py: a clean stop, exit 3, resumable).
MIN_FREE_BYTES = 512 * 1024


def module_installed(name: str) -> bool:
    """True when `name` can be imported here; looked up, not imported (torch takes seconds)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_run_setup(
    config: RunConfig,
    *,
    installed: ModuleFinder = module_installed,
    min_free_bytes: int = MIN_FREE_BYTES,
) -> None:
    """Every check, cheapest and most basic first; raises ConfigError at the first failure."""
    engine_kind(config.engine).check(config, installed)  # vLLM's install, GPUs, model, ...
    check_output_dir(config.output_dir, min_free_bytes)
    if config.fleet.mps == "on":  # its control program, before anything is planned
        choose_mps("on", 1, config.fleet.gpus, os.environ, config.engine.tensor_parallel_size)


def listed_gpus() -> list[int]:
    """Physical GPU indices nvidia-smi lists ([] without nvidia-smi or when it fails)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(m[1]) for m in re.finditer(r"^GPU (\d+):", listing, re.M)]


def check_engine_factory(name: str) -> None:
    """`module:factory`: importable here, as each worker would import it."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--engine {name!r}: write module:factory, e.g. mypkg.engines:create")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"--engine {name}: cannot import {module_name} ({type(exc).__name__}: {exc}); "
            "check the spelling, or use vllm or text"
        ) from None
    if not callable(getattr(module, attr, None)):
        raise ConfigError(
            f"--engine {name}: {module_name} has no callable {attr!r}; check the spelling"
        )


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(output_dir: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Writable, a directory, with room. Probed by writing a file where OUT is (or would be
    created): permission bits lie for root, a read-only mount does not."""
    base = _nearest_existing(output_dir)
    if not base.is_dir():
        what = "is a file" if base == output_dir.absolute() else f"is inside the file {base}"
        raise ConfigError(
            f"--output-dir {output_dir} {what}, not a directory; choose a directory path"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".ocrfleet-probe-", dir=base)
    except OSError as exc:
        raise ConfigError(
            f"--output-dir {output_dir}: cannot write in {base} ({exc.strerror or exc}); "
            "choose a writable directory"
        ) from None
    os.close(fd)
    Path(probe).unlink()
    free = shutil.disk_usage(base).free
    if free < min_free_bytes:
        raise ConfigError(
            f"--output-dir {output_dir}: only {free / 2**20:.1f} MiB free on {base}; "
            f"free some space or choose another disk (at least {min_free_bytes / 2**20:g} MiB)"
        )
