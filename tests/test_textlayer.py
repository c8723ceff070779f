"""Clean text-layer output: hyphenation joined, ligatures, NFC, columns in reading order."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from ocrfleet.testing.routeset import A4, GREEK_TEXT, SERIF, _font, chromium_pdf, make_pdf
from ocrfleet.textlayer import clean_text, extract_text


def test_clean_text_joins_hyphenation_and_normalises() -> None:
    assert clean_text("docu\ufffement") == "document"
    assert clean_text("η μελέ\ufffe\r\nτη έγινε") == "η μελέτη έγινε"
    assert clean_text("soft\u00ad\nhyphen") == "softhyphen"
    assert clean_text("a \ufb01ne \ufb02ow \ufb03x") == "a fine flow ffix"
    oxia = "\u03b1\u0301"  # alpha + combining acute: NFC composes it
    assert clean_text(oxia) == unicodedata.normalize("NFC", oxia) == "\u03ac"
    assert clean_text("stray \ufffe mark\x07") == "stray  mark"
    assert clean_text("well-\nknown") == "well-\nknown"  # a real hyphen stays
    assert (
        clean_text("αναφ\u2010\nορές ΓΡ\u2010\nΑΦΗ Jean\u2010\nPaul")
        == "αναφορές ΓΡΑΦΗ Jean\u2010\nPaul"
    )


def _text(path: Path, page: int = 0) -> tuple[str, str]:
    pdf = pdfium.PdfDocument(str(path))
    try:
        textpage = pdf[page].get_textpage()
        return textpage.get_text_range(), extract_text(textpage)[0]
    finally:
        pdf.close()


def test_hyphenated_words_are_joined(tmp_path: Path) -> None:
    text = GREEK_TEXT
    path = make_pdf(tmp_path / "h.pdf", [("text", text)])
    raw, clean = _text(path)
    assert "\ufffe" in raw  # pdfium marks the hyphen it found at a line end
    assert "\ufffe" not in clean and "\u00ad" not in clean
    assert clean.split() == text.split()


def test_interleaved_columns_come_out_in_reading_order(tmp_path: Path) -> None:
    """Lines drawn left, right, left, right…: pdfium's order interleaves the columns."""
    from reportlab.pdfgen import canvas

    left = [f"αριστερή στήλη γραμμή {n}" for n in range(12)]
    right = [f"δεξιά στήλη γραμμή {n}" for n in range(12)]
    path = tmp_path / "cols.pdf"
    pdf = canvas.Canvas(str(path), pagesize=A4)
    font = _font("DejaVuSerif", SERIF)
    pdf.setFont(font, 10)
    pdf.drawString(60, A4[1] - 50, "Κεφαλίδα της σελίδας")
    for n in range(12):
        y = A4[1] - 90 - 15 * n
        pdf.drawString(60, y, left[n])
        pdf.drawString(320, y, right[n])
    pdf.drawCentredString(A4[0] / 2, 30, "σελίδα 7")
    pdf.showPage()
    pdf.save()
    raw, clean = _text(path)
    assert raw.index(right[0]) < raw.index(left[1])  # interleaved as drawn
    lines = [line for line in clean.splitlines() if line.strip()]
    assert lines == ["Κεφαλίδα της σελίδας", *left, *right, "σελίδα 7"]


def test_a_chromium_pdf_reads_in_order_with_soft_hyphens_joined(tmp_path: Path) -> None:
    """A real producer: Chrome's Save as PDF, two justified columns, soft hyphens taken at
    line ends (drawn as U+2010)."""
    paragraphs = [GREEK_TEXT, GREEK_TEXT.upper()]
    path = chromium_pdf(tmp_path / "c.pdf", paragraphs, columns=2)
    if path is None:
        pytest.skip("chromium is not installed")
    raw, clean = _text(path)
    assert "\u2010\r\n" in raw  # words broken at line ends
    assert clean.split() == " ".join(paragraphs).split()
