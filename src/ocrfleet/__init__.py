"""ocrfleet: resumable PDF → Markdown at corpus scale with DeepSeek-OCR on vLLM.

The public API is the CLI's, as a library::

    from ocrfleet import RunConfig, run

    result = run(RunConfig(inputs=("scans/",), output_dir=Path("out")))
    print(result.exit_code, result.summary.pages)

`run` decides what the config leaves to the machine (GPUs, the OCR engine behind the default
`auto` engine, the progress bar), refuses a wrong setup with `ConfigError` before anything is
written, and resumes from the output directory's ledger. The errors are in `ocrfleet.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import (
    EngineConfig,
    FleetConfig,
    PagePolicy,
    RenderConfig,
    RunConfig,
    SyncConfig,
)
from .errors import (
    ConfigError,
    EngineDead,
    EngineError,
    InputError,
    LedgerError,
    OcrfleetError,
    RenderError,
)

if TYPE_CHECKING:
    from .runner import RunResult

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EngineConfig",
    "EngineDead",
    "EngineError",
    "FleetConfig",
    "InputError",
    "LedgerError",
    "OcrfleetError",
    "PagePolicy",
    "RenderConfig",
    "RenderError",
    "RunConfig",
    "RunResult",
    "SyncConfig",
    "__version__",
    "run",
]


def run(config: RunConfig, *, handle_signals: bool = False) -> RunResult:
    """Run (or resume) `config` as `ocrfleet run` does; see `ocrfleet.runner.run`.

    `handle_signals=True` (only from the main thread) makes Ctrl-C/SIGTERM finish the pages
    in flight and stop, as in the CLI; otherwise the caller's own handlers stay in place.
    """
    from .runner import run as run_corpus  # the pipeline's modules load on first use

    return run_corpus(config, handle_signals=handle_signals)


def __getattr__(name: str) -> object:
    if name == "RunResult":
        from .runner import RunResult

        return RunResult
    raise AttributeError(f"module 'ocrfleet' has no attribute {name!r}")
