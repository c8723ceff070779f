"""The per-page verdict: scores from the text layer, the ink and the page objects."""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium
import pytest

from ocrfleet.route import PageFeatures, route_rendered, verdict
from ocrfleet.testing.routeset import GREEK_TEXT, LEGACY_GREEK, LabelledDoc, build_set
from ocrfleet.textscores import greek_badness, score_text


def test_greek_badness_separates_greek_from_mangled_greek() -> None:
    assert greek_badness(GREEK_TEXT) < 20
    # UTF-8 Greek decoded as cp1253 turns into Ξ/Ο pairs: far over glossAPI's 60.
    mangled = GREEK_TEXT.encode("utf-8").decode("cp1253", errors="replace")
    assert greek_badness(mangled) > 60
    assert score_text(mangled).mojibake > 0.05
    assert greek_badness("") == 0.0 and greek_badness("plain English text") == 0.0


def test_latin_gibberish_has_no_function_words() -> None:
    legacy = "".join(LEGACY_GREEK.get(ch, ch) for ch in GREEK_TEXT)
    english = "The archive of the harbour is kept in the town hall and it is open to all."
    assert score_text(legacy).latin_stopword_share < 0.08
    assert score_text(english * 3).latin_stopword_share > 0.3


def _features(**changes: object) -> PageFeatures:
    base = {
        "chars": 900,
        "ink": 0.02,
        "text_ink_share": 0.97,
        "image_cover": 0.0,
        "invisible_share": 0.0,
        "text": score_text(GREEK_TEXT),
    }
    base.update(changes)
    return PageFeatures(**base)  # type: ignore[arg-type]


def test_verdict_reasons() -> None:
    assert verdict(_features()) == ("text", [])
    assert verdict(_features(chars=0)) == ("ocr", ["no_text_layer"])
    # No text layer at all: OCR, however little ink (the blank test has let the page through).
    assert verdict(_features(chars=0, ink=0.0)) == ("ocr", ["no_text_layer"])
    assert verdict(_features(chars=0, ink=0.0005)) == ("ocr", ["no_text_layer"])
    # A near-empty born-digital page (a page number in its text layer) stays text.
    assert verdict(_features(chars=2, ink=0.0001)) == ("text", [])
    assert verdict(_features(invisible_share=0.9))[1] == ["invisible_text"]
    assert verdict(_features(image_cover=0.95, text_ink_share=0.1))[1] == ["ink_not_text"]
    pua = score_text("\ue000\ue001\ue002 " * 50 + GREEK_TEXT[:100])
    assert "bad_chars" in verdict(_features(text=pua))[1]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> list[LabelledDoc]:
    return build_set(tmp_path_factory.mktemp("routeset"))


def test_labelled_set_is_routed_right(labelled: list[LabelledDoc]) -> None:
    wrong = []
    for doc in labelled:
        pdf = pdfium.PdfDocument(str(doc.path))
        for index, expected in enumerate(doc.pages):
            page = pdf[index]
            scale = 100 / 72
            route = route_rendered(page, page.render(scale=scale).to_numpy(), scale)
            if route.route != expected.route:
                wrong.append((doc.name, index + 1, route.route, route.reasons))
            assert "\ufffe" not in route.text and "\u00ad" not in route.text
            page.close()
        pdf.close()
    assert wrong == []


def test_page_record_holds_verdict_and_scores(labelled: list[LabelledDoc]) -> None:
    doc = next(d for d in labelled if d.name == "greek-scan-ocr-layer")
    pdf = pdfium.PdfDocument(str(doc.path))
    page = pdf[0]
    record = route_rendered(page, page.render(scale=1.0).to_numpy(), 1.0).record()
    page.close()
    pdf.close()
    assert record["route"] == "ocr" and record["route_reasons"] == ["invisible_text"]
    assert record["route_scores"]["invisible_share"] == 1.0
    assert {"chars", "ink", "greek_badness", "bad_chars", "latin_stopword_share"} <= set(
        record["route_scores"]
    )


