"""Render one PDF page to an image with pypdfium2, in a render process (render_pool.py).

Pages are rendered one at a time (never a whole PDF in memory), at `dpi`, scaled down when a
page would exceed the pixel cap (page-size bombs), straight into a buffer the engine worker
maps (handover.py); the text layer and the text/OCR verdict (route.py) are taken on the same
open page. An optional cache keeps rendered pages on a fast local disk.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .blank import ink_ratio
from .errors import RenderError
from .handover import ShmFiles, new_bitmap
from .page import RenderedPage, RenderRequest, RenderSettings

if TYPE_CHECKING:
    import pypdfium2

    from .route import PageRoute

log = logging.getLogger(__name__)

# Pages with less ink than this also say whether they have a text layer (never blank).
CHECK_TEXT_BELOW = 0.01


# ---- rendering one page (used in render processes and by the raw-renderer benchmark) ------


class DocumentCache:
    """A few open PdfDocuments per render process: pages of one PDF arrive in runs."""

    def __init__(self, capacity: int = 4) -> None:
        self._capacity = capacity
        self._docs: OrderedDict[str, pypdfium2.PdfDocument] = OrderedDict()
        self._stats: dict[str, tuple[int, int, int, int]] = {}

    def get(self, path: str) -> pypdfium2.PdfDocument:
        import pypdfium2 as pdfium

        st = Path(path).stat()
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if path in self._docs and self._stats.get(path) == stamp:
            self._docs.move_to_end(path)
            return self._docs[path]
        if path in self._docs:  # the file was rewritten: an open handle would mix old and new
            self._docs.pop(path).close()
        pdf = pdfium.PdfDocument(path)
        self._docs[path] = pdf
        self._stats[path] = stamp
        while len(self._docs) > self._capacity:
            name, old = self._docs.popitem(last=False)
            self._stats.pop(name, None)
            old.close()
        return pdf

    def close(self) -> None:
        for pdf in self._docs.values():
            pdf.close()
        self._docs.clear()


def page_scale(width_pt: float, height_pt: float, settings: RenderSettings) -> tuple[float, bool]:
    """Scale factor from PDF points to pixels, capped so no page becomes a memory bomb."""
    if not (width_pt > 0 and height_pt > 0) or not math.isfinite(width_pt * height_pt):
        raise ValueError(f"page has no usable size ({width_pt} x {height_pt} pt)")
    scale = settings.dpi / 72.0
    capped = False
    pixels = width_pt * height_pt * scale * scale
    if pixels > settings.max_pixels:
        scale *= math.sqrt(settings.max_pixels / pixels)
        capped = True
    longest = max(width_pt, height_pt) * scale
    if longest > settings.max_side:
        scale *= settings.max_side / longest
        capped = True
    return scale, capped


def render_page(
    docs: DocumentCache,
    req: RenderRequest,
    settings: RenderSettings,
    shm: ShmFiles | None = None,
) -> RenderedPage:
    """Render one page; raises RenderError naming the file and page.

    With `shm`, pdfium draws straight into memory the engine worker maps (a shared buffer, or
    a /dev/shm file: `page.pixels_path`): the pixels are never copied between processes."""
    started = time.perf_counter()
    cached = _load_cached(req, settings)
    if cached is not None:
        rgb, scaled, dpi = cached
        verdict = _route_cached(docs, req, rgb, dpi) if settings.route else None
        text = _text_layer(docs, req) if settings.want_text and verdict is None else None
        out = _rendered(req, rgb, scaled, dpi, started, text, from_cache=True)
        if verdict is not None:
            out.route, out.text_layer = verdict, verdict.text
            text = verdict.text
        elif text is None and out.ink_ratio < CHECK_TEXT_BELOW:
            text = _text_layer(docs, req)
        out.has_text = bool(text and text.strip())
        return out
    try:
        pdf = docs.get(req.path)
    except Exception as exc:  # pdfium raises PdfiumError; a vanished file raises OSError
        raise RenderError(req.source or req.path, f"cannot open PDF: {exc}", req.page) from exc
    try:
        page = pdf[req.page - 1]
    except Exception as exc:
        raise RenderError(req.source or req.path, f"cannot load page: {exc}", req.page) from exc
    try:
        width_pt, height_pt = page.get_size()
        scale, scaled = page_scale(width_pt, height_pt, settings)
        target = shm.bitmap_maker() if shm is not None else None
        bitmap = page.render(
            scale=scale,
            rev_byteorder=True,
            draw_annots=True,
            bitmap_maker=target if target is not None else new_bitmap,
        )
        if target is not None and target.fallback:
            target = None
        pixels, stride, ink = _bitmap_pixels(bitmap)
        width, height = bitmap.width, bitmap.height
        owner: Any = bitmap if target is None else target
        verdict = None
        if settings.route:
            from .route import route_page

            where = f"{req.source} page {req.page}"
            verdict = route_page(page, bitmap.to_numpy(), scale, where, req.force_ocr)
        text = verdict.text if verdict is not None else None
        if verdict is None and (settings.want_text or ink < CHECK_TEXT_BELOW):
            text = _page_text(page)
    except Exception as exc:
        if target is not None:
            target.discard()
        raise RenderError(req.source or req.path, f"cannot render page: {exc}", req.page) from exc
    finally:
        page.close()
    page_out = RenderedPage(
        doc_id=req.doc_id,
        page=req.page,
        width=width,
        height=height,
        stride=stride,
        pixels=pixels,
        ink_ratio=ink,
        scaled_down=scaled,
        effective_dpi=round(scale * 72.0, 2),
        render_seconds=time.perf_counter() - started,
        text_layer=text if settings.want_text else None,
        owner=owner,
        pixels_path=target.path if target is not None else None,
        has_text=bool(text and text.strip()),
        route=verdict,
    )
    _store_cached(req, settings, page_out)
    return page_out


def _bitmap_pixels(bitmap: pypdfium2.PdfBitmap) -> tuple[np.ndarray, int, float]:
    """The bitmap's RGB bytes without a copy (its row stride kept; the array keeps the bitmap
    alive), and its ink share."""
    view = bitmap.to_numpy()
    if view.ndim == 3 and view.shape[2] == 3:
        return np.frombuffer(bitmap.buffer, dtype=np.uint8), int(bitmap.stride), ink_ratio(view)
    rgb = np.ascontiguousarray(view[..., :3]) if view.ndim == 3 else np.dstack([view] * 3)
    return rgb.reshape(-1), int(rgb.shape[1]) * 3, ink_ratio(rgb)


def _rendered(
    req: RenderRequest,
    rgb: np.ndarray,
    scaled: bool,
    dpi: float,
    started: float,
    text: str | None,
    *,
    from_cache: bool = False,
) -> RenderedPage:
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    return RenderedPage(
        doc_id=req.doc_id,
        page=req.page,
        width=width,
        height=height,
        stride=width * 3,
        pixels=rgb.tobytes(),
        ink_ratio=ink_ratio(rgb),
        scaled_down=scaled,
        effective_dpi=round(dpi, 2),
        render_seconds=time.perf_counter() - started,
        text_layer=text,
        from_cache=from_cache,
    )


def _page_text(page: pypdfium2.PdfPage) -> str:
    """The text layer in reading order, cleaned (ocrfleet.textlayer)."""
    from .textlayer import extract_text

    textpage = page.get_textpage()
    try:
        return extract_text(textpage)[0]
    finally:
        textpage.close()


def _text_layer(docs: DocumentCache, req: RenderRequest) -> str:
    try:
        page = docs.get(req.path)[req.page - 1]
    except Exception as exc:
        raise RenderError(req.source or req.path, f"cannot load page: {exc}", req.page) from exc
    try:
        return _page_text(page)
    finally:
        page.close()


def _route_cached(
    docs: DocumentCache, req: RenderRequest, rgb: np.ndarray, dpi: float
) -> PageRoute:
    from .route import route_page

    try:
        page = docs.get(req.path)[req.page - 1]
    except Exception as exc:
        raise RenderError(req.source or req.path, f"cannot load page: {exc}", req.page) from exc
    try:
        return route_page(page, rgb, dpi / 72.0, f"{req.source} page {req.page}", req.force_ocr)
    finally:
        page.close()


def _cache_path(req: RenderRequest, settings: RenderSettings) -> Path | None:
    if settings.cache_dir is None:
        return None
    key = f"p{req.page:05d}-{settings.dpi}dpi-{settings.max_pixels}-{settings.max_side}.png"
    return settings.cache_dir / req.doc_id[:2] / req.doc_id / key


def _load_cached(
    req: RenderRequest, settings: RenderSettings
) -> tuple[np.ndarray, bool, float] | None:
    path = _cache_path(req, settings)
    if path is None or not path.exists():
        return None
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
            scaled = img.info.get("ocrfleet-scaled") == "1"
            dpi = float(img.info.get("ocrfleet-dpi", settings.dpi))
    except Exception:  # a torn cache file is re-rendered, never trusted
        log.warning("ignoring unreadable image cache file %s", path)
        return None
    return rgb, scaled, dpi


def _store_cached(req: RenderRequest, settings: RenderSettings, page: RenderedPage) -> None:
    path = _cache_path(req, settings)
    if path is None or page.pixels is None:
        return
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("ocrfleet-scaled", "1" if page.scaled_down else "0")
    info.add_text("ocrfleet-dpi", f"{page.effective_dpi:.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    page.image().save(tmp, format="PNG", compress_level=1, pnginfo=info)
    tmp.replace(path)
