"""Run statistics from worker events: the live progress bar and the numbers of the summary."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from .events import DocumentFinished, EngineReady, PageFinished, WorkerEvent

STAGES = ("render_seconds", "queue_seconds", "infer_seconds")


@dataclass
class RunStats:
    """Counts what workers report, page by page, for this run only."""

    started: float = field(default_factory=time.monotonic)
    statuses: Counter[str] = field(default_factory=Counter)
    documents: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    output_tokens: int = 0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    first_page: float | None = None
    last_page: float | None = None
    engine_ready: float | None = None
    engines: list[dict[str, Any]] = field(default_factory=list)

    def add(self, event: WorkerEvent) -> None:
        if isinstance(event, EngineReady):
            self.engine_ready = self.engine_ready or time.monotonic()
            if not self.engines:
                self.engines.append(event.engine)
        if isinstance(event, DocumentFinished):
            self.documents[event.status] += 1
        if not isinstance(event, PageFinished) or not event.stored:
            return
        now = time.monotonic()
        self.first_page = self.first_page or now
        self.last_page = now
        self.statuses[event.status] += 1
        self.prompt_tokens += event.prompt_tokens
        self.output_tokens += event.output_tokens
        self.stage_seconds["render_seconds"] += event.render_seconds
        self.stage_seconds["queue_seconds"] += event.queue_seconds
        self.stage_seconds["infer_seconds"] += event.infer_seconds

    @property
    def pages(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        pages = self.pages
        ocr_pages = self.statuses["done"] + self.statuses["truncated"]
        # Throughput once the first engine was ready: what the GPU work itself sustained,
        # engine start-up (minutes on a first vLLM start) left out.
        busy = (self.last_page - self.engine_ready) if self.engine_ready and self.last_page else 0
        return {
            "wall_seconds": round(wall, 3),
            "engine_start_seconds": round(self.engine_ready - self.started, 3)
            if self.engine_ready
            else None,
            "pages_per_second_after_engine_start": round(pages / busy, 4) if busy > 0 else None,
            "engine": self.engines[0] if self.engines else None,
            "pages_processed": pages,
            "pages_by_status": dict(self.statuses),
            "documents_finished": dict(self.documents),
            "pages_per_second": round(pages / wall, 4) if wall > 0 else 0.0,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "output_tokens_per_second": round(self.output_tokens / wall, 2) if wall > 0 else 0.0,
            "seconds_per_page_by_stage": {
                stage.removesuffix("_seconds"): round(total / ocr_pages, 4) if ocr_pages else 0.0
                for stage, total in self.stage_seconds.items()
            },
        }


class Progress:
    """One bar for the node: pages done of pages to do, pages/s, ETA, per-worker rates."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self._bar: tqdm[Any] | None = None
        if enabled:
            self._bar = tqdm(
                total=total,
                initial=done,
                unit="page",
                dynamic_ncols=True,
                smoothing=0.05,
                file=sys.stderr,
                desc="ocrfleet",
            )

    def advance(
        self, rates: dict[str, float] | None = None, gpu_util: dict[str, float] | None = None
    ) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        postfix = {k: f"{v:.2f}/s" for k, v in (rates or {}).items()}
        postfix.update({f"{k} busy": f"{v:.0f}%" for k, v in (gpu_util or {}).items()})
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class TqdmLogHandler(logging.Handler):
    """Log lines that do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)
