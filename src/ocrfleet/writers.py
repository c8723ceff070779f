"""Files a run writes: per-document Markdown, per-page JSON Lines, figure crops, summaries.

Every file is written atomically (a temporary file in the same directory, then rename), so a
reader never sees half a file and a crash never leaves one. A document's Markdown and JSONL
are assembled once, from the ledger, when its last page has landed.

Where each file goes is layout.OutputLayout's to say.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .deepseek.postprocess import Figure, pixel_box
from .figure_links import relinked_pages
from .filemode import apply_file_mode
from .layout import OutputLayout
from .page_record import encode_record, output_record

if TYPE_CHECKING:
    from PIL import Image

    from .ledger_rows import DocumentRow, StoredPage

FIGURE_QUALITY = 90


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
    try:
        apply_file_mode(fd)  # mkstemp makes 0600; outputs follow the umask (filemode.py)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figures(
    layout: OutputLayout, rel: str, page: int, image: Image.Image, figures: Sequence[Figure]
) -> list[str]:
    """Crop each figure box out of the rendered page; returns paths relative to OUT."""
    saved: list[str] = []
    for fig in figures:
        left, top, right, bottom = pixel_box(fig.box, image.width, image.height)
        crop = image.crop((left, top, right, bottom))
        target = layout.figure(rel, page, fig.index)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=FIGURE_QUALITY)
        atomic_write_bytes(target, buffer.getvalue())
        saved.append(str(target.relative_to(layout.root)))
    return saved


def page_marker(page: int, pages: int, status: str, error: str | None) -> str:
    note = ""
    if status == "blank":
        note = ": blank"
    elif status == "truncated":
        note = ": truncated (no end of page after every attempt; text kept as produced)"
    elif status == "failed":
        note = f": failed: {error or 'unknown error'}"
    elif status == "pending":
        note = ": missing"
    elif status == "needs_ocr":
        note = ": needs OCR (re-run with an OCR engine to fill it)"
    return f"<!-- page {page} / {pages}{note.replace('--', '—')} -->"


def document_markdown(pages: int, stored: Sequence[StoredPage]) -> str:
    parts: list[str] = []
    for page in stored:
        parts.append(page_marker(page.page, pages, page.status, page.error))
        body = (page.text or "").strip()
        if body and page.status in ("done", "truncated"):
            parts.append(body)
    return "\n\n".join(parts) + "\n"


def document_records(doc: DocumentRow, stored: Sequence[StoredPage]) -> str:
    return "\n".join(encode_record(output_record(doc, page)) for page in stored) + "\n"


def document_verdict(stored: Sequence[StoredPage]) -> tuple[str, str | None]:
    """A document fails when any page failed; truncated pages are flagged, not failures."""
    failed = [p for p in stored if p.status == "failed"]
    if not failed:
        return "done", None
    first = failed[0]
    listed = ", ".join(str(p.page) for p in failed[:10]) + ("…" if len(failed) > 10 else "")
    return "failed", f"{len(failed)} page(s) failed ({listed}); page {first.page}: {first.error}"


def assemble_document(
    layout: OutputLayout, doc: DocumentRow, stored: Sequence[StoredPage]
) -> tuple[str, str | None]:
    """Write the document's Markdown and JSONL; returns (status, error) for the ledger."""
    # Pages processed under another name (the document took a copy's name) link there.
    stored = relinked_pages(layout, doc.rel, stored)
    atomic_write_text(layout.pages(doc.rel), document_records(doc, stored))
    atomic_write_text(layout.markdown(doc.rel), document_markdown(doc.pages, stored))
    return document_verdict(stored)


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
