"""Blank-page detection: faint, small and scaled-down text is never blank; empty scans are.

Every page is built here with reportlab. Text pages come in two forms: with a text layer
(born-digital) and flattened to an image of the same page (a scan of it, no text layer),
so the pixel test is checked on its own.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from reportlab.lib.pagesizes import A0, A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from ocrfleet.config import RunConfig
from ocrfleet.page import RenderRequest, RenderSettings
from ocrfleet.render import DocumentCache, render_page
from ocrfleet.testing import samples

DEFAULT_THRESHOLD = RunConfig(inputs=("x",), output_dir=Path("x")).policy.blank_threshold
LINE = "Faint words on a page: Λέξεις 2026, page 7"


def text_page(path: Path, size: tuple[float, float], font_size: float, grey: float) -> Path:
    """One line of text (a footer, a caption) in `grey` (0 black, 1 white) at `font_size`."""
    pdf = canvas.Canvas(str(path), pagesize=size, invariant=True)
    pdf.setFillGray(grey)
    pdf.setFont(samples._font_name(), font_size)
    pdf.drawString(size[0] * 0.1, size[1] * 0.5, LINE)
    pdf.showPage()
    pdf.save()
    return path


def flattened(path: Path, dpi: int = 150) -> Path:
    """The same page as one raster image and no text layer: what a scanner would make."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(path)
    page = pdf[0]
    size = page.get_size()
    image = page.render(scale=dpi / 72).to_pil().convert("RGB")
    page.close()
    pdf.close()
    return image_only(path.with_name(path.stem + "-scan.pdf"), np.asarray(image), size)


def image_only(path: Path, pixels: np.ndarray, size: tuple[float, float], fmt: str = "PNG") -> Path:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=50)
    pdf = canvas.Canvas(str(path), pagesize=size, invariant=True)
    pdf.drawImage(ImageReader(io.BytesIO(buffer.getvalue())), 0, 0, width=size[0], height=size[1])
    pdf.showPage()
    pdf.save()
    return path


def rendered(path: Path, **settings: int):  # type: ignore[no-untyped-def]
    docs = DocumentCache()
    try:
        return render_page(docs, RenderRequest("d", str(path), 1), RenderSettings(**settings))
    finally:
        docs.close()


FAINT_CASES = {
    "grey-0.7-10pt": (A4, 10.0, 0.7),
    "grey-0.8-10pt": (A4, 10.0, 0.8),
    "black-4pt": (A4, 4.0, 0.0),
    "grey-0.7-4pt": (A4, 4.0, 0.7),
    "A0-scaled-down-10pt": (A0, 10.0, 0.0),
    "A0-scaled-down-grey-0.7-12pt": (A0, 12.0, 0.7),
}


@pytest.mark.parametrize("case", sorted(FAINT_CASES))
def test_faint_small_and_scaled_down_text_is_ink(tmp_path: Path, case: str) -> None:
    size, font_size, grey = FAINT_CASES[case]
    scan = flattened(text_page(tmp_path / f"{case}.pdf", size, font_size, grey))
    page = rendered(scan)
    assert not page.has_text  # only the pixels can tell
    if size == A0:
        assert page.scaled_down
    assert page.ink_ratio >= DEFAULT_THRESHOLD, (case, page.ink_ratio)


def test_a_line_on_a_huge_poster_scaled_far_down_is_ink(tmp_path: Path) -> None:
    """A 100-inch square page: rendered at a fifth of the dpi, 12-pt grey text is a smudge
    a few pixels high, and the page's area is 12 A4 pages'."""
    poster = text_page(tmp_path / "poster.pdf", (7200.0, 7200.0), 12.0, 0.7)
    page = rendered(flattened(poster, dpi=36))
    assert page.scaled_down and not page.has_text
    assert page.ink_ratio >= DEFAULT_THRESHOLD, page.ink_ratio


