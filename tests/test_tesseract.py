"""The Tesseract engine on its own: a page's text, and no orphan process when cancelled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest

from ocrfleet.config import EngineConfig
from ocrfleet.engines.base import OcrRequest
from ocrfleet.engines.tesseract import TesseractEngine
from ocrfleet.evaluate import compare
from ocrfleet.page import RenderRequest, RenderSettings
from ocrfleet.render import DocumentCache, render_page
from ocrfleet.testing.routeset import ENGLISH_TEXT, make_pdf


def _request(tmp_path: Path, text: str) -> OcrRequest:
    path = make_pdf(tmp_path / "scan.pdf", [("scan", text)])
    docs = DocumentCache()
    try:
        page = render_page(docs, RenderRequest("d", str(path), 1), RenderSettings(dpi=300))
    finally:
        docs.close()
    page.pixels = bytes(page.pixels)  # type: ignore[arg-type]  # outlive pdfium's bitmap
    page.owner = None
    return OcrRequest("r", page, "", "free", 0)


def test_tesseract_reads_a_page_and_leaves_no_process_when_cancelled(tmp_path: Path) -> None:
    request = _request(tmp_path, ENGLISH_TEXT[:200])
    engine = TesseractEngine(EngineConfig(name="tesseract", tesseract_langs="eng"))

    async def scenario() -> str:
        await engine.start()
        result = await engine.ocr(request)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.ocr(request), timeout=0.2)  # the pipeline's timeout
        await engine.close()
        return result.text

    text = asyncio.run(scenario())
    assert compare(text, ENGLISH_TEXT[:200])["strict"].cer < 0.02
    children = [p.name() for p in psutil.Process().children(recursive=True)]
    assert "tesseract" not in children
