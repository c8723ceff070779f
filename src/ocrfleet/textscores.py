"""Scores of a text layer's plausibility, from its text alone (no PDF, no image).

`greek_badness` follows the Greek corpus team's published score (eellak/glossAPI, branch
`development`, `rust/glossapi_rs_noise/src/noise_metrics.rs`): per 1000 Greek letters, vowel and
consonant runs, doubled letters, non-final sigma at a word's end, impossible letter pairs, short
and over-long words. glossAPI sends a document to OCR above 60; we apply it per page.

`latin_stopword_share` catches what that score cannot see: a font whose Unicode map says Latin
letters while the glyphs are Greek ("H melevth ths ellhnikhs"), the classic legacy Greek font.
Real Latin-script prose in the languages of the corpus has a third or more of its words in a
short function-word list; transliterated Greek has almost none.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

GREEK_VOWELS = frozenset("αεηιουωάέήίόύώϊϋΐΰ")
# Doubling these is normal Greek (glossAPI's list); any other doubled letter counts.
NORMAL_DOUBLES = frozenset("λμνρστκπγ")
INVALID_BIGRAMS = frozenset(
    ["κξ", "γξ", "χξ", "πψ", "βψ", "φψ", "ρλ", "μρ", "γβ", "δτ", "τδ", "βπ", "πβ"]
)
SHORT_BASELINE = 26.0  # short words per 1000 Greek letters in clean text (glossAPI)
# Function words of the Latin-script languages a Greek/English corpus meets.
LATIN_STOPWORDS = frozenset(
    """
    a an and are as at be by for from has have in is it its of on or that the this to was were
    which with not but can will their they we you he she his her our all also more
    de la le les et des du un une est en que qui dans pour par sur au aux pas
    der die das und ist nicht ein eine mit von zu den dem auf für im sich auch
    el los las y del por con para una es se al lo como más
    il di che per non della gli sono
    do da em os as um uma com não
    """.split()  # noqa: SIM905
)
# UTF-8 read as Latin-1/cp1252, or as cp1253 (Greek): tell-tale pairs.
_CP1252_HIGH = (
    "\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013-\u203a\u20ac\u2122"
)
_CP1253_HIGH = "\u0080-\u00bf\u0384-\u038f\u2013-\u203a\u20ac\u2122"
MOJIBAKE = re.compile(f"[ÃÂÎÏ][{_CP1252_HIGH}]|[ΞΟ][{_CP1253_HIGH}]")
GREEK_WORD = re.compile(r"[\u0370-\u03ff\u1f00-\u1fff]+")
LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")


@dataclass(frozen=True)
class TextScores:
    letters: int  # letters of any script
    greek_letters: int
    latin_letters: int
    bad_chars: float  # share of replacement, private-use, control and unassigned characters
    mojibake: float  # share of characters in mojibake pairs
    greek_badness: float
    latin_words: int
    latin_stopword_share: float


def is_bad_char(ch: str) -> bool:
    if ch in "\n\t\r":
        return False
    if ch in "\ufffd\ufffe\uffff":
        return True
    category = unicodedata.category(ch)
    return category in ("Co", "Cc", "Cn", "Cs")


def _base_letter(ch: str) -> str:
    """A Greek letter without its accents and breathings, lower case."""
    decomposed = unicodedata.normalize("NFD", ch.lower())
    return decomposed[0] if decomposed else ch


def greek_badness(text: str) -> float:
    """glossAPI's greek_badness_score (0 when the text has no Greek letters)."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("|")]
    body = unicodedata.normalize("NFC", "\n".join(lines))
    words = GREEK_WORD.findall(body)
    letters = [ch for w in words for ch in w if unicodedata.category(ch).startswith("L")]
    total = len(letters)
    if total == 0:
        return 0.0
    vowel_runs = consonant_runs = doubles = sigma_end = bigrams = short = 0
    long_words = 0.0
    for word in words:
        lower = [_base_letter(ch) for ch in word if unicodedata.category(ch).startswith("L")]
        if not lower:
            continue
        if len(lower) < 3:
            short += 1
        if len(lower) >= 21:
            long_words += min(len(lower) - 20, 380)
        if word[-1] == "σ":
            sigma_end += 1
        run_v = run_c = 0
        for i, ch in enumerate(lower):
            vowel = ch in GREEK_VOWELS or ch == "ϊ"
            run_v = run_v + 1 if vowel else 0
            run_c = 0 if vowel else run_c + 1
            if run_v >= 4:
                vowel_runs += 1
            if run_c >= 4:
                consonant_runs += 1
            if i:
                pair = lower[i - 1] + ch
                if pair in INVALID_BIGRAMS:
                    bigrams += 1
                if lower[i - 1] == ch and ch not in NORMAL_DOUBLES:
                    triple = i + 1 < len(lower) and lower[i + 1] == ch
                    previous = i >= 2 and lower[i - 2] == ch
                    if not triple and not previous:
                        doubles += 1

    def per_1000(count: float) -> float:
        return 1000.0 * count / total

    short_excess = max(0.0, per_1000(short) - SHORT_BASELINE)
    score = (
        per_1000(vowel_runs)
        + 1.5 * per_1000(consonant_runs)
        + 2.0 * per_1000(doubles)
        + 2.5 * per_1000(sigma_end)
        + 2.0 * per_1000(bigrams)
        + short_excess
        + per_1000(long_words)
    )
    return round(score, 2)


def score_text(text: str) -> TextScores:
    chars = [ch for ch in text if not ch.isspace()]
    bad = sum(1 for ch in chars if is_bad_char(ch))
    letters = [ch for ch in chars if ch.isalpha()]
    greek = sum(1 for ch in letters if "\u0370" <= ch <= "\u03ff" or "\u1f00" <= ch <= "\u1fff")
    latin = sum(1 for ch in letters if ch.isascii() or "\u00c0" <= ch <= "\u024f")
    mojibake = sum(len(m.group(0)) for m in MOJIBAKE.finditer(text))
    latin_words = [w.lower() for w in LATIN_WORD.findall(text)]
    stop = sum(1 for w in latin_words if w in LATIN_STOPWORDS)
    return TextScores(
        letters=len(letters),
        greek_letters=greek,
        latin_letters=latin,
        bad_chars=round(bad / len(chars), 4) if chars else 0.0,
        mojibake=round(mojibake / len(chars), 4) if chars else 0.0,
        greek_badness=greek_badness(text),
        latin_words=len(latin_words),
        latin_stopword_share=round(stop / len(latin_words), 4) if latin_words else 0.0,
    )
