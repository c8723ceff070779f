"""Per-page quality flags for DeepSeek-OCR output.

The flags go into per-page JSON records that users filter on, so their names
are a stable vocabulary. Every check is linear-ish in the text size (loops can
reach 35 kB a page) and none of them raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FLAGS", "QualityReport", "assess"]

FLAGS = (
    "empty_output",
    "low_text",
    "mixed_script",
    "no_eos",
    "repetition_loop",
    "tag_heavy",
)

NGRAM = 5
LOOP_NGRAM_RATIO = 0.5
LOOP_MIN_WORDS = 50
LOOP_RUN = 10
TAG_HEAVY_SHARE = 0.3
SCRIPT_MIN_LETTERS = 50
SCRIPT_DOMINANT_SHARE = 0.8
LOW_TEXT_LETTERS = 20
MAX_UNIT = 200  # longest repeated unit, in characters, that the run scan looks for

_GRAM = 8  # k-gram used to find a candidate period
_STRIDE = 8  # sampling step: still lands inside any unit of 2+ chars repeated 10 times
_CHAR_RUN = re.compile(r"(.)\1{9,}", re.DOTALL)  # 1-char units, too short to sample
_WORD_LETTERS = re.compile(r"[^\W\d_]+")

# Runs, not single letters: the letters are concatenated, so a script is a few long runs.
_GREEK = re.compile(r"[\u0370-\u03ff\u1f00-\u1fff]+")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]+")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]{0,15}(?:\s[^<>\n]{0,200})?/?>")
# Markup whose letters are not page text: HTML tags, LaTeX commands, link targets.
_MARKUP = re.compile(_HTML_TAG.pattern + r"|\\[A-Za-z]+|\]\([^()\n]{0,500}\)")
# Grounding tags in raw output; an unclosed det only spans box-like characters.
_TAG_SPAN = re.compile(
    r"<\|ref\|>[^<\n]*(?:<\|/ref\|>)?"
    r"|<\|det\|>(?:[^<\n]*<\|/det\|>|[\[\]\d \t,.+\-]*)"
    r"|<\|/?(?:ref|det)\|>|<\|grounding\|>"
)


@dataclass(frozen=True)
class QualityReport:
    flags: tuple[str, ...]  # sorted, from FLAGS
    metrics: dict[str, float]


def assess(text: str, *, finish_reason: str | None, raw: str | None = None) -> QualityReport:
    """Flags and metrics for one page's text (clean or raw) and, optionally, its raw output."""
    metrics: dict[str, float] = {"chars": len(text)}
    metrics.update(_script_metrics(text))
    words = text.split()
    metrics["repeated_ngram_ratio"] = _repeated_ngram_ratio(words)
    metrics["longest_repeat_run"] = _longest_repeat_run(text)
    if raw is not None:
        metrics["tag_char_share"] = _tag_char_share(raw)

    flags: set[str] = set()
    if finish_reason == "length":
        flags.add("no_eos")
    if not text.strip():
        flags.add("empty_output")
    elif metrics["letters"] < LOW_TEXT_LETTERS:
        flags.add("low_text")
    ratio_loop = (
        metrics["repeated_ngram_ratio"] >= LOOP_NGRAM_RATIO and len(words) >= LOOP_MIN_WORDS
    )
    if ratio_loop or metrics["longest_repeat_run"] >= LOOP_RUN:
        flags.add("repetition_loop")
    if metrics.get("tag_char_share", 0.0) > TAG_HEAVY_SHARE:
        flags.add("tag_heavy")
    dominant = max(metrics["greek_share"], metrics["latin_share"])
    if metrics["letters"] >= SCRIPT_MIN_LETTERS and dominant < SCRIPT_DOMINANT_SHARE:
        flags.add("mixed_script")
    return QualityReport(tuple(sorted(flags)), metrics)


def _script_metrics(text: str) -> dict[str, float]:
    """Letter counts by script, ignoring markup so HTML tables don't make Greek look Latin."""
    letters = "".join(_WORD_LETTERS.findall(_MARKUP.sub(" ", text)))
    total = len(letters)
    if not total:
        return {"letters": 0, "greek_share": 0.0, "latin_share": 0.0, "other_share": 0.0}
    greek = total - len(_GREEK.sub("", letters))
    latin = total - len(_LATIN.sub("", letters))
    return {
        "letters": total,
        "greek_share": round(greek / total, 4),
        "latin_share": round(latin / total, 4),
        "other_share": round((total - greek - latin) / total, 4),
    }


