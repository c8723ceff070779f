"""The engine seam: everything the pipeline needs from an OCR engine, and nothing more.

An engine turns one rendered page into text. The pipeline owns retries, timeouts (it cancels
`ocr`; an engine must abort the request when cancelled), prompts and bookkeeping. Test doubles
implement this protocol inside tests; the product ships `vllm` and `text`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..page import RenderedPage

if TYPE_CHECKING:
    from ..config import EngineConfig, RunConfig
    from ..engine_slots import WorkerSpec

# How an engine uses the GPUs of a run: "planned" (ocrfleet's GPU engine: GPUs detected when
# none are given, engines per GPU and their memory planned), "none" (a CPU engine: --gpus is
# dropped), "given" (an engine of the user's own: the GPUs given, none detected), "undecided"
# (auto whose OCR engine is chosen later, on the machine that runs it).
GpuUse = Literal["planned", "none", "given", "undecided"]
# Whether a module can be imported here (looked up, not imported); tests pass their own.
ModuleFinder = Callable[[str], bool]


@dataclass(frozen=True)
class OcrRequest:
    request_id: str
    page: RenderedPage
    prompt: str
    prompt_name: str
    max_tokens: int


@dataclass(frozen=True)
class OcrResult:
    text: str
    # "stop": the model ended the page (EOS); "length": it hit max_tokens (loop or truncation);
    # "text_layer": read from the PDF, no model involved.
    finish_reason: str
    prompt_tokens: int = 0
    output_tokens: int = 0
    # Engine-side seconds, where the engine can tell: queued, first token, decode.
    timings: dict[str, float] = field(default_factory=dict)
    # Which engine made the text, when one engine hands pages to others (auto).
    engine: str | None = None


@dataclass(frozen=True)
class EngineNeeds:
    """What the render pool must produce for this engine."""

    image: bool = True
    text_layer: bool = False
    # A preparer name (ocrfleet.prepare) run inside render processes, or None.
    prepare: str | None = None
    # The text-layer verdict of ocrfleet.route on each page (the auto engine).
    route: bool = False
    # Pages are rendered at least at this resolution (Tesseract wants 300 dpi).
    min_dpi: int = 0


class EngineKind(Protocol):
    """What the parent process of a run asks of an engine, before any worker starts.

    One per engine name (kinds.engine_kind); callers outside engines/ ask it instead of
    comparing engine names.
    """

    name: str

    def gpu_use(self, engine: EngineConfig) -> GpuUse: ...

    def resolve(
        self, engine: EngineConfig, gpus: tuple[int, ...], visible: Callable[[], Sequence[int]]
    ) -> EngineConfig:
        """The config with what it leaves to the machine decided (auto's OCR engine), and
        checks that need the machine (Tesseract's languages): ConfigError when it cannot run.
        `visible` lists the GPUs this process may use (asked only when needed)."""
        ...

    def check(self, config: RunConfig, installed: ModuleFinder) -> None:
        """Raise ConfigError (one line that says what to do) for a setup that cannot work."""
        ...

    def warnings(self, config: RunConfig) -> list[str]:
        """Options that work but not as the user may think (logged when the run starts)."""
        ...

    def per_slot_config(self, engine: EngineConfig, slot: WorkerSpec) -> EngineConfig:
        """The config of the engine in one slot (its share of a GPU that engines share)."""
        ...

    def ocr_engine(self, engine: EngineConfig) -> str | None:
        """The engine of the pages routed to OCR, for an engine that routes (auto)."""
        ...

    def uses_model(self, engine: EngineConfig) -> bool:
        """Pages go through `engine.model` (the run summary names it)."""
        ...


class OcrEngine(Protocol):
    name: str

    @property
    def needs(self) -> EngineNeeds: ...

    @property
    def max_concurrency(self) -> int:
        """Pages this engine wants in flight at once to stay busy."""
        ...

    async def start(self) -> None: ...

    async def ocr(self, request: OcrRequest) -> OcrResult: ...

    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """Settings and versions for logs and the run summary."""
        ...
