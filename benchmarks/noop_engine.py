"""A benchmark-only engine: consumes each rendered image and returns at once.

With it, `ocrfleet run` measures the pipeline's own cost (claiming, rendering, transfer,
post-processing, ledger, writers) with no model in the way. Never used by the product.
"""

from __future__ import annotations

from typing import Any

from ocrfleet.config import EngineConfig
from ocrfleet.engines.base import EngineNeeds, OcrRequest, OcrResult


class NoopEngine:
    name = "noop"

    def __init__(self, config: EngineConfig) -> None:
        self.concurrency = int(config.extra_args.get("concurrency", 16))

    @property
    def needs(self) -> EngineNeeds:
        return EngineNeeds(image=True)

    @property
    def max_concurrency(self) -> int:
        return self.concurrency

    async def start(self) -> None:
        return None

    async def ocr(self, request: OcrRequest) -> OcrResult:
        pixels = request.page.pixels
        # Touch the image as an engine would read it: one byte per 4 KiB page of memory.
        checksum = sum(memoryview(pixels).cast("B")[::4096]) % 251 if pixels is not None else 0
        return OcrResult(text=f"page {request.page.page} {checksum}", finish_reason="stop")

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"engine": "noop"}


def engine(config: EngineConfig) -> NoopEngine:
    return NoopEngine(config)
