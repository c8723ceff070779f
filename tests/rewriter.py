"""A text-layer engine that rewrites its own input mid-run (tests only).

Selected with `--engine tests.rewriter:rewriting`; extra args {"target": PDF being read,
"replacement": PDF whose bytes are copied over it, "at_page": N}: when page N is first
inside the engine, the target is overwritten in place, as `cp replacement target` does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ocrfleet.config import EngineConfig
from ocrfleet.engines.base import EngineNeeds, OcrRequest, OcrResult


class RewritingEngine:
    name = "rewriting"

    def __init__(self, config: EngineConfig) -> None:
        self.target = Path(config.extra_args["target"])
        self.replacement = Path(config.extra_args["replacement"])
        self.at_page = int(config.extra_args["at_page"])
        self.done = False

    @property
    def needs(self) -> EngineNeeds:
        return EngineNeeds(image=True, text_layer=True)

    @property
    def max_concurrency(self) -> int:
        return 1

    async def start(self) -> None:
        return None

    async def ocr(self, request: OcrRequest) -> OcrResult:
        if request.page.page == self.at_page and not self.done:
            self.done = True
            with self.target.open("r+b") as handle:  # same inode, like cp over a file
                handle.truncate(0)
                handle.write(self.replacement.read_bytes())
            await asyncio.sleep(0.05)
        return OcrResult(text=request.page.text_layer or "", finish_reason="text_layer")

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"engine": "rewriting"}


def rewriting(config: EngineConfig) -> RewritingEngine:
    return RewritingEngine(config)
