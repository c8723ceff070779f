"""A text-layer engine that rewrites its own input mid-run (tests only).

Selected with `--engine tests.rewriter:rewriting`; extra args {"target": PDF being read,
"replacement": PDF whose bytes are copied over it, "at_page": N}: when page N is first
inside the engine, the target is overwritten in place, as `cp replacement target` does;
"keep_mtime": its mtime is put back afterwards, as `cp -p` or `rsync -t --inplace` do.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from ocrfleet.config import EngineConfig
from ocrfleet.engines.base import OcrRequest, OcrResult
from tests.swapping import InputSwappingEngine


class RewritingEngine(InputSwappingEngine):
    name = "rewriting"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.at_page = int(config.extra_args["at_page"])
        # "chunks": written in that many pieces, "pause" seconds apart, from a thread (a slow cp).
        self.chunks = int(config.extra_args.get("chunks", 1))
        self.pause = float(config.extra_args.get("pause", 0.0))
        self.keep_mtime = bool(config.extra_args.get("keep_mtime", False))

    async def ocr(self, request: OcrRequest) -> OcrResult:
        if request.page.page == self.at_page and not self.done:
            self.done = True
            if self.chunks == 1:
                self._write()
            else:
                threading.Thread(target=self._write, daemon=True).start()
            await asyncio.sleep(0.05)
        return OcrResult(text=request.page.text_layer or "", finish_reason="text_layer")

    def _write(self) -> None:
        data = self.replacement.read_bytes()
        before = self.target.stat()
        step = -(-len(data) // self.chunks)
        with self.target.open("r+b") as handle:  # same inode, like cp over a file
            handle.truncate(0)
            for start in range(0, len(data), step):
                handle.write(data[start : start + step])
                handle.flush()
                time.sleep(self.pause)
        if self.keep_mtime:
            os.utime(self.target, ns=(before.st_atime_ns, before.st_mtime_ns))


def rewriting(config: EngineConfig) -> RewritingEngine:
    return RewritingEngine(config)