def _repeated_ngram_ratio(words: list[str]) -> float:
    """Share of word 5-grams that repeat an earlier one (total minus distinct, over total)."""
    total = len(words) - NGRAM + 1
    if total <= 0:
        return 0.0
    distinct = len(set(zip(*(words[i:] for i in range(NGRAM)), strict=False)))
    return round((total - distinct) / total, 4)


def _tag_char_share(raw: str) -> float:
    if not raw:
        return 0.0
    inside = sum(match.end() - match.start() for match in _TAG_SPAN.finditer(raw))
    return round(inside / len(raw), 4)


def _longest_repeat_run(text: str) -> int:
    """Most consecutive repetitions of one unit, found two ways, whichever is larger.

    1. Identical consecutive non-blank lines (any length).
    2. Periodic stretches with a period of 1..MAX_UNIT characters: at every
       _STRIDE-th position the nearest earlier occurrence of the next _GRAM
       characters (within MAX_UNIT) gives a candidate period p; the stretch where
       text[j] == text[j - p] is then extended both ways by galloping slice
       comparisons, and counts (length // p) repetitions. The scan then jumps past
       the stretch, so a loop costs O(its length) and the rest O(n · MAX_UNIT / _STRIDE)
       of C-level searching. Units of one character are found by a regex instead
       (only from 10 repetitions on), as sampling cannot land inside short runs of them.
    HTML tags are first mapped to one private-use character each (so a unit's size is
    measured in tags, not their spelling), and units without any letter or digit are
    ignored: empty table cells, dot leaders and rules legitimately repeat. A text with
    no repetition scores 1, a blank one 0.
    """
    visible = _encode_tags(text)
    return max(_longest_line_run(visible), _longest_periodic_run(visible), int(bool(text.strip())))


def _encode_tags(text: str) -> str:
    codes: dict[str, str] = {}

    def code(match: re.Match[str]) -> str:
        tag = match.group(0)
        return codes.setdefault(tag, chr(0xE000 + len(codes) % 6400))

    return _HTML_TAG.sub(code, text)


def _has_content(unit: str) -> bool:
    return any(ch.isalnum() for ch in unit)


def _longest_line_run(text: str) -> int:
    best = run = 0
    previous = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        run = run + 1 if line == previous else 1
        previous = line
        if run > best and _has_content(line):
            best = run
    return best


def _longest_periodic_run(text: str) -> int:
    best = max(
        (len(m.group(0)) for m in _CHAR_RUN.finditer(text) if m.group(1).isalnum()), default=0
    )
    n = len(text)
    i = 1
    while i + _GRAM <= n:
        earlier = text.rfind(text[i : i + _GRAM], max(0, i - MAX_UNIT), i - 1 + _GRAM)
        if earlier == -1:
            i += _STRIDE
            continue
        period = i - earlier
        # Cheap rejection of chance k-gram matches in prose: a loop of 10 units of 3+
        # chars agrees for 9 periods, so some sampled position agrees for 2 k-grams.
        check = _GRAM if period <= 2 else 2 * _GRAM
        if text[i + _GRAM : i + check] != text[earlier + _GRAM : earlier + check]:
            i += _STRIDE
            continue
        forward = _common_prefix(text, i, earlier, n - i)
        backward = _common_suffix(text, i, earlier, earlier)
        start, end = i - backward - period, i + forward
        reps = (end - start) // period
        if reps > best and _has_content(text[start : start + period]):
            best = reps
        i = max(i + _STRIDE, end)
    return best


def _common_prefix(text: str, a: int, b: int, limit: int) -> int:
    """Largest m <= limit with text[a:a+m] == text[b:b+m] (galloping, then bisection)."""
    good, step = 0, _GRAM
    while good < limit:
        m = min(good + step, limit)
        if text[a : a + m] != text[b : b + m]:
            return _bisect(lambda k: text[a : a + k] == text[b : b + k], good, m - 1)
        good, step = m, step * 2
    return good


def _common_suffix(text: str, a: int, b: int, limit: int) -> int:
    """Largest m <= limit with text[a-m:a] == text[b-m:b]."""
    good, step = 0, _GRAM
    while good < limit:
        m = min(good + step, limit)
        if text[a - m : a] != text[b - m : b]:
            return _bisect(lambda k: text[a - k : a] == text[b - k : b], good, m - 1)
        good, step = m, step * 2
    return good


def _bisect(holds: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest k in [lo, hi] with holds(k), given holds(lo) and monotonicity."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
