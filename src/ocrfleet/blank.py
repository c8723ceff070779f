"""Is a rendered page blank? The test that decides which pages never reach the engine.

A page called blank is never OCR'd, so the test errs towards "not blank": it must see faint
ink (0.7–0.8 grey text), small text (4 pt) and text thinned by a scale-down (a huge page
rendered under the pixel cap), and still call a truly empty scan blank: paper grain and
isolated dust specks are not ink. A page with a text layer is never blank (the pipeline
checks that; see `RenderedPage.has_text`).

The measure is the share of ink pixels. A quick pass (every third pixel of every third row,
dark pixels only) settles pages with plenty of ink; the careful pass, run only on pages the
quick pass finds nearly empty, looks at every pixel: ink is anything that stands out from
the paper (the page's median tone) by CONTRAST levels in its darkest channel, and counts
only where the WINDOW×WINDOW pixels around it hold at least CLUSTER ink pixels: a stroke of a
glyph does (a lone page number "1" still counts), grain, dust specks and the blocks JPEG
makes of them do not.

The share is taken over the page, or over an A4 page at 144 dpi when the page is larger
(REFERENCE_PIXELS): a line of text on an A0 poster scaled down under the pixel cap weighs
what it would on A4, instead of vanishing in the poster's area.
"""

from __future__ import annotations

import numpy as np

# Luminance under which a pixel is surely ink (quick pass).
DARK = 160
# A quick-pass share at or above this settles "not blank" without the careful pass.
PLENTY = 0.001
# Levels (0–255) a pixel must differ from the paper to count as ink in the careful pass:
# 0.8 grey text on white differs by 51, antialiased 4-pt strokes by ~25; scanner grain
# (σ of a few levels) very rarely reaches it, and never in two adjacent pixels.
CONTRAST = 20
WINDOW = 7
CLUSTER = 12
# A4 at 144 dpi.
REFERENCE_PIXELS = 1191 * 1684


def darkest_channel(rgb: np.ndarray) -> np.ndarray:
    """Per pixel, the darkest of R, G, B: coloured text counts as ink."""
    if rgb.ndim == 2:
        return rgb
    darkest: np.ndarray = np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
    return darkest


def _share(count: int, pixels: int) -> float:
    return min(1.0, count / float(min(pixels, REFERENCE_PIXELS))) if pixels else 0.0


def quick_ink_ratio(rgb: np.ndarray) -> float:
    sub = darkest_channel(rgb[::3, ::3])
    return _share(int(np.count_nonzero(sub < DARK)) * 9, int(sub.size) * 9)


def careful_ink_ratio(rgb: np.ndarray) -> float:
    """Share of pixels that stand out from the paper inside a cluster of such pixels."""
    dark = darkest_channel(rgb)
    if dark.size == 0:
        return 0.0
    paper = int(np.median(dark[::4, ::4]))
    ink = np.abs(dark.astype(np.int16) - paper) >= CONTRAST
    if np.count_nonzero(ink) < CLUSTER:
        return 0.0
    # Ink pixels in each pixel's WINDOW×WINDOW neighbourhood, from a summed-area table.
    half = WINDOW // 2
    table = np.pad(ink.astype(np.int32), ((half + 1, half), (half + 1, half)))
    table = table.cumsum(axis=0).cumsum(axis=1)
    box = (
        table[WINDOW:, WINDOW:]
        - table[:-WINDOW, WINDOW:]
        - table[WINDOW:, :-WINDOW]
        + table[:-WINDOW, :-WINDOW]
    )
    return _share(int(np.count_nonzero(ink & (box >= CLUSTER))), int(dark.size))


def ink_ratio(rgb: np.ndarray) -> float:
    """Share of ink pixels of an RGB (or grey) page image (see the module's notes)."""
    quick = quick_ink_ratio(rgb)
    if quick >= PLENTY:
        return quick
    return careful_ink_ratio(rgb)
