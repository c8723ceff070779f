"""The `text` engine: a page's own text layer, read by pypdfium2 in the render process.

A real engine for born-digital PDFs, the CPU quick start, and end-to-end tests of the whole
pipeline without a GPU. Image-only pages come back empty (flagged `empty_output`).
"""

from __future__ import annotations

from typing import Any

from .base import EngineNeeds, OcrRequest, OcrResult


class TextLayerEngine:
    name = "text"

    @property
    def needs(self) -> EngineNeeds:
        # The image is still rendered: blank detection and figure crops work from it.
        return EngineNeeds(image=True, text_layer=True)

    @property
    def max_concurrency(self) -> int:
        return 8

    async def start(self) -> None:
        return None

    async def ocr(self, request: OcrRequest) -> OcrResult:
        text = request.page.text_layer or ""
        return OcrResult(text=text, finish_reason="text_layer")

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        import pypdfium2

        return {"engine": "text", "pypdfium2": pypdfium2.version.PYPDFIUM_INFO.version}
