"""Sample PDFs made on the spot: Greek and English, born-digital and image-only, and broken ones.

Used by the tests, the shipped examples and the benchmarks. Needs reportlab (a development
dependency) and the DejaVu fonts (Greek glyphs); the texts are our own.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
A4 = (595.2756, 841.8898)

GREEK = [
    "Η μελέτη της ελληνικής γλώσσας στα αρχεία του εικοστού αιώνα.",
    "Τα έγγραφα σαρώθηκαν σε υψηλή ανάλυση και ελέγχθηκαν σελίδα προς σελίδα.",
    "Οι πίνακες και τα σχήματα διατηρούνται όπως εμφανίζονται στο πρωτότυπο.",
    "Κάθε σελίδα καταγράφεται με τον αριθμό της, ώστε να μη χάνεται τίποτα.",
]
ENGLISH = [
    "A survey of municipal records digitised between 1950 and 1990.",
    "Every page is kept with its number, so that nothing is silently lost.",
    "Tables and figures are preserved as they appear in the original.",
    "The archive mixes born-digital reports with scanned typewritten pages.",
]


def paragraph(index: int, greek: bool = True) -> str:
    pool = GREEK if greek else ENGLISH
    return " ".join(pool[(index + k) % len(pool)] for k in range(3))


def _font_name() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("DejaVuSans", str(FONT_PATH)))
    return "DejaVuSans"


def _wrap(text: str, width: int = 70) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if len(current) + len(word) + 1 > width and current:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(current)
    return lines


def text_pdf(
    path: Path,
    pages: Sequence[str],
    *,
    size: tuple[float, float] = A4,
    password: str | None = None,
) -> Path:
    """A born-digital PDF: one string per page ("" makes a blank page)."""
    from reportlab.lib.pdfencrypt import StandardEncryption
    from reportlab.pdfgen import canvas

    path.parent.mkdir(parents=True, exist_ok=True)
    encrypt = StandardEncryption(password, ownerPassword=password + "-owner") if password else None
    pdf = canvas.Canvas(str(path), pagesize=size, encrypt=encrypt, invariant=True)
    font = _font_name()
    for text in pages:
        pdf.setFont(font, 12)
        y = size[1] - 72
        for line in _wrap(text) if text else []:
            pdf.drawString(72, y, line)
            y -= 18
        pdf.showPage()
    pdf.save()
    return path


def text_image(text: str, width_px: int, height_px: int) -> bytes:
    """A page-sized PNG with the text drawn on it (what a scan of the page would hold)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width_px, height_px), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT_PATH), max(12, width_px // 45))
    y = height_px // 12
    for line in _wrap(text, 50):
        draw.text((width_px // 12, y), line, fill="black", font=font)
        y += int(font.size * 1.6)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_pdf(
    path: Path, pages: Sequence[str], *, size: tuple[float, float] = A4, dpi: int = 100
) -> Path:
    """An image-only PDF (no text layer), like a scan: each page is one raster image."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = canvas.Canvas(str(path), pagesize=size, invariant=True)
    width_px, height_px = int(size[0] / 72 * dpi), int(size[1] / 72 * dpi)
    for text in pages:
        reader = ImageReader(io.BytesIO(text_image(text, width_px, height_px)))
        pdf.drawImage(reader, 0, 0, width=size[0], height=size[1])
        pdf.showPage()
    pdf.save()
    return path


def mixed_pdf(
    path: Path, pages: Sequence[tuple[str, str]], *, size: tuple[float, float] = A4, dpi: int = 100
) -> Path:
    """Pages of kind "text", "image" or "blank", each with its text."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = canvas.Canvas(str(path), pagesize=size, invariant=True)
    font = _font_name()
    width_px, height_px = int(size[0] / 72 * dpi), int(size[1] / 72 * dpi)
    for kind, text in pages:
        if kind == "text":
            pdf.setFont(font, 12)
            y = size[1] - 72
            for line in _wrap(text):
                pdf.drawString(72, y, line)
                y -= 18
        elif kind == "image":
            reader = ImageReader(io.BytesIO(text_image(text, width_px, height_px)))
            pdf.drawImage(reader, 0, 0, width=size[0], height=size[1])
        pdf.showPage()
    pdf.save()
    return path


def corrupt_pdf(path: Path) -> Path:
    """Starts like a PDF, then garbage: pdfium refuses it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n")
    return path


def html_pdf(path: Path) -> Path:
    """An HTML page saved with a .pdf name (what a failed download often is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!DOCTYPE html><html><head><title>403 Forbidden</title></head>"
        "<body>Access denied</body></html>\n",
        encoding="utf-8",
    )
    return path


def long_pdf(path: Path, pages: int) -> Path:
    """Many small born-digital pages, quickly (benchmarks of memory on long PDFs)."""
    from reportlab.pdfgen import canvas

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=True)
    font = _font_name()
    for n in range(pages):
        pdf.setFont(font, 12)
        y = A4[1] - 72
        for line in _wrap(f"Σελίδα {n + 1}. " + paragraph(n, greek=n % 2 == 0)):
            pdf.drawString(72, y, line)
            y -= 18
        pdf.showPage()
    pdf.save()
    return path


def scan_jpeg(text: str, seed: int, dpi: int = 150) -> bytes:
    """A page-sized JPEG that looks like a scan: dense text, a grey cast, speckle noise."""
    import numpy as np
    from PIL import Image

    width, height = int(A4[0] / 72 * dpi), int(A4[1] / 72 * dpi)
    png = text_image(text, width, height)
    image = Image.open(io.BytesIO(png)).convert("L")
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, dtype=np.int16) - 18 + rng.integers(-12, 12, (height, width))
    noisy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
    buffer = io.BytesIO()
    noisy.save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def realistic_pdf(path: Path, pages: int, *, scans: int = 8) -> Path:
    """Benchmark pages like a mixed archive: dense born-digital text pages alternating with
    scanned pages (distinct JPEG scans, cycled), A4."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    path.parent.mkdir(parents=True, exist_ok=True)
    dense = " ".join(paragraph(k) + " " + paragraph(k, greek=False) for k in range(8))
    images = [scan_jpeg(dense, seed) for seed in range(scans)]
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=True)
    font = _font_name()
    for n in range(pages):
        if n % 2:
            reader = ImageReader(io.BytesIO(images[(n // 2) % scans]))
            pdf.drawImage(reader, 0, 0, width=A4[0], height=A4[1])
        else:
            pdf.setFont(font, 10)
            y = A4[1] - 50
            for line in _wrap(f"{n + 1}. " + dense, 95)[:58]:
                pdf.drawString(40, y, line)
                y -= 13
        pdf.showPage()
    pdf.save()
    return path
