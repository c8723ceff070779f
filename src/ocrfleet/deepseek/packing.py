"""Do DeepSeek-OCR's image preprocessing in render processes, and hand vLLM uint8 pixels.

vLLM's DeepseekOCRProcessor resizes, pads, tiles and normalises every page in the engine's
single frontend thread (≈150 ms a page on one core here), which starves a fast GPU. A render
process does the same PIL operations instead, in parallel with the others, and packs the
result into one uint8 array ("packed page"); ocrfleet's processor variant (model.py) unpacks
it without touching pixels, and the model normalises on the GPU. The PIL calls are the
processor's own, so the tensors are the same (tests compare them with vLLM's processor).

Packed page v1, an (rows, base, 3) uint8 array:
    row 0               header: MAGIC, version, mode index, tile columns, tile rows
    rows 1 … base       the global view, base × base
    then per tile       image_size² / base rows (a tile's pixels, row-major)
It is an ordinary HWC image array as far as vLLM's input parser is concerned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .modes import MODES, Mode, crop_grid, tile_count

MAGIC = b"OCRFLEET"
VERSION = 1
MODE_NAMES = tuple(MODES)
# ImageTransform's mean (0.5) as the processor computes its pad colour: int(0.5 * 255).
PAD_COLOR = (127, 127, 127)


@dataclass(frozen=True)
class Unpacked:
    mode: Mode
    grid: tuple[int, int]
    global_view: np.ndarray  # (base, base, 3) uint8
    tiles: np.ndarray  # (n, image, image, 3) uint8; n = 0 when not tiled


def global_view(image: Image.Image, m: Mode) -> Image.Image:
    source = image if m.crop else image.resize((m.image_size, m.image_size))
    return ImageOps.pad(source, (m.base_size, m.base_size), color=PAD_COLOR)


def tiles(image: Image.Image, m: Mode, grid: tuple[int, int]) -> list[Image.Image]:
    """dynamic_preprocess: resize to the grid, cut row-major tiles."""
    columns, rows = grid
    if columns == 1 and rows == 1:
        return []
    size = m.image_size
    resized = image.resize((size * columns, size * rows))
    return [
        resized.crop(
            (
                (i % columns) * size,
                (i // columns) * size,
                (i % columns + 1) * size,
                (i // columns + 1) * size,
            )
        )
        for i in range(columns * rows)
    ]


def pack_page(image: Image.Image, resolution: str) -> np.ndarray:
    """Everything DeepSeek-OCR's processor would compute from this page, as uint8."""
    m = MODES[resolution]
    if image.mode != "RGB":
        image = image.convert("RGB")
    grid = crop_grid(m, image.width, image.height)
    parts = [np.asarray(global_view(image, m), dtype=np.uint8)]
    rows_per_tile = m.image_size * m.image_size // m.base_size
    parts += [
        np.asarray(tile, dtype=np.uint8).reshape(rows_per_tile, m.base_size, 3)
        for tile in tiles(image, m, grid)
    ]
    header = np.zeros((1, m.base_size, 3), dtype=np.uint8)
    flat = header.reshape(-1)
    fields = bytes([VERSION, MODE_NAMES.index(m.name), grid[0], grid[1]])
    flat[: len(MAGIC) + len(fields)] = np.frombuffer(MAGIC + fields, dtype=np.uint8)
    return np.concatenate([header, *parts], axis=0)


def is_packed(item: object) -> bool:
    return (
        isinstance(item, np.ndarray)
        and item.dtype == np.uint8
        and item.ndim == 3
        and item.shape[2] == 3
        and item.shape[1] >= 16
        and bytes(item[0].reshape(-1)[: len(MAGIC)]) == MAGIC
    )


def unpack(packed: np.ndarray) -> Unpacked:
    header = bytes(packed[0].reshape(-1)[: len(MAGIC) + 4])
    version, mode_index, columns, rows = header[len(MAGIC) :]
    if header[: len(MAGIC)] != MAGIC or version != VERSION:
        raise ValueError("not an ocrfleet packed page (or another version)")
    m = MODES[MODE_NAMES[mode_index]]
    base = m.base_size
    view = packed[1 : 1 + base]
    count = tile_count((columns, rows))
    rows_per_tile = m.image_size * m.image_size // base
    body = packed[1 + base : 1 + base + count * rows_per_tile]
    if view.shape != (base, base, 3) or body.shape[0] != count * rows_per_tile:
        raise ValueError("packed page is truncated")
    tile_array = body.reshape(count, m.image_size, m.image_size, 3)
    return Unpacked(m, (columns, rows), view, tile_array)
