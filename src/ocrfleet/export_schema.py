"""The exported rows: their schema (versioned, see docs/export-schema.md) and how they are made.

Document rows carry the document's Markdown (with the run's page markers) and one nested
entry per page; page rows carry the fields of the per-page JSONL. Both formats (Parquet,
JSONL) hold the same rows; Parquet's column types are fixed here so every file of an export,
and every later export, has the same schema. Open-ended page fields (quality metrics, engine
timings, fields added by later versions) are JSON strings, so the schema never changes shape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .engines.names import runs_model
from .errors import ConfigError
from .writers import document_markdown

if TYPE_CHECKING:
    import pyarrow as pa

    from .export_source import DocMeta, LedgerSource
    from .ledger_rows import StoredPage

EXPORT_SCHEMA_VERSION = 1
PAGE_COUNTED = ("done", "blank", "truncated", "failed")

# Page record fields with a column of their own; anything else goes to `extra` (JSON).
_PAGE_COLUMNS = (
    "engine",
    "route",
    "prompt",
    "finish_reason",
    "prompt_tokens",
    "output_tokens",
    "attempts",
    "width",
    "height",
    "dpi",
    "ink_ratio",
    "scaled_down",
    "render_seconds",
    "queue_seconds",
    "infer_seconds",
)
_INT_COLUMNS = frozenset({"prompt_tokens", "output_tokens", "attempts", "width", "height"})
_FLOAT_COLUMNS = frozenset({"dpi", "ink_ratio", "render_seconds", "queue_seconds", "infer_seconds"})
_PAGE_JSON = ("quality", "engine_timings")
_PAGE_LISTS = ("quality_flags", "figures", "attempt_errors")
_DOC_FIELDS_IN_RECORD = frozenset(
    {"doc_id", "source", "output", "page", "pages", "status", "text", "raw", "error"}
)


def require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ConfigError(
            "--format parquet needs pyarrow: pip install 'ocrfleet[parquet]' "
            "(or uv sync --extra parquet); --format jsonl needs nothing more"
        ) from exc
    return pyarrow


def page_entry_type(pa: Any) -> pa.DataType:
    return pa.struct(
        [
            ("page", pa.int32()),
            ("status", pa.string()),
            ("route", pa.string()),
            ("engine", pa.string()),
            ("quality_flags", pa.list_(pa.string())),
            ("prompt_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("finish_reason", pa.string()),
            ("error", pa.string()),
        ]
    )


def document_schema(pa: Any) -> pa.Schema:
    return pa.schema(
        [
            ("doc_id", pa.string()),
            ("source", pa.list_(pa.string())),
            ("output", pa.string()),
            ("pages", pa.int32()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("text", pa.string()),
            ("page_records", pa.list_(page_entry_type(pa))),
            *[(f"pages_{s}", pa.int32()) for s in PAGE_COUNTED],
            ("pages_other", pa.int32()),
            ("flagged_pages", pa.int32()),
            ("prompt_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("run_id", pa.string()),
            ("engine", pa.string()),
            ("model", pa.string()),
            ("settings", pa.string()),
            ("ledger", pa.string()),
        ],
        metadata={"ocrfleet_export_schema": str(EXPORT_SCHEMA_VERSION), "level": "document"},
    )


def page_schema(pa: Any) -> pa.Schema:
    numeric = {
        **dict.fromkeys(_INT_COLUMNS, pa.int64()),
        **dict.fromkeys(_FLOAT_COLUMNS, pa.float64()),
        "scaled_down": pa.bool_(),
    }
    return pa.schema(
        [
            ("doc_id", pa.string()),
            ("source", pa.string()),
            ("output", pa.string()),
            ("page", pa.int32()),
            ("pages", pa.int32()),
            ("status", pa.string()),
            ("doc_status", pa.string()),
            ("text", pa.string()),
            ("raw", pa.string()),
            ("error", pa.string()),
            *[(name, numeric.get(name, pa.string())) for name in _PAGE_COLUMNS],
            *[(name, pa.list_(pa.string())) for name in _PAGE_LISTS],
            *[(name, pa.string()) for name in _PAGE_JSON],
            ("extra", pa.string()),
            ("run_id", pa.string()),
            ("model", pa.string()),
            ("ledger", pa.string()),
        ],
        metadata={"ocrfleet_export_schema": str(EXPORT_SCHEMA_VERSION), "level": "page"},
    )


def _ledger_label(source: LedgerSource) -> str:
    return f"{source.output.rstrip('/')}/{source.name}"


def _model(doc: DocMeta) -> str | None:
    """The model only when a page really went through it (a text-layer page used none)."""
    if doc.run is None or not any(runs_model(p.engine) for p in doc.page_meta):
        return None
    return doc.run.model


def document_row(
    doc: DocMeta, stored: Sequence[StoredPage], source: LedgerSource
) -> dict[str, Any]:
    counts = dict.fromkeys(PAGE_COUNTED, 0)
    other = 0
    for meta in doc.page_meta:
        if meta.status in counts:
            counts[meta.status] += 1
        else:
            other += 1
    return {
        "doc_id": doc.doc_id,
        "source": list(doc.sources),
        "output": f"{doc.rel}.md",
        "pages": doc.pages,
        "status": doc.status,
        "error": doc.error if not doc.page_meta else _doc_error(doc),
        "text": document_markdown(doc.pages, stored) if stored else "",
        "page_records": [
            {
                "page": p.page,
                "status": p.status,
                "route": p.route,
                "engine": p.engine,
                "quality_flags": list(p.quality_flags),
                "prompt_tokens": p.prompt_tokens,
                "output_tokens": p.output_tokens,
                "finish_reason": p.finish_reason,
                "error": p.error,
            }
            for p in doc.page_meta
        ],
        **{f"pages_{status}": n for status, n in counts.items()},
        "pages_other": other,
        "flagged_pages": sum(1 for p in doc.page_meta if p.quality_flags),
        "prompt_tokens": sum(p.prompt_tokens or 0 for p in doc.page_meta),
        "output_tokens": sum(p.output_tokens or 0 for p in doc.page_meta),
        "run_id": doc.run.run_id if doc.run else None,
        "engine": doc.run.engine if doc.run else None,
        "model": _model(doc),
        "settings": doc.run.settings if doc.run else None,
        "ledger": _ledger_label(source),
    }


def _doc_error(doc: DocMeta) -> str | None:
    failed = [p for p in doc.page_meta if p.status == "failed"]
    if not failed:
        return None
    listed = ", ".join(str(p.page) for p in failed[:10]) + ("…" if len(failed) > 10 else "")
    return f"{len(failed)} page(s) failed ({listed}); page {failed[0].page}: {failed[0].error}"


def page_row(
    doc: DocMeta, page: StoredPage, source: LedgerSource, model: str | None
) -> dict[str, Any]:
    record = dict(page.record or {})
    row: dict[str, Any] = {
        "doc_id": doc.doc_id,
        "source": doc.sources[0],
        "output": f"{doc.rel}.md",
        "page": page.page,
        "pages": doc.pages,
        "status": page.status,
        "doc_status": doc.status,
        "text": page.text or "",
        "raw": page.raw,
        "error": page.error,
    }
    route = record.get("route")
    if isinstance(route, dict):  # a verdict with its scores: the scores stay in `extra`
        record["route_detail"] = record.pop("route")
        verdict = route.get("route", route.get("verdict"))
        record["route"] = verdict if isinstance(verdict, str) else None
    for name in _PAGE_COLUMNS:
        row[name] = _typed(name, record.pop(name, None))
    for name in _PAGE_LISTS:
        value = record.pop(name, None)
        row[name] = [str(v) for v in value] if isinstance(value, list) else []
    for name in _PAGE_JSON:
        value = record.pop(name, None)
        row[name] = None if value is None else json.dumps(value, ensure_ascii=False)
    extra = {k: v for k, v in record.items() if k not in _DOC_FIELDS_IN_RECORD}
    row["extra"] = json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None
    row["run_id"] = doc.run.run_id if doc.run else None
    row["model"] = model
    row["ledger"] = _ledger_label(source)
    return row


def _typed(name: str, value: Any) -> Any:
    """A record value as its column's type; one that does not fit is left out (None)."""
    if value is None:
        return None
    if name in _INT_COLUMNS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return int(value) if ok and float(value).is_integer() else None
    if name in _FLOAT_COLUMNS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else None
    if name == "scaled_down":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def page_rows(
    doc: DocMeta, stored: Sequence[StoredPage], source: LedgerSource, keep: set[int]
) -> list[dict[str, Any]]:
    model = _model(doc)
    return [page_row(doc, page, source, model) for page in stored if page.page in keep]
