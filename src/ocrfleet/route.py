"""Per page: trust the text layer (`text`) or send the page to OCR (`ocr`), with the scores why.

Runs in the render process, on the pdfium page it has just drawn: no second render. Signals
(thresholds calibrated on the labelled set of `benchmarks/route_eval.py`):

- ink without text: the page has ink but (almost) no text layer: a scan;
- invisible text: most characters are drawn in render mode 3 (a scanner's OCR layer, under an
  image): untrusted, we OCR it ourselves (FinePDFs' "hidden text" feature);
- ink not explained by text: images cover much of the page and little of the ink lies inside
  the text boxes (a scan with a stamped header or page number);
- bad characters: replacement, private-use, control characters (a font without a Unicode map);
  glossAPI sends a document to OCR at a mojibake share over 0.1;
- Greek badness over 60 (glossAPI's score, see textscores);
- Latin gibberish: many Latin words, almost no function words (a legacy Greek font's map).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .textlayer import extract_text
from .textscores import TextScores, score_text

if TYPE_CHECKING:
    import pypdfium2

log = logging.getLogger(__name__)
Route = Literal["text", "ocr"]


@dataclass(frozen=True)
class Thresholds:
    min_chars: int = 20  # a page with ink and fewer characters is a scan
    min_ink: float = 0.002  # less ink than this: nothing to OCR (near blank)
    invisible_share: float = 0.5
    image_cover: float = 0.6
    text_ink_share: float = 0.5
    bad_chars: float = 0.1
    mojibake: float = 0.05
    greek_badness: float = 60.0
    latin_min_words: int = 20
    latin_stopword_share: float = 0.08


@dataclass(frozen=True)
class PageFeatures:
    chars: int  # non-space characters of the text layer
    ink: float  # share of dark pixels on the render
    text_ink_share: float  # share of those inside text boxes (1.0 where not measurable)
    image_cover: float  # share of the page under image objects
    invisible_share: float  # share of text-object characters in render mode 3
    text: TextScores


@dataclass(frozen=True)
class PageRoute:
    route: Route
    reasons: tuple[str, ...]
    features: PageFeatures
    text: str = ""  # the cleaned text layer, in reading order
    forced: bool = False

    def record(self) -> dict[str, Any]:
        """What goes into the page record: the verdict and the scores behind it."""
        scores: dict[str, Any] = {k: v for k, v in asdict(self.features).items() if k != "text"}
        scores.update(asdict(self.features.text))
        for key, value in scores.items():
            if isinstance(value, float):
                scores[key] = round(value, 4)
        out: dict[str, Any] = {"route": self.route, "route_scores": scores}
        if self.reasons:
            out["route_reasons"] = list(self.reasons)
        return out


@dataclass(frozen=True)
class RouteContext:
    """How the render maps onto the page: pixel grid of the ink, PDF points per cell."""

    ink_mask: np.ndarray  # bool, True where ink (subsampled render)
    points_per_cell: float
    crop: tuple[float, float, float, float]  # left, bottom, right, top of the crop box
    rotation: int = 0


def verdict(features: PageFeatures, limits: Thresholds | None = None) -> tuple[Route, list[str]]:
    t = limits or Thresholds()
    s = features.text
    reasons: list[str] = []
    # A near-empty born-digital page (a page number in its text layer): nothing worth a GPU.
    # A page with no text layer at all is never kept as text: it passed the blank test, so
    # it has ink (faint or sparse scans: grey type, one heading) that only OCR can read.
    if (
        features.ink < t.min_ink
        and 0 < features.chars < t.min_chars
        and features.invisible_share < t.invisible_share
    ):
        return "text", []
    if features.chars < t.min_chars:
        reasons.append("no_text_layer")
    if features.invisible_share >= t.invisible_share:
        reasons.append("invisible_text")
    if features.image_cover >= t.image_cover and features.text_ink_share < t.text_ink_share:
        reasons.append("ink_not_text")
    if s.bad_chars > t.bad_chars:
        reasons.append("bad_chars")
    if s.mojibake > t.mojibake:
        reasons.append("mojibake")
    if s.greek_letters and s.greek_badness > t.greek_badness:
        reasons.append("greek_badness")
    latin_major = s.latin_letters > 2 * s.greek_letters
    if (
        latin_major
        and s.latin_words >= t.latin_min_words
        and s.latin_stopword_share < t.latin_stopword_share
    ):
        reasons.append("latin_gibberish")
    return ("ocr" if reasons else "text"), reasons


def _grid_mask(boxes: list[tuple[float, float, float, float]], ctx: RouteContext) -> np.ndarray:
    """Cells of the ink grid covered by the boxes (PDF coordinates)."""
    rows, cols = ctx.ink_mask.shape
    mask = np.zeros((rows, cols), dtype=bool)
    left0, _, _, top0 = ctx.crop
    k = ctx.points_per_cell
    for left, bottom, right, top in boxes:
        c0, c1 = int((left - left0) / k), int(np.ceil((right - left0) / k)) + 1
        r0, r1 = int((top0 - top) / k), int(np.ceil((top0 - bottom) / k)) + 1
        mask[max(0, r0) : max(0, r1), max(0, c0) : max(0, c1)] = True
    return mask


def _objects(page: pypdfium2.PdfPage, textpage: pypdfium2.PdfTextPage) -> tuple[float, list[Any]]:
    """(invisible character share of text objects, image object bounds)."""
    import pypdfium2.raw as pdfium_c

    visible = invisible = 0
    images: list[Any] = []
    for obj in page.get_objects(max_depth=3):
        if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            images.append(obj.get_bounds())
        elif obj.type == pdfium_c.FPDF_PAGEOBJ_TEXT:
            size = pdfium_c.FPDFTextObj_GetText(obj.raw, textpage.raw, None, 0)
            chars = max(0, (int(size) - 2) // 2)
            mode = pdfium_c.FPDFTextObj_GetTextRenderMode(obj.raw)
            if mode == pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE:
                invisible += chars
            else:
                visible += chars
    total = visible + invisible
    return (invisible / total if total else 0.0), images


def analyse_page(
    page: pypdfium2.PdfPage, ctx: RouteContext, limits: Thresholds | None = None
) -> PageRoute:
    """The verdict for one page, from its text layer, its objects and its ink."""
    textpage = page.get_textpage()
    try:
        text, boxes = extract_text(textpage)
        invisible, images = _objects(page, textpage)
    finally:
        textpage.close()
    ink_cells = int(np.count_nonzero(ctx.ink_mask))
    ink = ink_cells / ctx.ink_mask.size if ctx.ink_mask.size else 0.0
    left, bottom, right, top = ctx.crop
    area = max(1e-6, (right - left) * (top - bottom))
    if ctx.rotation % 360 or ink_cells == 0:
        text_ink, cover = 1.0, 0.0  # not measured on rotated pages
        if images:
            cover = min(1.0, sum((r - le) * (t - b) for le, b, r, t in images) / area)
    else:
        in_text = _grid_mask([(b.left, b.bottom, b.right, b.top) for b in boxes], ctx)
        text_ink = float(np.count_nonzero(ctx.ink_mask & in_text)) / ink_cells
        cover = float(np.count_nonzero(_grid_mask(images, ctx))) / ctx.ink_mask.size
    features = PageFeatures(
        chars=sum(1 for ch in text if not ch.isspace()),
        ink=ink,
        text_ink_share=text_ink,
        image_cover=min(1.0, cover),
        invisible_share=invisible,
        text=score_text(text),
    )
    route, reasons = verdict(features, limits)
    return PageRoute(route, tuple(reasons), features, text)


def forced(route: PageRoute, reason: str) -> PageRoute:
    """The same scores, sent to OCR whatever they say (a redo asked for it)."""
    return PageRoute("ocr", (*route.reasons, reason), route.features, route.text, forced=True)


INK_LUMINANCE = 160  # as render.INK_LUMINANCE: darkest channel under it is ink
SUBSAMPLE = 3  # every third pixel of every third row, as render.ink_ratio


def route_rendered(
    page: pypdfium2.PdfPage, rgb: np.ndarray, scale: float, limits: Thresholds | None = None
) -> PageRoute:
    """The verdict for a page drawn at `scale` pixels per point into `rgb` (H×W×3 or more)."""
    sub = rgb[::SUBSAMPLE, ::SUBSAMPLE]
    darkest = np.minimum(np.minimum(sub[..., 0], sub[..., 1]), sub[..., 2])
    left, bottom, right, top = page.get_cropbox()
    ctx = RouteContext(
        ink_mask=darkest < INK_LUMINANCE,
        points_per_cell=SUBSAMPLE / scale,
        crop=(left, bottom, right, top),
        rotation=int(page.get_rotation()),
    )
    return analyse_page(page, ctx, limits)


def unreadable(reason: str) -> PageRoute:
    """The verdict for a page whose text layer could not be analysed: OCR it."""
    features = PageFeatures(0, 0.0, 0.0, 0.0, 0.0, score_text(""))
    return PageRoute("ocr", (f"route_error: {reason}",), features)


def route_page(
    page: pypdfium2.PdfPage, rgb: np.ndarray, scale: float, where: str, force: str | None
) -> PageRoute:
    """The verdict as the render process takes it: a page whose text layer cannot be
    analysed goes to OCR (with the reason) rather than failing; a redo forces OCR."""
    try:
        verdict = route_rendered(page, rgb, scale)
    except Exception as exc:  # a text layer pdfium chokes on: the page still gets OCR
        log.warning("%s: text layer not analysed (%s): OCR", where, exc)
        verdict = unreadable(f"{type(exc).__name__}: {exc}")
    return forced(verdict, force) if force else verdict
