"""The `auto` engine: each page's text layer where the router trusts it, OCR for the rest.

The render process has already decided (ocrfleet.route, on the page it drew): a `text` page
goes out as its cleaned text layer, an `ocr` page goes to the OCR engine, or, with no OCR
engine, comes back as `needs_ocr` so a later run with one redoes exactly those pages.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import EngineNeeds, OcrEngine, OcrRequest, OcrResult

NEEDS_OCR = "needs_ocr"  # finish reason of a page routed to OCR with no engine to do it


class AutoEngine:
    name = "auto"

    def __init__(self, ocr: OcrEngine | None) -> None:
        self.ocr_engine = ocr

    @property
    def needs(self) -> EngineNeeds:
        inner = self.ocr_engine.needs if self.ocr_engine is not None else EngineNeeds()
        return EngineNeeds(
            image=True, text_layer=True, prepare=inner.prepare, route=True, min_dpi=inner.min_dpi
        )

    @property
    def max_concurrency(self) -> int:
        return self.ocr_engine.max_concurrency if self.ocr_engine is not None else 8

    async def start(self) -> None:
        if self.ocr_engine is not None:
            await self.ocr_engine.start()

    async def ocr(self, request: OcrRequest) -> OcrResult:
        route = request.page.route
        if route is None or route.route == "text":
            text = route.text if route is not None else request.page.text_layer or ""
            return OcrResult(text=text, finish_reason="text_layer", engine="text")
        if self.ocr_engine is None:
            return OcrResult(text="", finish_reason=NEEDS_OCR, engine="none")
        result = await self.ocr_engine.ocr(request)
        return dataclasses.replace(result, engine=result.engine or self.ocr_engine.name)

    async def close(self) -> None:
        if self.ocr_engine is not None:
            await self.ocr_engine.close()

    def describe(self) -> dict[str, Any]:
        inner = self.ocr_engine.describe() if self.ocr_engine is not None else None
        return {"engine": "auto", "ocr_engine": inner}
