"""A labelled set for the text-layer router: PDFs made here, each page with its right route.

Sources (all generated on the spot with reportlab, Pillow and the DejaVu fonts; the texts are
our own): born-digital Greek, polytonic Greek and English pages (one and two columns, with
words hyphenated at line ends, with a photograph); scans (image-only pages, clean and mildly
degraded); scans with a stamped text header; scans under an invisible (render mode 3) OCR
layer; born-digital Greek whose font has a ToUnicode map that says Latin letters (a legacy
Greek font), maps nothing, maps polytonic letters into the private-use area (old polytonic
fonts), or holds UTF-8 read as cp1253 (mojibake). Expected routes: good born-digital → text,
every other kind → ocr.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .samples import A4

SERIF = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

GREEK_TEXT = (
    "Η ιστορία του νησιού καταγράφεται σε έγγραφα που φυλάσσονται στο δημοτικό αρχείο. "
    "Οι πρώτες αναφορές προέρχονται από συμβόλαια και επιστολές των κατοίκων, γραμμένες με "
    "προσοχή σε χαρτί που άντεξε στον χρόνο. Οι ερευνητές διάβασαν κάθε σελίδα και σημείωσαν "
    "τα ονόματα, τις ημερομηνίες και τους τόπους που αναφέρονται. Στις αρχές του αιώνα το "
    "λιμάνι γνώρισε μεγάλη ανάπτυξη, καθώς τα πλοία μετέφεραν λάδι, κρασί και σιτάρι προς τις "
    "πόλεις της ηπειρωτικής χώρας. Τα σχολεία του χωριού δέχονταν παιδιά από τα γύρω χωριά, "
    "ενώ οι δάσκαλοι έγραφαν εκθέσεις για την πρόοδο των μαθητών. Η βιβλιοθήκη απέκτησε "
    "σπάνιες εκδόσεις, χάρη στις δωρεές των αποδήμων που ζούσαν στην Αλεξάνδρεια και στη "
    "Μασσαλία. Σήμερα τα τεκμήρια ψηφιοποιούνται, ώστε να είναι προσβάσιμα σε όλους τους "
    "πολίτες και στους μελετητές της τοπικής ιστορίας."
)
POLYTONIC_TEXT = (
    "Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν. Ἡ πόλις τῶν Ἀθηναίων ἐκόσμησε τὴν "
    "ἀκρόπολιν ναοῖς καὶ ἀγάλμασιν, ὥστε πάντας τοὺς ξένους θαυμάζειν. Οἱ ποιηταὶ ᾖδον τὰ "
    "ἔργα τῶν ἡρώων, καὶ οἱ φιλόσοφοι ἐζήτουν τὴν ἀλήθειαν περὶ τῆς φύσεως καὶ τοῦ βίου. "
    "Ἡ γλῶσσα αὕτη διεσώθη ἐν χειρογράφοις, ἃ οἱ μοναχοὶ ἀντέγραψαν μετὰ πολλῆς ἐπιμελείας."
)
ENGLISH_TEXT = (
    "The harbour records of the island were kept in bound volumes by the port authority. "
    "Each entry names the ship, its master, its cargo and the date on which it arrived or "
    "left. Researchers transcribed the volumes and compared them with the customs ledgers, "
    "which survive for most of the years between the two wars. The comparison shows that "
    "olive oil and wine were the main exports, while grain and timber were brought in from "
    "the mainland. Schools and libraries in the villages are documented in the same archive, "
    "with reports written by teachers on the progress of their pupils. The collection is now "
    "being digitised so that it can be read by everyone who is interested in local history."
)
COLUMN_HEADER = "Τεύχος 12 — Header of the page"
STAMP = "Downloaded from the digital archive"
# The Latin letters a legacy Greek font's codes correspond to (the font draws Greek).
LEGACY_GREEK = dict(
    zip(
        "αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
        "abgdezhuiklmnjoprswtyfxcvaehioyvABGDEZHUIKLMNJOPRSTYFXCV",
        strict=True,
    )
)


@dataclass(frozen=True)
class LabelledPage:
    kind: str
    route: str  # the right verdict: text or ocr
    truth: str  # the page's text as a reader sees it


@dataclass(frozen=True)
class LabelledDoc:
    name: str
    path: Path
    pages: tuple[LabelledPage, ...]
    language: str  # el, grc, en


def wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + len(word) + 1 > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*lines, current] if current else lines


def hyphenate(lines: list[str], every: int = 3) -> list[str]:
    """Break the last word of every `every`-th line with a hyphen, carrying the rest down."""
    out = list(lines)
    for i in range(0, len(out) - 1, every):
        words = out[i].split()
        last = words[-1]
        if len(last) >= 7 and last.isalpha():
            cut = len(last) // 2
            out[i] = " ".join([*words[:-1], last[:cut] + "-"])
            out[i + 1] = last[cut:] + " " + out[i + 1]
    return out


def _font(name: str, path: Path) -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if name not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(name, str(path)))
    return name


@contextlib.contextmanager
def broken_tounicode(kind: str) -> Iterator[None]:
    """While a PDF is saved, its TrueType fonts get a wrong ("latin") or empty ("none") map."""
    from reportlab.pdfbase import ttfonts

    original = ttfonts.makeToUnicodeCMap

    def patched(fontname: str, subset: Sequence[int]) -> str:
        if kind == "latin":
            mapped = [ord(LEGACY_GREEK.get(chr(c), chr(c))) for c in subset]
            return str(original(fontname, mapped))
        if kind == "pua":  # an old polytonic font: accented letters in the private-use area
            return str(
                original(fontname, [0xE000 + c - 0x1F00 if c >= 0x1F00 else c for c in subset])
            )
        if kind == "mojibake":  # the map holds UTF-8 read as cp1253: two characters a glyph
            cmap = str(original(fontname, list(subset)))
            for c in subset:
                if c > 0x7F:
                    wrong = chr(c).encode("utf-8").decode("cp1253", errors="replace")
                    units = "".join(f"{ord(u):04X}" for u in wrong)
                    cmap = cmap.replace(f"> <{c:04X}>", f"> <{units}>")
            return cmap
        return str(original(fontname, [0] * len(subset)))

    ttfonts.makeToUnicodeCMap = patched
    try:
        yield
    finally:
        ttfonts.makeToUnicodeCMap = original


def scan_png(
    lines: Sequence[str], *, dpi: int = 300, degrade: int = 0, seed: int = 0, size: float = 11
) -> bytes:
    """A page image as a scanner makes it; degrade 1: grey cast, noise, slight blur, tilt."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    width, height = int(A4[0] / 72 * dpi), int(A4[1] / 72 * dpi)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(SERIF), int(size / 72 * dpi))
    y = int(72 / 72 * dpi)
    for line in lines:
        draw.text((int(60 / 72 * dpi), y), line, fill=0, font=font)
        y += int(size * 1.5 / 72 * dpi)
    if degrade:
        rng = np.random.default_rng(seed)
        image = image.rotate(0.4, resample=Image.Resampling.BICUBIC, fillcolor=255)
        image = image.filter(ImageFilter.GaussianBlur(0.6))
        noisy = np.asarray(image, dtype=np.int16) - 20 + rng.integers(-15, 15, (height, width))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG" if degrade else "PNG", quality=75)
    return buffer.getvalue()