def test_a_scanned_page_with_only_a_page_number_is_not_blank(tmp_path: Path) -> None:
    path = tmp_path / "number.pdf"
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=True)
    pdf.setFillGray(0.7)
    pdf.setFont("Helvetica", 10)
    pdf.drawString(A4[0] / 2, 40, "1")
    pdf.showPage()
    pdf.save()
    page = rendered(flattened(path))
    assert page.ink_ratio >= DEFAULT_THRESHOLD, page.ink_ratio


def test_a_text_layer_is_never_blank_even_without_visible_ink(tmp_path: Path) -> None:
    # White text (and text so light no pixel shows it) is still text a reader can extract.
    page = rendered(text_page(tmp_path / "white.pdf", A4, 10.0, 1.0))
    assert page.ink_ratio < DEFAULT_THRESHOLD
    assert page.has_text


def scanner_noise(seed: int, shape: tuple[int, int] = (1754, 1240)) -> np.ndarray:
    """An empty page as a 150-dpi scanner returns it: paper grain, dust specks, no ink."""
    rng = np.random.default_rng(seed)
    grey = 245 + rng.normal(0, 4, shape)
    ys, xs = rng.integers(0, shape[0], 150), rng.integers(0, shape[1], 150)
    grey[ys, xs] = rng.integers(0, 120, 150)  # isolated dark specks
    dust = zip(rng.integers(0, shape[0] - 2, 3), rng.integers(0, shape[1] - 2, 3), strict=True)
    for y, x in dust:
        grey[y : y + 2, x : x + 2] = 60  # a few bits of dust
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_empty_and_noisy_scans_stay_blank(tmp_path: Path, seed: int) -> None:
    noisy = rendered(image_only(tmp_path / "noise.pdf", scanner_noise(seed), A4))
    assert noisy.ink_ratio < DEFAULT_THRESHOLD and not noisy.has_text
    # The same scan saved as a JPEG (quality 50): compression smears specks into blocks.
    jpeg = rendered(image_only(tmp_path / "noise-jpeg.pdf", scanner_noise(seed), A4, "JPEG"))
    assert jpeg.ink_ratio < DEFAULT_THRESHOLD
    empty = tmp_path / "empty.pdf"
    pdf = canvas.Canvas(str(empty), pagesize=A4, invariant=True)
    pdf.showPage()
    pdf.save()
    assert rendered(empty).ink_ratio == 0.0


def test_the_pipeline_ocrs_a_faint_scan_and_a_text_layer_page(tmp_path: Path) -> None:
    """End to end with a scripted engine: neither page is skipped as blank."""
    faint = flattened(text_page(tmp_path / "faint.pdf", A4, 8.0, 0.75))
    white = text_page(tmp_path / "white.pdf", A4, 10.0, 1.0)
    out = run_pdfs(tmp_path / "run2", [faint, white])
    assert [r["status"] for r in out] == ["done", "done"]


def run_pdfs(root: Path, pdfs: list[Path]) -> list[dict[str, object]]:
    import asyncio
    import json

    from ocrfleet.config import EngineConfig
    from ocrfleet.layout import ledger_path
    from ocrfleet.ledger import Ledger
    from ocrfleet.page_worker import PageWorker
    from ocrfleet.plan import make_plan
    from tests.fakes import ScriptedEngine

    engine_config = EngineConfig(name="tests.fakes:scripted")
    config = RunConfig(
        inputs=tuple(str(p) for p in pdfs), output_dir=root / "out", engine=engine_config
    )
    ledger = Ledger(ledger_path(config.output_dir, 1, 0))
    make_plan(config, ledger)
    worker = PageWorker(config, ledger, ScriptedEngine(engine_config), "w", render_workers=1)
    asyncio.run(worker.run())
    ledger.close()
    return [
        json.loads((config.output_dir / "pages" / f"{p.stem}.jsonl").read_text("utf-8"))
        for p in pdfs
    ]
