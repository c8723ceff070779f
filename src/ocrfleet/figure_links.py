"""Figure links that resolve from wherever a Markdown file is written.

A page's text is stored with links relative to the Markdown of the name its document had
when the page was processed (`<name>_figures/pNNNN_K.jpg`), and its record lists the files
saved (paths under OUT). Markdown written under another name (a copy's own outputs, or the
document after it took a copy's name) gets its own `<name>_figures` folder next to it:
the figure files are hard-linked there (copied where links are not possible), and the
links and the records' `figures` point at that folder. So every Markdown under OUT is
self-contained with its folder, whatever happens later to another name's files.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .layout import FIGURE_LINK, figures_link_prefix

if TYPE_CHECKING:
    from .layout import OutputLayout
    from .ledger_rows import StoredPage

log = logging.getLogger(__name__)


def relink_text(text: str, name: str) -> str:
    """Point every figure link of `text` at `<name>_figures/`, the same file names."""
    prefix = figures_link_prefix(name)
    return FIGURE_LINK.sub(lambda m: f"{m.group(1)}{prefix}{m.group(3)})", text)


def _place(source: Path, target: Path) -> bool:
    """Make `target` hold the figure at `source` (a hard link, else a copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file() and not source.samefile(target):
        target.unlink()  # another figure of the same file name: never keep the wrong one
    try:
        os.link(source, target)
    except FileExistsError:
        return True
    except OSError:
        try:
            shutil.copy2(source, target)
        except OSError as exc:
            log.warning("cannot place figure %s at %s: %s", source, target, exc)
            return False
    return True


def _figure_file(owner_folder: Path, folder: Path, recorded: object) -> Path | None:
    """The figure a record names, in the folder of the document that saved it, under that
    document's current name (its figures move with it), else already in `folder`. The path in
    the record is not trusted: it holds the name the document had then, which may since
    belong to another document with figures of the same file names."""
    if not isinstance(recorded, str):
        return None
    name = PurePosixPath(recorded).name
    for candidate in (owner_folder / name, folder / name):
        if candidate.is_file():
            return candidate
    return None


def relinked_pages(
    layout: OutputLayout, rel: str, stored: Sequence[StoredPage], owner_rel: str | None = None
) -> list[StoredPage]:
    """The pages as Markdown under `rel` must show them: each figure in `<rel>_figures`
    (placed there from the figures of `owner_rel`, the document whose pages these are, when
    `rel` is a copy's name) and every link pointing at it."""
    name = PurePosixPath(rel).name
    folder = layout.figures_dir(rel)
    owner_folder = layout.figures_dir(owner_rel or rel)
    pages: list[StoredPage] = []
    for page in stored:
        record = dict(page.record) if page.record is not None else None
        figures = record.get("figures") if record is not None else None
        if record is not None and isinstance(figures, list) and figures:
            placed: list[str] = []
            for recorded in figures:
                source = _figure_file(owner_folder, folder, recorded)
                target = folder / PurePosixPath(str(recorded)).name
                if source is not None and source != target:
                    _place(source, target)
                placed.append(str(target.relative_to(layout.root)))
            record["figures"] = placed
        text = relink_text(page.text, name) if page.text else page.text
        if record is not None and isinstance(record.get("text"), str):
            record["text"] = relink_text(record["text"], name)
        pages.append(replace(page, text=text, record=record))
    return pages