def photo_jpeg(seed: int) -> bytes:
    """A photograph-like image: smooth shapes and noise, no text."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:330, 0:470]
    base = 120 + 60 * np.sin(x / 40 + seed) * np.cos(y / 30) + rng.normal(0, 20, (330, 470))
    rgb = np.dstack([base, base * 0.8 + 30, base * 0.6 + 50]).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _draw_lines(pdf: object, font: str, lines: Sequence[str], x: float, size: float) -> None:
    y = A4[1] - 72
    for line in lines:
        pdf.setFont(font, size)  # type: ignore[attr-defined]
        pdf.drawString(x, y, line)  # type: ignore[attr-defined]
        y -= size * 1.5


def make_pdf(path: Path, pages: Sequence[tuple[str, str]], *, broken: str | None = None) -> Path:
    """Pages of a kind: text, columns, figure, scan, scan-degraded, scan-header,
    invisible-ocr."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=True)
    font = _font("DejaVuSerif", SERIF)
    for n, (kind, text) in enumerate(pages):
        lines = wrap(text, 80)
        if kind == "text":
            _draw_lines(pdf, font, hyphenate(lines), 60, 11)
        elif kind == "figure":  # a born-digital page with a photograph under its text
            _draw_lines(pdf, font, lines, 60, 11)
            pdf.drawImage(ImageReader(io.BytesIO(photo_jpeg(n))), 60, 80, width=470, height=330)
        elif kind == "columns":
            pdf.setFont(font, 14)
            pdf.drawString(60, A4[1] - 50, COLUMN_HEADER)
            half = wrap(text, 38)
            mid = len(half) // 2
            for column, x in ((half[:mid], 60), (half[mid:], 310)):
                y = A4[1] - 90
                for line in column:
                    pdf.setFont(font, 10)
                    pdf.drawString(x, y, line)
                    y -= 15
            pdf.setFont(font, 9)
            pdf.drawCentredString(A4[0] / 2, 30, f"— {n + 1} —")
        else:
            degrade = 1 if kind == "scan-degraded" else 0
            image = scan_png(lines, degrade=degrade, seed=n)
            pdf.drawImage(ImageReader(io.BytesIO(image)), 0, 0, width=A4[0], height=A4[1])
            if kind == "scan-header":
                pdf.setFont(font, 8)
                pdf.drawString(60, A4[1] - 20, STAMP)
            if kind == "invisible-ocr":
                layer = pdf.beginText()
                layer.setTextRenderMode(3)
                layer.setFont(font, 11)
                layer.setTextOrigin(60, A4[1] - 72 - 9)
                layer.setLeading(16.5)
                for line in lines:
                    layer.textLine(line)
                pdf.drawText(layer)
        pdf.showPage()
    with broken_tounicode(broken) if broken else contextlib.nullcontext():
        pdf.save()
    return path


