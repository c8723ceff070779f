"""Tests for per-page quality flags (example outputs written for these tests)."""

from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrfleet.quality import FLAGS, QualityReport, assess

GREEK_PAGE = (
    "# Επίδραση της θερμοκρασίας στην ανάπτυξη\n\n"
    "## Μέθοδοι\n\n"
    "Η μελέτη έγινε σε δύο φάσεις. Στην πρώτη φάση καταγράφηκε το ύψος σαράντα δύο φυτών "
    "κάθε εβδομάδα, ενώ στη δεύτερη εξετάστηκε η επίδραση της υγρασίας \\((P < 0.05)\\).\n\n"
    '<table><tr><td>Ομάδα</td><td colspan="2">Ύψος (cm)</td></tr>'
    "<tr><td>Α</td><td>12.1</td><td>13.4</td></tr></table>\n\n"
    "![](images/0_0.jpg)\n\n"
    "\\[\nh(t) = h_0 e^{k t} \\quad (1)\n\\]\n\n"
    "Τα αποτελέσματα δείχνουν ότι η αύξηση της θερμοκρασίας επιταχύνει την ανάπτυξη "
    "μέχρι ένα όριο, πέρα από το οποίο η ανάπτυξη σταματά."
)

ENGLISH_PAGE = (
    "# Effects of temperature on growth\n\n"
    "The study was carried out in two phases. In the first, the height of forty-two plants "
    "was recorded every week; in the second, the effect of humidity was examined. Results "
    "show that warmer conditions speed up growth up to a limit, beyond which it stops.\n\n"
    "| Group | Height (cm) |\n|---|---|\n| A | 12.1 |\n| B | 13.4 |"
)

GROUNDED_RAW = (
    "<|ref|>title<|/ref|><|det|>[[98, 40, 902, 71]]<|/det|>\n"
    "# Effects of temperature on growth\n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 115, 485, 205]]<|/det|>\n"
    "The study was carried out in two phases. In the first, the height of forty-two plants "
    "was recorded every week; in the second, the effect of humidity was examined. Results "
    "show that warmer conditions speed up growth up to a limit, beyond which it stops.\n"
)

TAG_HEAVY_RAW = "".join(
    f"<|ref|>Line {i} of the page<|/ref|><|det|>[[100, {i * 20}, 900, {i * 20 + 15}]]<|/det|>\n"
    for i in range(1, 30)
)


def test_clean_greek_page() -> None:
    report = assess(GREEK_PAGE, finish_reason="stop")
    assert report.flags == ()
    assert report.metrics["greek_share"] > 0.95
    assert report.metrics["latin_share"] < 0.05
    assert report.metrics["chars"] == len(GREEK_PAGE)
    assert report.metrics["repeated_ngram_ratio"] == 0.0
    assert report.metrics["longest_repeat_run"] < 10
    assert "tag_char_share" not in report.metrics


def test_clean_english_page() -> None:
    report = assess(ENGLISH_PAGE, finish_reason="stop", raw=GROUNDED_RAW)
    assert report.flags == ()
    assert report.metrics["latin_share"] == 1.0
    assert report.metrics["other_share"] == 0.0
    assert 0.0 < report.metrics["tag_char_share"] < 0.3


@pytest.mark.parametrize(
    "text",
    [
        "Η μελέτη έγινε σε δύο φάσεις. " + "και η μελέτη έδειξε ότι " * 200,
        "<table><tr><td>Group</td></tr><tr>" + "<td>12.1 cm</td>" * 300,
        "\\[\n" + "\\begin{pmatrix} 1 & 0 " * 120,
        "Intro.\n" + "Figure 3. Results of the second phase\n" * 40,
        "Summary " + "ab" * 12 + " end",
    ],
)
def test_looping_output(text: str) -> None:
    report = assess(text, finish_reason="length")
    assert {"no_eos", "repetition_loop"} <= set(report.flags)


def test_loop_metrics() -> None:
    text = "Η μελέτη έγινε σε δύο φάσεις. " + "και η μελέτη έδειξε ότι " * 200
    metrics = assess(text, finish_reason="stop").metrics
    assert metrics["repeated_ngram_ratio"] > 0.9
    assert metrics["longest_repeat_run"] >= 199
    cells = assess("<tr>" + "<td>7</td>" * 50 + "</tr>", finish_reason="stop").metrics
    assert cells["longest_repeat_run"] == 50


def test_legitimate_repetition_is_not_a_loop() -> None:
    empty_cells = "<table>" + ("<tr><td>Name</td>" + "<td></td>" * 12 + "</tr>") * 3 + "</table>"
    leaders = "Contents\n\nIntroduction " + "." * 60 + " 1\nMethods " + "." * 64 + " 7"
    rule = "Before\n\n" + "-" * 80 + "\n\nAfter the rule, plenty of ordinary words follow here."
    for text in (empty_cells, leaders, rule, GREEK_PAGE + "\n\n" + ENGLISH_PAGE):
        assert "repetition_loop" not in assess(text, finish_reason="stop").flags


