"""The engine seam: everything the pipeline needs from an OCR engine, and nothing more.

An engine turns one rendered page into text. The pipeline owns retries, timeouts (it cancels
`ocr`; an engine must abort the request when cancelled), prompts and bookkeeping. Test doubles
implement this protocol inside tests; the product ships `vllm` and `text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..page import RenderedPage


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
