"""A page's text layer as clean text: reading order of columns, hyphenation joined, NFC.

pdfium gives text in content-stream order, which for two-column layouts can interleave the
columns line by line, and marks a hyphen it found at a line end as U+FFFE (`docu\ufffement`).
We order pdfium's text rectangles (one per run of text on a line) by a recursive XY cut:
a vertical gutter that no rectangle crosses splits columns (read left, then right); otherwise
the widest horizontal gap splits blocks (read top, then bottom). Headers and footers that span
the page stay where they are, as their own blocks.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pypdfium2

LIGATURES = {
    "\ufb00": "ff",
    "\ufb01": "fi",
    "\ufb02": "fl",
    "\ufb03": "ffi",
    "\ufb04": "ffl",
    "\ufb05": "st",
    "\ufb06": "st",
}
HYPHEN_MARKS = "\ufffe\u00ad"  # pdfium's line-end hyphen, soft hyphen
# A word broken at a line end: "μελέ\ufffe\nτη" and "docu\ufffement" become one word.
# A break may also end a column ("\n\n" between blocks).
_BROKEN_WORD = re.compile(rf"(\w)[{HYPHEN_MARKS}][ \t]*(?:\r?\n[ \t]*){{0,2}}(\w)")
# Chromium (Skia) draws a soft hyphen taken at a line end as U+2010: "αναφ‐\nορές".
_DRAWN_SOFT_HYPHEN = re.compile(r"(\w)\u2010[ \t]*(?:\r?\n[ \t]*){1,2}([^\W\d_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Gutters narrower than this (points) are word spaces, not columns.
MIN_GUTTER_PT = 9.0
MIN_COLUMN_LINES = 3
ALIGN_PT = 3.0  # lines of a column start within this of its margin…
ALIGNED_SHARE = 0.6  # …most of them do
# A gap this many character heights wide ends a run (word spaces of justified text are less).
RUN_GAP_HEIGHTS = 2.0


def _join_drawn_hyphen(match: re.Match[str]) -> str:
    """ "αναφ‐\nορές" and "ΚΑΤΑΓΡ‐\nΆΦΕΤΑΙ" are one word; "Jean‐\nPaul" stays two."""
    before, after = match.group(1), match.group(2)
    if after.islower() or (before.isupper() and after.isupper()):
        return before + after
    return match.group(0)


def clean_text(text: str) -> str:
    """Join line-end hyphenation marked by pdfium, soft hyphens or Chromium's drawn soft
    hyphen (U+2010 before a lower-case letter), expand ligatures, NFC."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _BROKEN_WORD.sub(r"\1\2", text)
    text = _DRAWN_SOFT_HYPHEN.sub(_join_drawn_hyphen, text)
    text = "".join(LIGATURES.get(ch, ch) for ch in text)
    # What is left of the marks is not a word break: drop them (never a U+FFFE in output).
    text = re.sub(f"[{HYPHEN_MARKS}]", "", text)
    text = _CONTROL.sub("", text)
    text = unicodedata.normalize("NFC", text)
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


@dataclass(frozen=True)
class Box:
    left: float
    bottom: float
    right: float
    top: float
    start: int = 0  # the run's characters: text[start:end]
    end: int = 0

    @property
    def height(self) -> float:
        return self.top - self.bottom


def _vertical_cut(boxes: list[Box]) -> tuple[list[Box], list[Box]] | None:
    """Split at the widest gutter that no box crosses, if both sides hold real columns."""
    spans = sorted((b.left, b.right) for b in boxes)
    best: tuple[float, float] | None = None
    reach = spans[0][1]
    for left, right in spans[1:]:
        if left - reach >= MIN_GUTTER_PT and (best is None or left - reach > best[1] - best[0]):
            best = (reach, left)
        reach = max(reach, right)
    if best is None:
        return None
    cut = (best[0] + best[1]) / 2
    first = [b for b in boxes if b.right <= cut]
    second = [b for b in boxes if b.left >= cut]
    if len(first) < MIN_COLUMN_LINES or len(second) < MIN_COLUMN_LINES:
        return None
    # Columns start their lines at one margin; a "gutter" between words of justified lines
    # (a river) has ragged edges on its right side.
    if not (_aligned(first) and _aligned(second)):
        return None
    return first, second


def _aligned(boxes: list[Box]) -> bool:
    """Most lines of these boxes start at one margin."""
    starts = [line[0].left for line in _lines(boxes)]
    margin = min(starts)
    return sum(1 for x in starts if x - margin <= ALIGN_PT) >= ALIGNED_SHARE * len(starts)


def _horizontal_cut(boxes: list[Box]) -> tuple[list[Box], list[Box]] | None:
    spans = sorted(((b.bottom, b.top) for b in boxes), reverse=True, key=lambda s: s[1])
    best: tuple[float, float] | None = None
    low = spans[0][0]
    for bottom, top in spans[1:]:
        if top < low and (best is None or low - top > best[0] - best[1]):
            best = (low, top)
        low = min(low, bottom)
    if best is None:
        return None
    cut = (best[0] + best[1]) / 2
    return [b for b in boxes if b.bottom >= cut], [b for b in boxes if b.top <= cut]


def _has_columns(boxes: list[Box]) -> bool:
    """True when some horizontal band of the boxes splits into columns."""
    stack = [boxes]
    while stack:
        group = stack.pop()
        if len(group) < 2 * MIN_COLUMN_LINES:
            continue
        if _vertical_cut(group) is not None:
            return True
        split = _horizontal_cut(group)
        if split is not None:
            stack.extend(split)
    return False


def reading_order(boxes: list[Box]) -> list[list[Box]]:
    """Blocks of boxes in reading order (columns left to right, blocks top to bottom)."""
    if not _has_columns(boxes):
        return [boxes] if boxes else []
    split = _vertical_cut(boxes) or _horizontal_cut(boxes)
    if split is None:
        return [boxes]
    return reading_order(split[0]) + reading_order(split[1])


def _lines(block: list[Box]) -> list[list[Box]]:
    """Boxes of a block grouped into lines (vertical overlap), top to bottom, left to right."""
    lines: list[list[Box]] = []
    for box in sorted(block, key=lambda b: (-b.top, b.left)):
        if lines:
            last = lines[-1]
            ref = last[0]
            overlap = min(ref.top, box.top) - max(ref.bottom, box.bottom)
            if overlap > 0.5 * min(ref.height, box.height):
                last.append(box)
                continue
        lines.append([box])
    return [sorted(line, key=lambda b: b.left) for line in lines]


def segments(textpage: pypdfium2.PdfTextPage) -> tuple[str, list[Box]]:
    """(pdfium's text, boxes of its runs): a run ends at a line break, a jump to another
    line, a gutter-wide gap or a step back to the left. Each box knows its characters."""
    count = textpage.count_chars()
    text = textpage.get_text_range(0, count) if count else ""
    if len(text) != count:  # characters outside the BMP: no index-to-box mapping
        return text, []
    boxes: list[Box] = []
    start, seg = 0, None  # seg: left, bottom, right, top of the run so far
    prev_right = prev_left = 0.0

    def close(end: int) -> None:
        if seg is not None and text[start:end].strip():
            boxes.append(Box(seg[0], seg[1], seg[2], seg[3], start, end))

    for i, ch in enumerate(text):
        if ch in "\r\n":
            close(i)
            start, seg = i + 1, None
            continue
        left, bottom, right, top = textpage.get_charbox(i)
        if right <= left or top <= bottom or ch.isspace():
            continue  # generated spaces have no box of their own
        if seg is not None:
            # Half a glyph of slack: a comma or a superscript stays on its line.
            middle, slack = (top + bottom) / 2, (seg[3] - seg[1]) / 2
            off_line = middle < seg[1] - slack or middle > seg[3] + slack
            gap = left - prev_right
            wide = gap > max(MIN_GUTTER_PT, RUN_GAP_HEIGHTS * (top - bottom))
            if off_line or wide or left < prev_left - 1.0:
                close(i)
                start, seg = i, None
        if seg is None:
            seg = (left, bottom, right, top)
        else:
            seg = (min(seg[0], left), min(seg[1], bottom), max(seg[2], right), max(seg[3], top))
        prev_left, prev_right = left, right
    close(len(text))
    return text, boxes


def _join_runs(text: str, line: list[Box]) -> str:
    """Runs of one line, left to right: glued where pdfium's text has them touching (a comma
    split off its word), else one space."""
    out = text[line[0].start : line[0].end].strip()
    for prev, box in itertools.pairwise(line):
        between = text[prev.end : box.start] if box.start >= prev.end else " "
        spaced = text[prev.start : prev.end][-1:].isspace() or between != ""
        out += (" " if spaced else "") + text[box.start : box.end].strip()
    return out


def extract_text(textpage: pypdfium2.PdfTextPage) -> tuple[str, list[Box]]:
    """The page's text in reading order, cleaned, and the boxes of its runs."""
    text, boxes = segments(textpage)
    if not boxes:
        return clean_text(text), boxes
    blocks: list[str] = []
    for block in reading_order(boxes):
        lines = []
        for line in _lines(block):
            lines.append(_join_runs(text, line))
        blocks.append("\n".join(lines))
    return clean_text("\n\n".join(blocks)), boxes