def test_legacy_font_text_is_latin(labelled: list[LabelledDoc]) -> None:
    doc = next(d for d in labelled if d.name == "greek-legacy-font")
    pdf = pdfium.PdfDocument(str(doc.path))
    page = pdf[0]
    route = route_rendered(page, page.render(scale=1.0).to_numpy(), 1.0)
    page.close()
    pdf.close()
    assert route.text.startswith("H istoria") and route.reasons == ("latin_gibberish",)


def test_a_page_the_router_cannot_analyse_goes_to_ocr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text layer that raises while being analysed costs the page its text route, not the
    page itself: it is rendered and sent to OCR with the reason."""
    from ocrfleet.page import RenderRequest, RenderSettings
    from ocrfleet.render import DocumentCache, render_page
    from ocrfleet.testing.routeset import make_pdf

    path = make_pdf(tmp_path / "t.pdf", [("text", GREEK_TEXT)])
    settings = RenderSettings(dpi=72, want_text=True, route=True)
    docs = DocumentCache()
    good = render_page(docs, RenderRequest("d", str(path), 1), settings)
    assert good.route is not None and good.route.route == "text"

    def explode(*_: object, **__: object) -> None:
        raise ValueError("bad text object")

    monkeypatch.setattr("ocrfleet.route.route_rendered", explode)
    try:
        page = render_page(docs, RenderRequest("d", str(path), 1, source="t.pdf"), settings)
    finally:
        docs.close()
    assert page.route is not None and page.route.route == "ocr"
    assert page.route.reasons == ("route_error: ValueError: bad text object",)


def test_a_page_from_the_image_cache_gets_the_same_verdict(tmp_path: Path) -> None:
    from ocrfleet.page import RenderRequest, RenderSettings
    from ocrfleet.render import DocumentCache, render_page
    from ocrfleet.testing.routeset import make_pdf

    path = make_pdf(tmp_path / "s.pdf", [("scan-header", GREEK_TEXT[:300])])
    settings = RenderSettings(dpi=72, want_text=True, route=True, cache_dir=tmp_path / "cache")
    docs = DocumentCache()
    try:
        first = render_page(docs, RenderRequest("d", str(path), 1), settings)
        again = render_page(docs, RenderRequest("d", str(path), 1), settings)
    finally:
        docs.close()
    assert again.from_cache and not first.from_cache
    assert first.route is not None and again.route is not None
    assert again.route.route == first.route.route == "ocr"
    assert again.route.reasons == first.route.reasons == ("ink_not_text",)
    assert again.text_layer == first.text_layer == "Downloaded from the digital archive"


def _faint_scan(path: Path, lines: int, fill: tuple[int, int, int]) -> Path:
    """An image-only page of `lines` lines of text in `fill` (grey type, one heading)."""
    import io

    from PIL import Image, ImageDraw, ImageFont
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    from ocrfleet.testing.samples import FONT_PATH

    image = Image.new("RGB", (827, 1169), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT_PATH), 20)
    for n in range(lines):
        draw.text(
            (70, 90 + 32 * n), f"Κεφάλαιο τρίτο, γραμμή {n} — Chapter Three", fill=fill, font=font
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.drawImage(ImageReader(io.BytesIO(buffer.getvalue())), 0, 0, width=A4[0], height=A4[1])
    pdf.save()
    return path


@pytest.mark.parametrize(("lines", "fill"), [(30, (175, 175, 175)), (1, (0, 0, 0))])
def test_faint_or_sparse_scans_go_to_ocr(
    tmp_path: Path, lines: int, fill: tuple[int, int, int]
) -> None:
    pdf = pdfium.PdfDocument(str(_faint_scan(tmp_path / "scan.pdf", lines, fill)))
    page = pdf[0]
    scale = 144 / 72
    route = route_rendered(page, page.render(scale=scale).to_numpy(), scale)
    assert route.route == "ocr", route.reasons
    page.close()
    pdf.close()
