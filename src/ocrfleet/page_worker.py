"""One engine worker: claim pages from the ledger, render, OCR, post-process, record.

The worker keeps its engine continuously fed: as soon as a page leaves, another claimed and
rendered page takes its place, so the engine never waits at a batch barrier. It owns the page
lifecycle: blank detection before inference, attempts with a deadline, a different prompt
when the model does not end the page, the choice of what to keep, and the document assembly
when the last page of a document lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from .attempt_choice import pick_result, prompt_for_attempt
from .config import RenderConfig, RunConfig
from .deepseek.postprocess import clean_page
from .deepseek.prompts import PROMPTS
from .engines.auto import NEEDS_OCR
from .engines.base import OcrEngine, OcrRequest, OcrResult
from .errors import EngineDead, EngineError, LedgerError, RenderError
from .events import DocumentFinished, EngineReady, EventSink, PageFinished
from .layout import OutputLayout
from .ledger import Ledger
from .ledger_rows import AttemptClose, Claim, DocumentRow, PageOutcome
from .ocr_queue import forced_route
from .page import RenderedPage, RenderRequest, RenderSettings
from .page_record import OcrFacts, PageRecord, RenderFacts, WorkFacts
from .page_tree import LoadFailures
from .quality import assess
from .render_pool import RenderPool
from .source_guard import SourceGuard
from .sources import text_to_path
from .writers import assemble_document, save_figures

log = logging.getLogger(__name__)
# Shared page buffers a render process may keep (each 8 MiB or more, created as needed).
MAX_SHARED_BUFFERS = 64

PageKey = tuple[str, int]


@dataclass
class AttemptLog:
    """What the attempts on one page produced, in order."""

    results: list[tuple[str, OcrResult]] = field(default_factory=list)  # (prompt name, result)
    errors: list[str] = field(default_factory=list)
    infer_seconds: float = 0.0
    started: int = 0
    # The last attempt that produced output is recorded with the page, in one transaction.
    last: AttemptClose | None = None


def pages_in_flight(batch_pages: int | None, engine: OcrEngine, render_workers: int) -> int:
    """How many pages a worker keeps between claim and finish (--batch-pages, else the
    engine's batch and 2 per render process)."""
    return batch_pages or (engine.max_concurrency + 2 * render_workers)


def render_settings(
    render: RenderConfig, batch_pages: int | None, engine: OcrEngine, render_workers: int
) -> RenderSettings:
    needs = engine.needs
    keep_pixels = needs.image or render.mode == "clean"
    # Enough shared buffers for a render process's share of the pages in flight (each page
    # holds its pixels and a prepared array), so they rarely fall back to a file each.
    per_page = int(keep_pixels) + int(needs.prepare is not None)
    share = -(-pages_in_flight(batch_pages, engine, render_workers) // max(1, render_workers))
    return RenderSettings(
        dpi=max(render.dpi, needs.min_dpi),
        max_pixels=render.max_image_pixels,
        max_side=render.max_image_side,
        cache_dir=render.image_cache,
        want_text=needs.text_layer,
        prepare=needs.prepare,
        keep_pixels=keep_pixels,
        shared_buffers=min(MAX_SHARED_BUFFERS, per_page * (share + 2)),
        route=needs.route,
    )


class PageWorker:
    """Runs inside an engine worker process (or in-process in tests)."""

    def __init__(
        self,
        config: RunConfig,
        ledger: Ledger,
        engine: OcrEngine,
        worker_id: str,
        *,
        render_workers: int,
        on_event: EventSink | None = None,
        shared_faults: bool = False,
    ) -> None:
        self.config = config
        self.shared_faults = shared_faults  # one GPU fault ends its engines (MPS): see claim
        self.ledger = ledger
        self.engine = engine
        self.worker_id = worker_id
        self.layout = OutputLayout(config.output_dir)
        self.pool = RenderPool(
            render_workers,
            render_settings(config.render, config.fleet.batch_pages, engine, render_workers),
            render_timeout=config.render.render_timeout,
        )
        self.guard = SourceGuard(ledger, config.fleet.num_shards, config.fleet.shard_index)
        self.load_failures = LoadFailures(ledger)
        self.on_event = on_event or (lambda _event: None)
        self.render_workers = render_workers
        self.capacity = 1  # set once the engine has started and knows its batch size
        self.engine_started = False  # a failure before it is a failed engine start
        self._tasks: dict[asyncio.Task[None], PageKey] = {}
        self._in_engine: set[PageKey] = set()
        self._open_attempts: dict[PageKey, int] = {}
        self._docs: dict[str, DocumentRow] = {}
        self._suspects: set[PageKey] = set()
        self._changed = asyncio.Event()
        self._stopping = False
        self._stop_deadline: float | None = None
        self.fatal: BaseException | None = None
        self.pages_finished = 0

    # ---- lifecycle --------------------------------------------------------------------

    async def run(self) -> None:
        """Process pages until none is left, a stop is requested, or the engine dies."""
        self.pool.start()  # render processes load while the engine starts
        try:
            await self.engine.start()
        except BaseException:
            self.pool.close()
            raise
        self.engine_started = True
        self.capacity = pages_in_flight(
            self.config.fleet.batch_pages, self.engine, self.render_workers
        )
        self.on_event(EngineReady(self.capacity, self.engine.describe()))
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._feed()
            await self._drain()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.pool.close()
            await self.engine.close()
        if self.fatal is not None:
            raise self.fatal

    def request_stop(self, grace_seconds: float) -> None:
        """Stop claiming; pages inside the engine may finish within the grace period."""
        if not self._stopping:
            log.info("stop requested: finishing in-flight pages for up to %.0f s", grace_seconds)
        self._stopping = True
        deadline = time.monotonic() + grace_seconds
        self._stop_deadline = min(self._stop_deadline or deadline, deadline)
        self._changed.set()

    async def _heartbeat(self) -> None:
        interval = max(0.5, self.config.fleet.lease_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            self.ledger.heartbeat(self.worker_id, self.config.fleet.lease_seconds)

    async def _feed(self) -> None:
        while not self._stopping and self.fatal is None:
            room = self.capacity - len(self._tasks)
            claims = self._claim(room) if room > 0 else []
            for claim in claims:
                self._spawn(claim)
            if claims:
                await asyncio.sleep(0)
                continue
            if not self._tasks and self.ledger.pending_pages() == 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.5)

    def _claim(self, room: int) -> list[Claim]:
        claims: list[Claim] = []
        me, lease = self.worker_id, self.config.fleet.lease_seconds
        if not self._suspects:
            shared = self.shared_faults
            claims = self.ledger.claim(me, 1, lease, suspect=True, shared_faults=shared)
            self._suspects.update((c.doc_id, c.page) for c in claims)
        room -= len(claims)
        if room > 0:
            held = len(self._tasks) + len(claims)
            claims += self.ledger.claim(me, room, lease, suspect=False, in_flight=held)
        return claims

    def _spawn(self, claim: Claim) -> None:
        key = (claim.doc_id, claim.page)
        task = asyncio.create_task(self._page(claim), name=f"page {claim.doc_id[:8]}:{claim.page}")
        self._tasks[task] = key
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        key = self._tasks.pop(task, None)
        if key is not None:
            self._suspects.discard(key)
        if not task.cancelled() and task.exception() is not None and self.fatal is None:
            self.fatal = task.exception()
        self._changed.set()

    async def _drain(self) -> None:
        """Wait for in-flight pages; on stop, cancel what has not reached the engine."""
        while self._tasks:
            if self.fatal is not None:
                await self._cancel_all()
                return
            if self._stopping:
                for task, key in list(self._tasks.items()):
                    if key not in self._in_engine:
                        task.cancel()
                if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                    await self._cancel_all()
                    return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.5)

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- one page ---------------------------------------------------------------------

    def _document(self, doc_id: str) -> DocumentRow:
        doc = self._docs.get(doc_id)
        if doc is None:
            doc = self._docs[doc_id] = self.ledger.document(doc_id)
        return doc

    async def _page(self, claim: Claim) -> None:
        key = (claim.doc_id, claim.page)
        try:
            doc = self._document(claim.doc_id)
        except LedgerError:
            return  # retired (its file was rewritten) between the claim and now
        if not await self._still_planned(doc):
            self.ledger.release(self.worker_id, [key])  # a fresh look at its document
            return
        claimed_at = time.monotonic()
        try:
            # A redo asked for OCR whatever the router says (auto engine only).
            force = forced_route(self.ledger, *key) if self.engine.needs.route else None
            try:
                rendered = await self.pool.render(
                    RenderRequest(doc.doc_id, text_to_path(doc.path), claim.page, doc.source, force)
                )
            except RenderError as exc:
                if not await self._still_planned(doc):
                    self.ledger.release(self.worker_id, [key])
                    return
                self._finish(doc, claim, None, AttemptLog(errors=[exc.reason]), claimed_at)
                if self.load_failures.failed(doc.doc_id, claim.page, exc.reason):
                    log.error("%s: page tree broken after page %d", doc.source, claim.page)
                return
            if not await self._still_planned(doc):  # rewritten while the page was rendered
                self.ledger.release(self.worker_id, [key])
                return
            self.load_failures.loaded(doc.doc_id)
            if rendered.ink_ratio < self.config.policy.blank_threshold and not rendered.has_text:
                self._finish(doc, claim, rendered, AttemptLog(), claimed_at, blank=True)
                return
            queued = time.monotonic() - claimed_at
            self._in_engine.add(key)
            attempts = await self._attempts(doc, claim, rendered)
            if not await self._still_named(doc):  # re-planned while the page was in the engine
                self._drop(key, attempts)
                return
            self._finish(doc, claim, rendered, attempts, claimed_at, queue_seconds=queued)
        except EngineDead:
            # Leave the claim and the open attempt: the supervisor reaps this worker and
            # counts a crash against every page that was inside the engine.
            raise
        except asyncio.CancelledError:
            attempt_id = self._open_attempts.pop(key, None)
            if attempt_id is not None:
                self.ledger.finish_attempt(attempt_id, "interrupted")
            self.ledger.release(self.worker_id, [key])
            raise
        finally:
            self._in_engine.discard(key)

    async def _still_planned(self, doc: DocumentRow) -> bool:
        """False when the document's file now holds other bytes: it was re-planned, and
        nothing rendered from it may be recorded for the old document."""
        if not self.guard.changed(doc.doc_id) or await self.guard.replan(doc):
            return True
        self._docs.pop(doc.doc_id, None)
        self._changed.set()  # its new pages may be waiting
        return False

    async def _still_named(self, doc: DocumentRow) -> bool:
        """After OCR: the document still holds its output name, so its figures may be saved
        there. A worker that re-planned it (retired, handed over) has noted the name's old
        files, and a figure saved after that note would be left in the new holder's folder.
        No await between this check and `_finish`."""
        if not await self._still_planned(doc):
            return False
        try:
            return self.ledger.document(doc.doc_id).rel == doc.rel
        except LedgerError:
            return False

    def _drop(self, key: PageKey, attempts: AttemptLog) -> None:
        if attempts.last is not None:
            self.ledger.finish_attempt(*attempts.last)
        self._open_attempts.pop(key, None)
        self._docs.pop(key[0], None)
        self.ledger.release(self.worker_id, [key])

    async def _attempts(self, doc: DocumentRow, claim: Claim, rendered: RenderedPage) -> AttemptLog:
        log_ = AttemptLog()
        key = (claim.doc_id, claim.page)
        for n in range(1, self.config.policy.max_attempts + 1):
            prompt_name = prompt_for_attempt(self.config.policy.prompt, n)
            request = OcrRequest(
                request_id=f"{doc.doc_id[:16]}-p{claim.page}-a{claim.attempts + n}",
                page=rendered,
                prompt=PROMPTS[prompt_name],
                prompt_name=prompt_name,
                max_tokens=self.config.engine.max_tokens,
            )
            attempt_id = self.ledger.start_attempt(
                self.worker_id, doc.doc_id, claim.page, claim.attempts + n, prompt_name
            )
            self._open_attempts[key] = attempt_id
            log_.started += 1
            started = time.monotonic()
            try:
                result = await asyncio.wait_for(
                    self.engine.ocr(request), timeout=self.config.policy.timeout_seconds
                )
            except TimeoutError:
                reason = f"timed out after {self.config.policy.timeout_seconds:g} s"
                self._close_attempt(key, "timeout", error=reason)
                log_.errors.append(reason)
                log.warning("%s page %d attempt %d: %s", doc.source, claim.page, n, reason)
                continue
            except EngineDead:
                raise
            except EngineError as exc:  # the engine failed this page; anything else: a crash
                reason = f"engine error: {exc}"
                self._close_attempt(key, "error", error=reason)
                log_.errors.append(reason)
                log.warning("%s page %d attempt %d: %s", doc.source, claim.page, n, reason)
                continue
            finally:
                log_.infer_seconds += time.monotonic() - started
            if log_.last is not None:  # a retry: the attempt before it is closed now
                self.ledger.finish_attempt(*log_.last)
            outcome = "no_eos" if result.finish_reason == "length" else "ok"
            log_.last = (attempt_id, outcome, result.finish_reason, result.output_tokens)
            log_.results.append((prompt_name, result))
            if result.finish_reason != "length":
                break
        return log_

    def _close_attempt(self, key: PageKey, outcome: str, **fields: Any) -> None:
        attempt_id = self._open_attempts.pop(key, None)
        if attempt_id is not None:
            self.ledger.finish_attempt(attempt_id, outcome, **fields)

    # ---- finishing --------------------------------------------------------------------

    def _finish(
        self,
        doc: DocumentRow,
        claim: Claim,
        rendered: RenderedPage | None,
        attempts: AttemptLog,
        claimed_at: float,
        *,
        blank: bool = False,
        queue_seconds: float = 0.0,
    ) -> None:
        outcome = self._outcome(doc, claim, rendered, attempts, blank, queue_seconds)
        stored, assemble = self.ledger.finish_page(self.worker_id, outcome, attempts.last)
        self._open_attempts.pop((claim.doc_id, claim.page), None)
        self.pages_finished += stored
        record = outcome.record
        self.on_event(
            PageFinished(
                status=outcome.status,
                stored=stored,
                prompt_tokens=int(record.get("prompt_tokens") or 0),
                output_tokens=int(record.get("output_tokens") or 0),
                render_seconds=float(record.get("render_seconds") or 0.0),
                queue_seconds=float(record.get("queue_seconds") or 0.0),
                infer_seconds=float(record.get("infer_seconds") or 0.0),
                wall_seconds=time.monotonic() - claimed_at,
            )
        )
        if outcome.status == "failed":
            log.error("%s page %d failed: %s", doc.source, claim.page, outcome.error)
        if assemble:
            self.assemble(doc.doc_id)

    def assemble(self, doc_id: str) -> None:
        doc = self._document(doc_id)
        status, error = assemble_document(self.layout, doc, self.ledger.stored_pages(doc_id))
        self.ledger.finish_document(doc_id, status, error)
        self.on_event(DocumentFinished(status, doc.source))
        if error:
            log.error("%s: %s", doc.source, error)

    def _outcome(
        self,
        doc: DocumentRow,
        claim: Claim,
        rendered: RenderedPage | None,
        attempts: AttemptLog,
        blank: bool,
        queue_seconds: float,
    ) -> PageOutcome:
        work = WorkFacts(
            engine=self.engine.name,
            attempts=claim.attempts + attempts.started,
            render_seconds=round(rendered.render_seconds, 4) if rendered else 0.0,
            queue_seconds=round(max(0.0, queue_seconds), 4),
            infer_seconds=round(attempts.infer_seconds, 4),
        )
        render = RenderFacts.of(rendered)
        if blank:
            record = PageRecord.blank(work, render).to_dict()
            return PageOutcome(doc.doc_id, claim.page, "blank", "", None, record, 0)
        chosen = pick_result(attempts.results)
        if chosen is None:
            error = "; ".join(attempts.errors) or "no output"
            record = PageRecord.failed(error, work, render).to_dict()
            started = attempts.started
            return PageOutcome(doc.doc_id, claim.page, "failed", "", None, record, started, error)
        prompt_name, result = chosen
        status = "truncated" if result.finish_reason == "length" else "done"
        page_error: str | None = None
        route = None
        if rendered is not None and rendered.route is not None:  # the auto engine's verdict
            route = rendered.route.record()
            if result.finish_reason == NEEDS_OCR:
                status = NEEDS_OCR
                page_error = "needs OCR (" + ", ".join(rendered.route.reasons) + "): no OCR engine"
        if result.engine:
            work = replace(work, engine=result.engine)
        text, figures = self._post_process(doc, claim.page, rendered, result.text)
        quality = assess(text, finish_reason=result.finish_reason, raw=result.text)
        ocr = OcrFacts(
            prompt=prompt_name,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens,
            quality=quality.metrics,
            figures=figures,
            engine_timings={k: round(v, 4) for k, v in result.timings.items()},
        )
        finished = PageRecord.finished(
            status,
            text,
            work=work,
            render=render,
            route=route,
            ocr=ocr,
            quality_flags=list(quality.flags),
            raw=result.text if self.config.render.mode == "clean" else None,
            attempt_errors=attempts.errors,
        )
        record = finished.to_dict()
        started = attempts.started
        return PageOutcome(
            doc.doc_id, claim.page, status, text, result.text, record, started, page_error
        )

    def _post_process(
        self, doc: DocumentRow, page: int, rendered: RenderedPage | None, raw: str
    ) -> tuple[str, list[str]]:
        if self.config.render.mode == "raw":
            return raw, []
        layout = self.layout
        cleaned = clean_page(raw, lambda fig: layout.figure_link(doc.rel, page, fig.index))
        figures: list[str] = []
        if cleaned.figures and rendered is not None and rendered.pixels is not None:
            figures = save_figures(layout, doc.rel, page, rendered.image(), cleaned.figures)
        return cleaned.markdown, figures
