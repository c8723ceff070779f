"""An engine whose first page outlives its document (tests only).

Selected with `--engine tests.figure_race:racing`; extra args {"target": PDF being read,
"replacement": PDF whose bytes are copied over it, "ledger": the run's ledger}. The first
page inside the engine overwrites the target (as `cp replacement target` does), waits until
another page of the run has re-planned the document (its old bytes retired in the ledger),
and only then returns grounded output with a figure: the page was inside the engine when its
document gave up its output name. Every other page returns its text layer at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from ocrfleet.config import EngineConfig
from ocrfleet.engines.base import OcrRequest, OcrResult
from tests.swapping import InputSwappingEngine

FIGURE = (
    "<|ref|>text<|/ref|><|det|>[[100, 50, 900, 90]]<|/det|>\nold bytes' page\n\n"
    "<|ref|>image<|/ref|><|det|>[[100, 200, 500, 600]]<|/det|>\n"
)
WAIT_S = 30.0


class RacingEngine(InputSwappingEngine):
    name = "racing"
    concurrency = 4

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.ledger = Path(config.extra_args["ledger"])

    async def ocr(self, request: OcrRequest) -> OcrResult:
        if self.done:
            return OcrResult(text=request.page.text_layer or "", finish_reason="stop")
        self.done = True
        self.target.write_bytes(self.replacement.read_bytes())
        deadline = time.monotonic() + WAIT_S
        while not self._retired() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return OcrResult(text=FIGURE, finish_reason="stop")

    def _retired(self) -> bool:
        db = sqlite3.connect(f"{self.ledger.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return bool(db.execute("SELECT COUNT(*) FROM retired").fetchone()[0])
        except sqlite3.Error:
            return False
        finally:
            db.close()


def racing(config: EngineConfig) -> RacingEngine:
    return RacingEngine(config)
