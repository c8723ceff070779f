"""The page record: what is known about one finished page, built here and nowhere else.

A worker builds a `PageRecord` from what it measured (`PageRecord.finished`, `.blank`,
`.failed`), the ledger stores its `to_dict()` as JSON, and the writers turn the stored record
into the page's line of OUT/pages/<rel>.jsonl (`output_record`), adding the document-level
fields from the ledger. A page the ledger fails itself (a poison page) gets `PageRecord.poison`.
The JSON is the contract (docs/export-schema.md); its keys are sorted, so field order here
does not matter, but which keys are present does: a group that does not apply is left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ledger_rows import DocumentRow, StoredPage
    from .page import RenderedPage


@dataclass(frozen=True)
class WorkFacts:
    """How the page went through this worker: which engine, how many tries, how long."""

    engine: str
    attempts: int
    render_seconds: float
    queue_seconds: float
    infer_seconds: float


@dataclass(frozen=True)
class RenderFacts:
    """The rendered image the engine saw."""

    width: int
    height: int
    dpi: float
    ink_ratio: float
    scaled_down: bool

    @classmethod
    def of(cls, rendered: RenderedPage | None) -> RenderFacts | None:
        if rendered is None:
            return None
        return cls(
            width=rendered.width,
            height=rendered.height,
            dpi=rendered.effective_dpi,
            ink_ratio=round(rendered.ink_ratio, 6),
            scaled_down=rendered.scaled_down,
        )


@dataclass(frozen=True)
class OcrFacts:
    """The engine result that was kept, and what post-processing made of it."""

    prompt: str
    finish_reason: str | None
    prompt_tokens: int
    output_tokens: int
    quality: Mapping[str, Any]
    figures: list[str]
    engine_timings: Mapping[str, float]


@dataclass(frozen=True)
class PageRecord:
    status: str
    text: str | None = None  # None only for a poison page: the writers fill in ""
    error: str | None = None
    quality_flags: list[str] | None = None
    work: WorkFacts | None = None
    render: RenderFacts | None = None
    route: Mapping[str, Any] | None = None  # the auto engine's verdict and its scores
    ocr: OcrFacts | None = None
    raw: str | None = None  # clean mode keeps the engine's own text next to the cleaned
    attempt_errors: list[str] = field(default_factory=list)
    where: tuple[str, int] | None = None  # (doc id, page): a poison page names itself

    # -- the one builder: each kind of finished page

    @classmethod
    def blank(cls, work: WorkFacts, render: RenderFacts | None) -> PageRecord:
        return cls("blank", "", quality_flags=["blank"], work=work, render=render)

    @classmethod
    def failed(cls, error: str, work: WorkFacts, render: RenderFacts | None) -> PageRecord:
        return cls("failed", "", error=error, quality_flags=[], work=work, render=render)

    @classmethod
    def finished(
        cls,
        status: str,
        text: str,
        *,
        work: WorkFacts,
        render: RenderFacts | None,
        route: Mapping[str, Any] | None,
        ocr: OcrFacts,
        quality_flags: list[str],
        raw: str | None,
        attempt_errors: list[str],
    ) -> PageRecord:
        return cls(
            status,
            text,
            quality_flags=quality_flags,
            work=work,
            render=render,
            route=route,
            ocr=ocr,
            raw=raw,
            attempt_errors=attempt_errors,
        )

    @classmethod
    def poison(cls, doc_id: str, page: int, reason: str) -> PageRecord:
        return cls("failed", error=reason, where=(doc_id, page))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.text is not None:
            out["text"] = self.text
        if self.error is not None:
            out["error"] = self.error
        if self.quality_flags is not None:
            out["quality_flags"] = list(self.quality_flags)
        if self.where is not None:
            out["doc_id"], out["page"] = self.where
        for group in (self.work, self.render, self.ocr):
            if group is not None:
                out.update(
                    (k, dict(v) if isinstance(v, Mapping) else v) for k, v in vars(group).items()
                )
        if self.route is not None:
            out.update(self.route)
        if self.raw is not None:
            out["raw"] = self.raw
        if self.attempt_errors:
            out["attempt_errors"] = list(self.attempt_errors)
        return out


def encode_record(record: Mapping[str, Any]) -> str:
    """The one JSON form of a record, in the ledger and in OUT/pages alike."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def output_record(doc: DocumentRow, stored: StoredPage) -> dict[str, Any]:
    """A stored page's line in OUT/pages: its record, with the document-level fields taken
    from the ledger so that every record agrees with it."""
    record: dict[str, Any] = dict(stored.record or {})
    record.update(
        doc_id=doc.doc_id,
        source=doc.source,
        output=f"{doc.rel}.md",
        page=stored.page,
        pages=doc.pages,
        status=stored.status,
    )
    record.setdefault("text", stored.text or "")
    if stored.error:
        record["error"] = stored.error
    return record