def chromium_pdf(path: Path, paragraphs: Sequence[str], *, columns: int = 1) -> Path | None:
    """A born-digital PDF as Chrome's "Save as PDF" makes it (Skia, Type0 fonts), justified,
    with soft hyphens in long words; None when Chromium is not installed."""
    import html
    import shutil
    import subprocess
    import tempfile

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        return None

    def shy(word: str) -> str:
        return (
            word[: len(word) // 2] + "\u00ad" + word[len(word) // 2 :] if len(word) >= 8 else word
        )

    body = "".join(f"<p>{html.escape(' '.join(shy(w) for w in p.split()))}</p>" for p in paragraphs)
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{font-family:"DejaVu Serif";'
        f"font-size:11pt;margin:2cm}} .c{{column-count:{columns};column-gap:1cm;"
        f'text-align:justify}}</style></head><body><div class="c">{body}</div></body></html>'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "page.html"
        source.write_text(page, encoding="utf-8")
        subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
             f"--user-data-dir={tmp}/profile", f"--print-to-pdf={path}", source.as_uri()],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
    return path


def _split(text: str, parts: int) -> list[str]:
    sentences = [s.strip() + "." for s in text.split(".") if s.strip()]
    size = -(-len(sentences) // parts)
    return [" ".join(sentences[i : i + size]) for i in range(0, len(sentences), size)]


def _truth(kind: str, text: str, index: int) -> str:
    """What a reader sees on the page (headers, stamps and page numbers included)."""
    if kind == "columns":
        return f"{COLUMN_HEADER}\n{text}\n— {index + 1} —"
    if kind == "scan-header":
        return f"{STAMP}\n{text}"
    return text


def build_set(root: Path) -> list[LabelledDoc]:
    """Write the labelled set under root; returns its documents with their expected routes."""
    specs: list[tuple[str, str, str, list[str], str | None]] = [
        ("greek-born-digital", "el", "text", _split(GREEK_TEXT, 2), None),
        ("greek-two-columns", "el", "columns", _split(GREEK_TEXT, 1), None),
        ("polytonic-born-digital", "grc", "text", _split(POLYTONIC_TEXT, 2), None),
        ("english-born-digital", "en", "text", _split(ENGLISH_TEXT, 2), None),
        ("english-two-columns", "en", "columns", _split(ENGLISH_TEXT, 1), None),
        ("greek-with-photo", "el", "figure", _split(GREEK_TEXT, 2), None),
        ("english-with-photo", "en", "figure", _split(ENGLISH_TEXT, 2), None),
        ("greek-scan", "el", "scan", _split(GREEK_TEXT, 2), None),
        ("greek-scan-degraded", "el", "scan-degraded", _split(GREEK_TEXT, 2), None),
        ("english-scan", "en", "scan", _split(ENGLISH_TEXT, 2), None),
        ("english-scan-degraded", "en", "scan-degraded", _split(ENGLISH_TEXT, 2), None),
        ("polytonic-scan", "grc", "scan", _split(POLYTONIC_TEXT, 2), None),
        ("english-scan-ocr-layer", "en", "invisible-ocr", _split(ENGLISH_TEXT, 2), None),
        ("greek-scan-stamped", "el", "scan-header", _split(GREEK_TEXT, 2), None),
        ("greek-scan-ocr-layer", "el", "invisible-ocr", _split(GREEK_TEXT, 2), None),
        ("greek-legacy-font", "el", "text", _split(GREEK_TEXT, 2), "latin"),
        ("greek-no-unicode-map", "el", "text", _split(GREEK_TEXT, 2), "none"),
        ("polytonic-no-unicode-map", "grc", "text", _split(POLYTONIC_TEXT, 2), "none"),
        ("polytonic-private-use-map", "grc", "text", _split(POLYTONIC_TEXT, 2), "pua"),
        ("greek-mojibake-map", "el", "text", _split(GREEK_TEXT, 2), "mojibake"),
    ]
    docs: list[LabelledDoc] = []
    for name, language, kind, texts, broken in specs:
        path = make_pdf(root / f"{name}.pdf", [(kind, t) for t in texts], broken=broken)
        good = kind in ("text", "columns", "figure") and broken is None
        label = f"{kind}+{broken}-tounicode" if broken else kind
        pages = tuple(
            LabelledPage(label, "text" if good else "ocr", _truth(kind, t, n))
            for n, t in enumerate(texts)
        )
        docs.append(LabelledDoc(name, path, pages, language))
    # Real PDFs of another producer (Chromium), when it is installed: born-digital, one page.
    for name, language, text, columns in (
        ("greek-chromium-columns", "el", GREEK_TEXT, 2),
        ("english-chromium", "en", ENGLISH_TEXT, 1),
    ):
        made = chromium_pdf(root / f"{name}.pdf", _split(text, 2), columns=columns)
        if made is not None:
            page = LabelledPage(f"chromium-{columns}-column", "text", "\n".join(_split(text, 2)))
            docs.append(LabelledDoc(name, made, (page,), language))
    return docs
