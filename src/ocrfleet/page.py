"""The page as it moves through the flow: what to render, how, and what came out.

Plain types with no imports from the rest of ocrfleet above them, so render processes,
engines, preparers and the page worker can all share them.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from .route import PageRoute


@dataclass(frozen=True)
class RenderSettings:
    dpi: int = 144
    max_pixels: int = 25_000_000
    max_side: int = 10_000
    cache_dir: Path | None = None
    want_text: bool = False
    # Name of a preparer (ocrfleet.prepare) that turns the page into engine-ready arrays
    # inside the render process, off the engine's critical path.
    prepare: str | None = None
    keep_pixels: bool = True
    # Reusable shared page buffers per render process (handover.SharedBuffers); pages beyond
    # them (an engine holding many) go by /dev/shm file.
    shared_buffers: int = 8
    # Decide per page: text layer or OCR (ocrfleet.route), on the render just made.
    route: bool = False


@dataclass(frozen=True)
class RenderRequest:
    doc_id: str
    path: str
    page: int  # 1-based
    source: str = ""
    # Send the page to OCR whatever its text layer says (a redo), with this reason.
    force_ocr: str | None = None


@dataclass
class RenderedPage:
    doc_id: str
    page: int
    width: int
    height: int
    stride: int
    pixels: bytes | bytearray | mmap.mmap | np.ndarray | None
    ink_ratio: float
    scaled_down: bool
    effective_dpi: float
    render_seconds: float
    text_layer: str | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    from_cache: bool = False
    # What owns the memory `pixels` points into (pdfium's bitmap): kept alive with the page.
    owner: Any = field(default=None, repr=False, compare=False)
    # Set when the pixels were drawn into a /dev/shm file (render processes).
    pixels_path: str | None = None
    # The page has a text layer (checked for pages with little ink): it is never blank.
    has_text: bool = False
    route: PageRoute | None = None  # the text-layer verdict, when the engine asked for it

    def image(self) -> Image.Image:
        """The page as an RGB PIL image (no copy of the pixel buffer where PIL allows)."""
        from PIL import Image

        if self.pixels is None:
            raise ValueError("this page was rendered without keeping its pixels")
        return Image.frombuffer(
            "RGB",
            (self.width, self.height),
            np.frombuffer(self.pixels, dtype=np.uint8),
            "raw",
            "RGB",
            self.stride,
            1,
        )
