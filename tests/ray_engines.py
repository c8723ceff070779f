"""A slowed text engine for the Ray tests: the real text-layer engine, one page at a time,
each taking `delay` seconds, so a node can be removed while its shard is mid-run. Its records
are the text engine's (same name, same text), so outputs compare with a plain text run."""

from __future__ import annotations

import asyncio

from ocrfleet.config import EngineConfig
from ocrfleet.engines.base import OcrRequest, OcrResult
from ocrfleet.engines.text import TextLayerEngine


class SlowTextEngine(TextLayerEngine):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    @property
    def max_concurrency(self) -> int:
        return 1

    async def ocr(self, request: OcrRequest) -> OcrResult:
        await asyncio.sleep(self.delay)
        return await super().ocr(request)


def slow_text(config: EngineConfig) -> SlowTextEngine:
    return SlowTextEngine(float(config.extra_args.get("delay", 0.3)))