def test_phrase_repeated_few_times_is_not_a_loop() -> None:
    text = ENGLISH_PAGE + " Yes, yes, yes." + " ha" * 5
    assert "repetition_loop" not in assess(text, finish_reason="stop").flags


@pytest.mark.parametrize("text", ["", "   \n\n\t "])
def test_empty_output(text: str) -> None:
    report = assess(text, finish_reason="stop", raw=text)
    assert report.flags == ("empty_output",)
    assert report.metrics["letters"] == 0
    assert report.metrics["greek_share"] == 0.0
    assert report.metrics["longest_repeat_run"] == 0


def test_no_eos() -> None:
    assert assess(ENGLISH_PAGE, finish_reason="length").flags == ("no_eos",)
    assert assess(ENGLISH_PAGE, finish_reason=None).flags == ()


def test_tag_heavy_raw() -> None:
    text = "\n\n".join(f"Line {i} of the page" for i in range(1, 30))
    report = assess(text, finish_reason="stop", raw=TAG_HEAVY_RAW)
    assert "tag_heavy" in report.flags
    assert report.metrics["tag_char_share"] > 0.9
    # Without raw the share is unknown, so never flagged.
    assert "tag_heavy" not in assess(text, finish_reason="stop").flags


def test_unclosed_tags_count_as_tag_characters() -> None:
    raw = "<|ref|>text<|/ref|><|det|>[[12, 30\nBody"
    assert assess("Body", finish_reason="length", raw=raw).metrics["tag_char_share"] == round(
        (len(raw) - len("\nBody")) / len(raw), 4
    )


def test_mixed_scripts() -> None:
    text = (
        "Η μελέτη έγινε σε δύο φάσεις και η ανάπτυξη σταματά. "
        "The study was carried out in two phases and growth stops. "
        "Исследование проводилось в две фазы."
    )
    report = assess(text, finish_reason="stop")
    assert report.flags == ("mixed_script",)
    shares = [report.metrics[key] for key in ("greek_share", "latin_share", "other_share")]
    assert all(share > 0.2 for share in shares)
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)


def test_markup_does_not_make_greek_look_latin() -> None:
    table = "<table>" + "<tr><td>Α</td><td>12.1</td><td>\\(\\alpha\\)</td></tr>" * 30 + "</table>"
    text = "Πίνακας 2: Μετρήσεις ύψους των φυτών ανά εβδομάδα και ομάδα.\n\n" + table
    report = assess(text, finish_reason="stop")
    assert "mixed_script" not in report.flags
    assert report.metrics["greek_share"] == 1.0


def test_low_text() -> None:
    report = assess("12.1  13.4\n\n![](images/0_0.jpg)", finish_reason="stop")
    assert report.flags == ("low_text",)


def test_report_is_json_serialisable_and_flags_are_sorted_vocabulary() -> None:
    report = assess("x" * 40, finish_reason="length", raw="<|ref|>text<|/ref|>" + "x" * 40)
    assert isinstance(report, QualityReport)
    assert list(report.flags) == sorted(report.flags)
    assert set(report.flags) <= set(FLAGS)
    json.dumps({"flags": report.flags, "metrics": report.metrics})


def test_ngram_ratio_needs_five_words() -> None:
    assert assess("a a a a", finish_reason="stop").metrics["repeated_ngram_ratio"] == 0.0
    ratio = assess("a a a a a a", finish_reason="stop").metrics["repeated_ngram_ratio"]
    assert ratio == 0.5


def _pseudo_greek(size: int) -> str:
    """Non-repeating Greek-looking text: random words of random letters."""
    rng = random.Random(7)
    words = (
        "".join(rng.choices("αβγδεζηθικλμνξοπρστυφχψω", k=rng.randint(1, 11))) for _ in range(size)
    )
    return " ".join(words)[:size]


@pytest.mark.parametrize(
    "text",
    [
        "και η μελέτη έδειξε ότι " * 1500,
        "<td>0.00</td>" * 2700,
        (GREEK_PAGE + "\n") * 70,
        _pseudo_greek(35000),
    ],
)
def test_fast_on_35kb(text: str) -> None:
    assess(text, finish_reason="stop", raw=text)  # warm-up: compiled regexes, caches
    start = time.perf_counter()
    assess(text, finish_reason="length", raw=text)
    # A guard against quadratic blowup on a shared CI machine, not a benchmark.
    assert time.perf_counter() - start < 0.5


@settings(max_examples=200, deadline=None)
@given(st.text(), st.none() | st.text(), st.sampled_from([None, "stop", "length", "abort"]))
def test_never_raises(text: str, raw: str | None, finish_reason: str | None) -> None:
    report = assess(text, finish_reason=finish_reason, raw=raw)
    assert set(report.flags) <= set(FLAGS)
    json.dumps(report.metrics)
