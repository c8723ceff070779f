"""DeepSeek-OCR's five resolution modes, and how many image tokens a page costs in each.

Upstream vLLM hard-codes Gundam; DeepSeek's own repository offers all five:

    mode    base  image  crops   image tokens
    tiny     512    512  no      73
    small    640    640  no      111
    base    1024   1024  no      273
    large   1280   1280  no      421
    gundam  1024    640  2–6     273 + local tiles (A4 at 144 dpi: 2×3 grid, 903)

Pure Python: imported by render processes and the CLI without torch or vLLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ARCHITECTURE = "OcrfleetDeepseekOCRForCausalLM"
RESOLUTION_KWARG = "ocrfleet_resolution"
PATCH = 16
DOWNSAMPLE = 4
MIN_CROPS = 2
MAX_CROPS = 6


@dataclass(frozen=True)
class Mode:
    name: str
    base_size: int
    image_size: int
    crop: bool


MODES: dict[str, Mode] = {
    "tiny": Mode("tiny", 512, 512, False),
    "small": Mode("small", 640, 640, False),
    "base": Mode("base", 1024, 1024, False),
    "large": Mode("large", 1280, 1280, False),
    "gundam": Mode("gundam", 1024, 640, True),
}


def mode(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown resolution {name!r}: one of {', '.join(MODES)}") from None


def aspect_ratios(min_num: int = MIN_CROPS, max_num: int = MAX_CROPS) -> list[tuple[int, int]]:
    """Tile grids (columns, rows) DeepSeek considers, smallest first (as its processor)."""
    ratios = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    return sorted(ratios, key=lambda r: r[0] * r[1])


def tile_grid(width: int, height: int, image_size: int) -> tuple[int, int]:
    """The (columns, rows) grid DeepSeek's dynamic_preprocess picks for a page of this size."""
    aspect = width / height
    area = width * height
    best_diff = float("inf")
    best = (1, 1)
    for ratio in aspect_ratios():
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff = diff
            best = ratio
        elif diff == best_diff and area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
            best = ratio
    return best


def crop_grid(m: Mode, width: int, height: int) -> tuple[int, int]:
    """(1, 1) when the page is not tiled in this mode."""
    if not m.crop or (width <= m.image_size and height <= m.image_size):
        return (1, 1)
    return tile_grid(width, height, m.image_size)


def tile_count(grid: tuple[int, int]) -> int:
    """Tiles a page has besides its global view: none unless the grid is more than one tile."""
    columns, rows = grid
    return columns * rows if columns > 1 or rows > 1 else 0


def image_tokens(m: Mode, grid: tuple[int, int]) -> int:
    """Image tokens for one page (vLLM's "v1" strategy, the view separator included)."""
    base_queries = math.ceil((m.base_size // PATCH) / DOWNSAMPLE)
    tokens = base_queries * (base_queries + 1) + 1
    columns, rows = grid
    if tile_count(grid):
        queries = math.ceil((m.image_size // PATCH) / DOWNSAMPLE)
        tokens += (queries * columns + 1) * (queries * rows)
    return tokens


def page_image_tokens(name: str, width: int, height: int) -> int:
    m = mode(name)
    return image_tokens(m, crop_grid(m, width, height))


def engine_overrides(resolution: str) -> dict[str, object]:
    """vLLM engine arguments that select ocrfleet's DeepSeek-OCR variant in this mode."""
    mode(resolution)
    return {
        "hf_overrides": {"architectures": [ARCHITECTURE]},
        "mm_processor_kwargs": {RESOLUTION_KWARG: resolution},
    }
