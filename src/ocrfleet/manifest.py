"""Every input path accounted for: duplicates' own outputs and the input manifest.

A file whose bytes equal another input's is processed once, under the first path's name,
but its own path gets its own Markdown and JSONL too (records carry its own `source` and a
`duplicate_of`). OUT/manifest[.shard-i-of-n].jsonl lists every input path of the run with
its status, its output (only once the document is finished: the file holds its current
text) and, where it has one, the reason it failed or was not read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .catalog import duplicates
from .figure_links import relinked_pages
from .layout import OutputLayout
from .ledger import Ledger
from .ledger_rows import DocumentRow
from .plan import InputEntry
from .redact import redact_obj
from .writers import atomic_write_text, document_markdown, document_records


def write_duplicate_outputs(ledger: Ledger, layout: OutputLayout) -> int:
    """Write the files of every duplicate path whose document is finished and whose files
    are missing or older than the document's. Returns how many were written."""
    written = 0
    docs = {d.doc_id: d for d in ledger.documents()}
    for dup in duplicates(ledger):
        doc = docs.get(dup.doc_id)
        if doc is None or doc.status not in ("done", "failed") or doc.pages == 0:
            continue
        original = layout.pages(doc.rel)
        target = layout.pages(dup.rel)
        # Written from the ledger, so also where the document's own files are not on this
        # disk (a shard resumed on another node from its checkpoint); rewritten when the
        # document's files are newer than its copy's.
        # Also when the document has figures and the copy has no folder of its own (written
        # by an older ocrfleet, whose links pointed at the document's folder).
        figures_missing = (
            layout.figures_dir(doc.rel).is_dir() and not layout.figures_dir(dup.rel).is_dir()
        )
        if (
            target.exists()
            and not figures_missing
            and (not original.exists() or target.stat().st_mtime_ns >= original.stat().st_mtime_ns)
        ):
            continue
        # The copy's own figure folder and links: they resolve from where the copy is.
        stored = relinked_pages(layout, dup.rel, ledger.stored_pages(doc.doc_id), doc.rel)
        own = replace(doc, source=dup.source, rel=dup.rel)
        lines = []
        for line in document_records(own, stored).splitlines():
            record = json.loads(line)
            record["duplicate_of"] = doc.source
            lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
        atomic_write_text(layout.markdown(dup.rel), document_markdown(doc.pages, stored))
        atomic_write_text(target, "\n".join(lines) + "\n")
        written += 1
    return written


def _status(doc: DocumentRow | None) -> str:
    if doc is None:
        return "missing"
    return "pending" if doc.status == "assembling" else doc.status


def manifest_rows(
    ledger: Ledger, layout: OutputLayout, entries: Sequence[InputEntry], missing: Sequence[str]
) -> list[dict[str, Any]]:
    docs = {d.doc_id: d for d in ledger.documents()}
    by_source = {d.source: d for d in docs.values()}
    dup_rel = {d.source: d.rel for d in duplicates(ledger)}
    rows: list[dict[str, Any]] = []
    for entry in entries:
        doc = docs.get(entry.doc_id)
        role, duplicate_of = entry.role, entry.duplicate_of
        own = by_source.get(entry.source)
        if own is not None and (doc is None or own.doc_id != doc.doc_id or role == "duplicate"):
            # Re-planned during the run: its file was rewritten (new bytes, a new document)
            # or its copy was, and this path took the document over.
            doc, role, duplicate_of = own, "document", None
        rel = dup_rel.get(entry.source) if role == "duplicate" else (doc and doc.rel)
        output = None
        # Only a finished document's files are its current output: until then the path may
        # hold nothing, or (a crash before the stale files were set aside) other text.
        finished = doc is not None and doc.status in ("done", "failed")
        if rel and finished and layout.markdown(rel).exists():
            output = str(layout.markdown(rel).relative_to(layout.root))
        row: dict[str, Any] = {
            "source": entry.source,
            "doc_id": doc.doc_id if doc is not None else entry.doc_id,
            "status": _status(doc),
            "output": output,
        }
        if duplicate_of is not None:
            row["duplicate_of"] = duplicate_of
        reason = entry.problem or (doc.error if doc is not None else None)
        if reason:
            row["reason"] = reason
        rows.append(row)
    rows += [
        {
            "source": m,
            "doc_id": None,
            "status": "missing",
            "output": None,
            "reason": "input not found",
        }
        for m in missing
    ]
    return rows


def write_manifest(
    path: Path,
    ledger: Ledger,
    layout: OutputLayout,
    entries: Sequence[InputEntry],
    missing: Sequence[str],
) -> dict[str, int]:
    """Write the manifest; returns input paths per status (for the run summary)."""
    rows = redact_obj(manifest_rows(ledger, layout, entries, missing))
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    atomic_write_text(path, text)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts
