"""Turn DeepSeek-OCR output into clean Markdown and figure boxes.

The model's grounding output is a sequence of blocks, each a tag line
``<|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2], …]<|/det|>`` followed by the
block's content. Real outputs are often malformed (garbage boxes, missing
closing tokens, text inside ref tags, a tag cut off by max_tokens), so the
parser is a hand-written scanner that never raises and stays linear in the
input size: every search is bounded by the next ``<|`` or newline.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 on DeepSeek's 0–999 scale

__all__ = [
    "KNOWN_LABELS",
    "Block",
    "Box",
    "CleanPage",
    "Figure",
    "clean_page",
    "parse_blocks",
    "pixel_box",
]

SCALE = 999

REF_OPEN = "<|ref|>"
REF_CLOSE = "<|/ref|>"
DET_OPEN = "<|det|>"
DET_CLOSE = "<|/det|>"

# Labels DeepSeek-OCR (and its layout-model relatives) use; anything else is
# either a garbage label (dropped) or text the model put inside the ref tag.
KNOWN_LABELS = frozenset(
    {
        "text",
        "title",
        "sub_title",
        "equation",
        "formula",
        "image",
        "image_caption",
        "figure",
        "figure_caption",
        "chart",
        "table",
        "table_caption",
        "table_footnote",
        "footnote",
        "header",
        "footer",
        "page_header",
        "page_footer",
        "page_number",
        "list",
        "code",
        "reference",
        "abstract",
        "author",
        "algorithm",
        "caption",
        "seal",
    }
)

# Every special token a grounding tag can start with; a block begins at either.
_TAG_START = re.compile(r"<\|(?:ref|det)\|>")
# Tokens that must never reach clean text, wherever they appear. Full-width
# bar tokens cover the tokenizer's bos/eos/pad (`<｜end▁of▁sentence｜>`).
_STRAY_TOKEN = re.compile(r"<\|/?(?:ref|det)\|>|<\|grounding\|>|<image>|<｜[^｜<>\n]{0,64}｜>")
# Complete special tokens, for recognising a truncated one at the very end.
_SPECIAL_TOKENS = (REF_OPEN, REF_CLOSE, DET_OPEN, DET_CLOSE, "<|grounding|>", "<image>")
# What an unclosed `<|det|>` may still consume: box-like characters only.
_BOXISH = re.compile(r"[\[\]\d \t,.+\-]*")
_DET_SHAPE = re.compile(r"\s*\[\s*\[[^\[\]]*\](?:\s*,\s*\[[^\[\]]*\])*\s*\]\s*")
_BOX_GROUP = re.compile(r"\[([^\[\]]*)\]")
# Bounded digit counts: int()/float() on huge digit strings would be slow or raise.
_NUMBER = re.compile(r"\s*([+-]?\d{1,9}(?:\.\d{1,9})?)\s*")
_WHITESPACE = re.compile(r"\s*")
_LEADING_BLANK_LINES = re.compile(r"(?:[ \t]*\n)+")
_LABEL_LIKE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_CENTER = re.compile(r"</?center>")
_MANY_NEWLINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class Block:
    """One grounding block: the tag's label and boxes, then its content."""

    label: str | None  # None for untagged text (before the first tag, or a lone <|det|>)
    boxes: tuple[Box, ...]  # only well-formed boxes, clamped to 0..999
    text: str  # content after the tag, without surrounding blank lines
    well_formed: bool  # False when the tag itself was malformed or truncated


@dataclass(frozen=True)
class Figure:
    index: int  # 1-based, order of appearance within the page
    box: Box
    caption: str | None = None


@dataclass(frozen=True)
class CleanPage:
    markdown: str
    figures: tuple[Figure, ...]


@dataclass(frozen=True)
class _Tag:
    label: str | None
    boxes: tuple[Box, ...]
    well_formed: bool
    ref_closed: bool
    end: int  # index just past the tag in the scanned text


def parse_blocks(raw: str) -> list[Block]:
    """Split model output into blocks; tolerant of every malformed tag shape."""
    return [block for block, _ in _parse(raw)]


def _parse(raw: str) -> list[tuple[Block, bool]]:
    """Blocks, each with whether its `<|ref|>` was properly closed."""
    text = _drop_truncated_token(raw.replace("\r\n", "\n"))
    blocks: list[tuple[Block, bool]] = []
    match = _TAG_START.search(text)
    lead = _strip_blank_lines(text[: match.start() if match else len(text)])
    if lead.strip():
        blocks.append((Block(None, (), lead, True), False))
    while match is not None:
        tag = _parse_tag(text, match.start())
        match = _TAG_START.search(text, tag.end)
        # Spaces right after the tag are separators, not indentation of the content.
        content = text[tag.end : match.start() if match else len(text)].lstrip(" \t")
        content = _strip_blank_lines(content)
        blocks.append((Block(tag.label, tag.boxes, content, tag.well_formed), tag.ref_closed))
    return blocks


def clean_page(raw: str, figure_link: Callable[[Figure], str] | None = None) -> CleanPage:
    """Clean Markdown of one page plus the figures found in its `image` blocks."""
    parsed = _parse(raw)
    blocks = [block for block, _ in parsed]
    parts: list[str] = []
    figures: list[Figure] = []
    for i, (block, ref_closed) in enumerate(parsed):
        if _norm(block.label) == "image" and block.boxes:
            figure = Figure(len(figures) + 1, block.boxes[0], _caption(blocks, i))
            figures.append(figure)
            if figure_link is not None:
                parts.append(f"![]({figure_link(figure)})")
        if ref_closed and not block.text.strip() and _label_is_content(block.label):
            parts.append(_clean_text(block.label or ""))
        # An image block normally has no content; if the model wrote some, keep it.
        parts.append(_clean_text(block.text))
    markdown = "\n\n".join(part for part in parts if part.strip())
    return CleanPage(_normalise_whitespace(markdown), tuple(figures))


def pixel_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Map a 0–999 box to pixels of a width×height image; never empty, never outside."""
    x1, x2 = _pixel_span(box[0], box[2], width)
    y1, y2 = _pixel_span(box[1], box[3], height)
    return x1, y1, x2, y2


def _pixel_span(a: int, b: int, size: int) -> tuple[int, int]:
    size = max(size, 1)
    lo, hi = sorted(min(max(round(v / SCALE * size), 0), size) for v in (a, b))
    if hi <= lo:  # degenerate after rounding: widen to one pixel inside the image
        hi = lo + 1
        if hi > size:
            lo, hi = size - 1, size
    return lo, hi


def _parse_tag(text: str, pos: int) -> _Tag:
    """Parse the tag starting at `pos` (a `<|ref|>` or a lone `<|det|>`)."""
    if not text.startswith(REF_OPEN, pos):
        boxes, end, _ = _read_det(text, pos + len(DET_OPEN))
        return _Tag(None, boxes, False, False, end)
    label, end, ref_ok = _read_label(text, pos + len(REF_OPEN))
    spaces = _WHITESPACE.match(text, end)
    det_at = spaces.end() if spaces else end
    if not text.startswith(DET_OPEN, det_at):
        return _Tag(label, (), False, ref_ok, end)
    boxes, end, det_ok = _read_det(text, det_at + len(DET_OPEN))
    return _Tag(label, boxes, bool(label) and ref_ok and det_ok, ref_ok, end)


def _read_label(text: str, start: int) -> tuple[str, int, bool]:
    """Label text up to `<|/ref|>`; an unclosed label stops at the next token or line end."""
    limit = _next_token(text, start)
    newline = text.find("\n", start, limit)
    if newline != -1:
        return text[start:newline].strip(), newline, False
    if text.startswith(REF_CLOSE, limit):
        return text[start:limit].strip(), limit + len(REF_CLOSE), True
    return text[start:limit].strip(), limit, False


def _read_det(text: str, start: int) -> tuple[tuple[Box, ...], int, bool]:
    """Boxes after `<|det|>`; without `<|/det|>` only box-like characters are consumed."""
    limit = _next_token(text, start)
    newline = text.find("\n", start, limit)
    if newline == -1 and text.startswith(DET_CLOSE, limit):
        boxes, boxes_ok = _parse_boxes(text[start:limit])
        return boxes, limit + len(DET_CLOSE), boxes_ok
    line_end = limit if newline == -1 else newline
    boxish = _BOXISH.match(text, start, line_end)
    end = boxish.end() if boxish else start
    boxes, _ = _parse_boxes(text[start:end])
    return boxes, end, False


def _parse_boxes(det: str) -> tuple[tuple[Box, ...], bool]:
    """All well-formed boxes in a det payload, and whether the whole payload was well-formed."""
    groups = _BOX_GROUP.findall(det)
    boxes = tuple(box for group in groups if (box := _parse_box(group)) is not None)
    shape_ok = _DET_SHAPE.fullmatch(det) is not None
    return boxes, shape_ok and bool(boxes) and len(boxes) == len(groups)


def _parse_box(group: str) -> Box | None:
    parts = group.split(",")
    if len(parts) != 4:
        return None
    values: list[int] = []
    for part in parts:
        number = _NUMBER.fullmatch(part)
        if number is None:
            return None
        values.append(min(max(round(float(number.group(1))), 0), SCALE))
    x1, y1, x2, y2 = values
    if x1 >= x2 or y1 >= y2:
        return None
    return x1, y1, x2, y2


def _next_token(text: str, start: int) -> int:
    """Index of the next `<|` (any special token) or the end of the text."""
    found = text.find("<|", start)
    return len(text) if found == -1 else found


def _drop_truncated_token(text: str) -> str:
    """Remove a special token cut off by max_tokens at the very end (`…<|/de`)."""
    cut = text.rfind("<", max(0, len(text) - 32))
    if cut == -1:
        return text
    tail = text[cut:]
    truncated_ascii = any(token.startswith(tail) and token != tail for token in _SPECIAL_TOKENS)
    truncated_wide = tail.startswith("<｜") and "｜>" not in tail
    return text[:cut] if truncated_ascii or truncated_wide else text


def _strip_blank_lines(text: str) -> str:
    leading = _LEADING_BLANK_LINES.match(text)
    return text[leading.end() if leading else 0 :].rstrip()


def _norm(label: str | None) -> str:
    return (label or "").strip().lower()


def _label_is_content(label: str | None) -> bool:
    """Whether a ref 'label' is real text (the `OCR this image` prompt does this)."""
    label = (label or "").strip()
    known = _norm(label) in KNOWN_LABELS or _LABEL_LIKE.fullmatch(label) is not None
    return bool(label) and not known


def _caption(blocks: list[Block], i: int) -> str | None:
    """Text of an image_caption block right after (preferred) or right before block i."""
    candidates = [blocks[i + 1]] if i + 1 < len(blocks) else []
    if i > 0 and (i < 2 or _norm(blocks[i - 2].label) != "image"):
        candidates.append(blocks[i - 1])
    for block in candidates:
        if _norm(block.label) == "image_caption":
            caption = _CENTER.sub("", _clean_text(block.text)).strip()
            if caption:
                return caption
    return None


def _clean_text(text: str) -> str:
    previous = None
    while previous != text:  # removing one token can join the halves of another
        previous, text = text, _STRAY_TOKEN.sub("", text)
    return text.replace("\\coloneqq", ":=").replace("\\eqqcolon", "=:")


def _normalise_whitespace(markdown: str) -> str:
    lines = "\n".join(line.rstrip() for line in markdown.split("\n"))
    return _MANY_NEWLINES.sub("\n\n", lines).strip()
