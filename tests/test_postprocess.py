"""Tests for the DeepSeek-OCR post-processor (example outputs written for these tests)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrfleet.deepseek.postprocess import (
    Block,
    Figure,
    clean_page,
    parse_blocks,
    pixel_box,
)

SPECIAL_TOKENS = ("<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", "<image>")


def link(figure: Figure) -> str:
    return f"images/3_{figure.index - 1}.jpg"


WELL_FORMED = (
    "<|ref|>title<|/ref|><|det|>[[98, 40, 902, 71]]<|/det|>\n"
    "# Επίδραση της θερμοκρασίας στην ανάπτυξη\n\n"
    "<|ref|>sub_title<|/ref|><|det|>[[101, 87, 323, 101]]<|/det|>\n"
    "## Μέθοδοι\n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 115, 485, 205]]<|/det|>\n"
    "Η μελέτη έγινε σε δύο φάσεις με δείγμα \\(n = 42\\) φυτών \\((P < 0.05)\\).\n\n"
    "<|ref|>image<|/ref|><|det|>[[100, 245, 480, 654]]<|/det|>\n"
    "<|ref|>image_caption<|/ref|><|det|>[[100, 664, 485, 693]]<|/det|>\n"
    "<center>Σχ. 1: Μέσο ύψος ανά εβδομάδα</center>\n\n"
    "<|ref|>table<|/ref|><|det|>[[510, 115, 900, 300], [100, 720, 480, 800]]<|/det|>\n"
    '<table><tr><td>Ομάδα</td><td colspan="2">Ύψος (cm)</td></tr>'
    "<tr><td>Α</td><td>12.1</td><td>13.4<br>(±0.2)</td></tr></table>\n\n"
    "<|ref|>equation<|/ref|><|det|>[[510, 320, 900, 360]]<|/det|>\n"
    "\\[\nh(t) \\coloneqq h_0 e^{k t} \\quad (1)\n\\]\n"
)

WELL_FORMED_BODY = (
    "# Επίδραση της θερμοκρασίας στην ανάπτυξη\n\n"
    "## Μέθοδοι\n\n"
    "Η μελέτη έγινε σε δύο φάσεις με δείγμα \\(n = 42\\) φυτών \\((P < 0.05)\\).\n\n"
    "{figure}"
    "<center>Σχ. 1: Μέσο ύψος ανά εβδομάδα</center>\n\n"
    '<table><tr><td>Ομάδα</td><td colspan="2">Ύψος (cm)</td></tr>'
    "<tr><td>Α</td><td>12.1</td><td>13.4<br>(±0.2)</td></tr></table>\n\n"
    "\\[\nh(t) := h_0 e^{k t} \\quad (1)\n\\]"
)


def test_well_formed_page_with_links() -> None:
    page = clean_page(WELL_FORMED, link)
    assert page.markdown == WELL_FORMED_BODY.replace("{figure}", "![](images/3_0.jpg)\n\n")
    assert page.figures == (
        Figure(index=1, box=(100, 245, 480, 654), caption="Σχ. 1: Μέσο ύψος ανά εβδομάδα"),
    )


def test_well_formed_page_without_links_leaves_no_image_text() -> None:
    page = clean_page(WELL_FORMED)
    assert page.markdown == WELL_FORMED_BODY.replace("{figure}", "")
    assert [figure.box for figure in page.figures] == [(100, 245, 480, 654)]


def test_parse_blocks_well_formed() -> None:
    blocks = parse_blocks(WELL_FORMED)
    assert [block.label for block in blocks] == [
        "title",
        "sub_title",
        "text",
        "image",
        "image_caption",
        "table",
        "equation",
    ]
    assert all(block.well_formed for block in blocks)
    assert blocks[1] == Block("sub_title", ((101, 87, 323, 101),), "## Μέθοδοι", True)
    assert blocks[3].text == ""
    assert blocks[5].boxes == ((510, 115, 900, 300), (100, 720, 480, 800))


def test_caption_before_image_and_several_figures() -> None:
    raw = (
        "<|ref|>image_caption<|/ref|><|det|>[[10, 10, 500, 40]]<|/det|>\nFigure 1. Before.\n\n"
        "<|ref|>image<|/ref|><|det|>[[10, 50, 500, 400]]<|/det|>\n\n"
        "<|ref|>image<|/ref|><|det|>[[10, 450, 500, 800]]<|/det|>\n"
    )
    page = clean_page(raw, link)
    assert page.markdown == "Figure 1. Before.\n\n![](images/3_0.jpg)\n\n![](images/3_1.jpg)"
    assert page.figures == (
        Figure(1, (10, 50, 500, 400), "Figure 1. Before."),
        Figure(2, (10, 450, 500, 800), None),
    )


def test_untagged_leading_text_is_kept() -> None:
    raw = "Running head: results\n\n<|ref|>text<|/ref|><|det|>[[1, 2, 300, 40]]<|/det|>\nBody."
    blocks = parse_blocks(raw)
    assert blocks[0] == Block(None, (), "Running head: results", True)
    assert clean_page(raw).markdown == "Running head: results\n\nBody."


def _one_block(tag: str, content: str = "Body text.") -> str:
    return f"<|ref|>text<|/ref|><|det|>[[1, 2, 300, 40]]<|/det|>\nBefore.\n\n{tag}\n{content}\n"


@pytest.mark.parametrize(
    ("tag", "boxes"),
    [
        ("<|ref|>text<|/ref|><|det|>[[-1, 5, 20]]<|/det|>", ()),
        ("<|ref|>text<|/ref|><|det|>[J]<|/det|>", ()),
        ("<|ref|>text<|/ref|><|det|>[[12, 30", ()),
        ("<|ref|>text<|/ref|><|det|><|/det|>", ()),
        ("<|ref|>text<|/ref|><|det|>", ()),
        ("<|ref|>text<|/ref|>", ()),
        ("<|ref|>text<|/ref|><|det|>[[10, 20, 300, 400]]", ((10, 20, 300, 400),)),
        ("<|ref|>text<|/ref|><|det|>[[10, 20, 300, 400], [J]]<|/det|>", ((10, 20, 300, 400),)),
        ("<|ref|>text<|/ref|><|det|>[10, 20, 300, 400]<|/det|>", ((10, 20, 300, 400),)),
        ("<|ref|>text<|/ref|><|det|>[[500, 20, 500, 400]]<|/det|>", ()),
        ("<|ref|>text<|det|>[[10, 20, 300, 400]]<|/det|>", ((10, 20, 300, 400),)),
        ("<|ref|><|/ref|><|det|>[[10, 20, 300, 400]]<|/det|>", ((10, 20, 300, 400),)),
        ("<|ref|>text<|/ref|><|det|>[[1" + "0" * 5000 + ", 2, 3, 4]]<|/det|>", ()),
    ],
)
def test_malformed_tags_keep_content_and_drop_tag(tag: str, boxes: tuple[object, ...]) -> None:
    raw = _one_block(tag)
    assert clean_page(raw).markdown == "Before.\n\nBody text."
    block = parse_blocks(raw)[1]
    assert not block.well_formed
    assert block.boxes == boxes
    assert block.text == "Body text."


def test_boxes_are_clamped() -> None:
    raw = "<|ref|>image<|/ref|><|det|>[[-5, 10, 1005, 20.6]]<|/det|>"
    block = parse_blocks(raw)[0]
    assert block.boxes == ((0, 10, 999, 21),)
    assert block.well_formed
    assert clean_page(raw, link).figures == (Figure(1, (0, 10, 999, 21)),)


def test_garbage_label_with_content_is_dropped() -> None:
    raw = "<|ref|>txet<|/ref|><|det|>[[1, 2, 300, 40]]<|/det|>\nReal text.\n"
    assert clean_page(raw).markdown == "Real text."


def test_text_inside_ref_tags_is_kept_as_content() -> None:
    # The `OCR this image` prompt: all text inside ref tags, nothing after them.
    raw = (
        "<|ref|>Annual Report 2019<|/ref|><|det|>[[100, 50, 600, 80]]<|/det|>\n"
        "<|ref|>Revenue grew by 12 percent.<|/ref|><|det|>[[100, 90, 900, 120]]<|/det|>\n"
        "<|ref|>Συμπεράσματα<|/ref|><|det|>[[100, 130, 300, 150]]<|/det|>\n"
        "<|ref|>sub_title<|/ref|><|det|>[[100, 160, 300, 180]]<|/det|>\n"
    )
    assert clean_page(raw).markdown == (
        "Annual Report 2019\n\nRevenue grew by 12 percent.\n\nΣυμπεράσματα"
    )


def test_text_inside_ref_with_content_after_keeps_only_content() -> None:
    raw = "<|ref|>Some garbled label<|/ref|><|det|>[[1, 2, 300, 40]]<|/det|>\nThe content.\n"
    assert clean_page(raw).markdown == "The content."


@pytest.mark.parametrize(
    "tail",
    [
        "<|ref|>text<|/ref|><|det|>[[200, 910",
        "<|ref|>text<|/ref|><|det|>[[200, 910, 300",
        "<|ref|>tex",
        "<|ref|>",
        "<|re",
        "<|",
        "<",
        "<|ref|>text<|/re",
        "<|ref|>text<|/ref|><|de",
        "<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/de",
        "<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>",
        "<|ref|>Long text that was cut",
        "<｜end▁of▁sentence｜>",
        "<｜end▁of",
    ],
)
def test_truncated_trailing_tag_is_removed(tail: str) -> None:
    raw = "<|ref|>text<|/ref|><|det|>[[1, 2, 300, 40]]<|/det|>\nLast full line.\n\n" + tail
    page = clean_page(raw, link)
    assert page.markdown == "Last full line."
    assert page.figures == ()


def test_truncated_image_tag_gives_no_figure() -> None:
    raw = "Text.\n\n<|ref|>image<|/ref|><|det|>[[200, 910"
    assert clean_page(raw, link) == clean_page("Text.", link)


def test_stray_special_tokens_are_removed() -> None:
    raw = (
        "<image>\n<|grounding|>Intro <|/ref|>line.<|/det|>\n\n"
        "<|ref|>text<|/ref|><|det|>[[1, 2, 300, 40]]<|/det|>\nA<|det|>[[5, 6, 7, 8]]<|/det|> B\n"
        "C<｜end▁of▁sentence｜>"
    )
    assert clean_page(raw).markdown == "Intro line.\n\nA\n\nB\nC"


def test_nested_token_fragments_do_not_survive() -> None:
    assert clean_page("x <|re<|/det|>f|> y").markdown == "x  y"


def test_image_block_without_box_yields_nothing() -> None:
    raw = "Before.\n\n<|ref|>image<|/ref|><|det|>[[1, 2, 3]]<|/det|>\n\nAfter."
    page = clean_page(raw, link)
    assert page.markdown == "Before.\n\nAfter."
    assert page.figures == ()


def test_coloneqq_and_eqqcolon() -> None:
    raw = "\\[ a \\coloneqq b \\]\n\n\\[ c \\eqqcolon d \\]"
    assert clean_page(raw).markdown == "\\[ a := b \\]\n\n\\[ c =: d \\]"


def test_whitespace_normalisation() -> None:
    raw = (
        "\n\nFirst   \nline two\t\n\n\n\n\nSecond\n\n"
        "<|ref|>text<|/ref|><|det|>[[1, 2, 300, 40]]<|/det|>\n\n\n   \nThird  \n\n\n"
    )
    assert clean_page(raw).markdown == "First\nline two\n\nSecond\n\nThird"


def test_free_ocr_output_is_kept() -> None:
    raw = "# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n\\(x^2\\) and <center>c</center>"
    page = clean_page(raw, link)
    assert page.markdown == raw
    assert page.figures == ()


def test_crlf_line_endings() -> None:
    raw = "<|ref|>text<|/ref|><|det|>[[1, 2, 300, 40]]<|/det|>\r\nOne\r\n\r\n\r\n\r\nTwo\r\n"
    assert clean_page(raw).markdown == "One\n\nTwo"


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        ((0, 0, 999, 999), (1190, 1684), (0, 0, 1190, 1684)),
        ((100, 245, 480, 654), (1000, 2000), (100, 490, 480, 1309)),
        ((500, 500, 500, 500), (100, 100), (50, 50, 51, 51)),
        ((999, 999, 999, 999), (100, 100), (99, 99, 100, 100)),
        ((0, 0, 0, 0), (100, 100), (0, 0, 1, 1)),
        ((480, 10, 100, 20), (999, 999), (100, 10, 480, 20)),
        ((-50, 0, 2000, 999), (10, 10), (0, 0, 10, 10)),
    ],
)
def test_pixel_box(
    box: tuple[int, int, int, int], size: tuple[int, int], expected: tuple[int, int, int, int]
) -> None:
    assert pixel_box(box, *size) == expected


@given(
    st.tuples(*[st.integers(0, 999)] * 4),
    st.integers(1, 5000),
    st.integers(1, 5000),
)
def test_pixel_box_is_inside_and_not_empty(
    box: tuple[int, int, int, int], width: int, height: int
) -> None:
    x1, y1, x2, y2 = pixel_box(box, width, height)
    assert 0 <= x1 < x2 <= width
    assert 0 <= y1 < y2 <= height


FRAGMENTS = [
    "<|ref|>",
    "<|/ref|>",
    "<|det|>",
    "<|/det|>",
    "<|grounding|>",
    "<image>",
    "<｜end▁of▁sentence｜>",
    "<|",
    "|>",
    "<",
    "text",
    "image",
    "image_caption",
    "Ελληνικά κείμενο",
    "[[",
    "]]",
    "[",
    "]",
    ", ",
    "-1",
    "100",
    "999",
    "1005",
    "J",
    "\n",
    "\n\n\n",
    " ",
    "<table><tr><td>",
    "\\coloneqq",
    "\\[",
]


def _check_clean(raw: str) -> None:
    page = clean_page(raw, link)
    assert not any(token in page.markdown for token in SPECIAL_TOKENS)
    assert "<｜end▁of▁sentence｜>" not in page.markdown
    assert page.markdown == page.markdown.strip()
    assert "\n\n\n" not in page.markdown
    assert [figure.index for figure in page.figures] == list(range(1, len(page.figures) + 1))
    for figure in page.figures:
        x1, y1, x2, y2 = figure.box
        assert 0 <= x1 < x2 <= 999 and 0 <= y1 < y2 <= 999
    for block in parse_blocks(raw):
        assert all(0 <= x1 < x2 <= 999 and 0 <= y1 < y2 <= 999 for x1, y1, x2, y2 in block.boxes)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(raw: str) -> None:
    _check_clean(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=40).map("".join))
def test_never_raises_on_tag_fragments(raw: str) -> None:
    _check_clean(raw)


HEADER = "<|ref|>table<|/ref|><|det|>[[100, 200, 900, 800]]<|/det|>\n"


@pytest.mark.parametrize(
    "raw",
    [
        HEADER + "<table><tr>" + "<td>0.00</td>" * 2700 + "<|det|>[[200, 910",
        HEADER + "και η μελέτη έδειξε ότι " * 1500,
        HEADER + "\\begin{pmatrix} 1 & 0 " * 1800,
        "<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>\nA\n" * 700,
        "<|ref|>t" * 2500 + "<|det|>[[1" * 2500,
        "<|ref|>" + "x" * 35000,
        "<|det|>" + "[1, " * 9000,
    ],
)
def test_long_loops_are_processed_quickly(raw: str) -> None:
    start = time.perf_counter()
    page = clean_page(raw, link)
    parse_blocks(raw)
    assert time.perf_counter() - start < 2.0
    assert "<|" not in page.markdown


def test_loop_output_keeps_the_text() -> None:
    raw = HEADER + "<table><tr>" + "<td>0.00</td>" * 2700 + "<|det|>[[200, 910"
    assert clean_page(raw).markdown == "<table><tr>" + "<td>0.00</td>" * 2700
