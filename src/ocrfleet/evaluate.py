"""`ocrfleet eval OUT --truth DIR`: CER and WER of a run's Markdown against plain-text truth.

Two normalisations, as Greek OCR studies report them:
- strict: NFC (which also folds oxia into tonos, ano teleia U+0387 into U+00B7 and the Greek
  question mark U+037E into `;`), Markdown and page markers removed, quotes and dashes unified
  (olmOCR-bench does the same), whitespace collapsed; accents and breathings kept;
- relaxed: then accents and breathings stripped (iota subscript becomes ι), case folded,
  final sigma folded into σ.
CER is the character edit distance over the truth's length; WER the same over words.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .layout import OutputLayout

_MARKER = re.compile(r"<!--.*?-->", re.S)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.M)
_FOLD = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
        "\u2015": "-", "\u2212": "-", "\u00a0": " ",
    }
)  # fmt: skip


def normalise_strict(text: str) -> str:
    text = _MARKER.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = unicodedata.normalize("NFC", text).translate(_FOLD)
    return " ".join(text.split())


def normalise_relaxed(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", normalise_strict(text)).replace("\u0345", "ι")
    bare = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return unicodedata.normalize("NFC", bare).casefold().replace("ς", "σ")


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance, one numpy pass per row of `a` (insertions by a running minimum)."""
    if not a or not b:
        return max(len(a), len(b))
    target = np.asarray(b, dtype=np.int64)
    steps = np.arange(len(b) + 1, dtype=np.int64)
    row = steps.copy()
    for i, symbol in enumerate(a, start=1):
        cost = (target != symbol).astype(np.int64)
        new = np.empty_like(row)
        new[0] = i
        new[1:] = np.minimum(row[1:] + 1, row[:-1] + cost)
        row = np.minimum.accumulate(new - steps) + steps
    return int(row[-1])


def _words(text: str, vocab: dict[str, int]) -> list[int]:
    return [vocab.setdefault(w, len(vocab)) for w in text.split()]


@dataclass(frozen=True)
class Score:
    cer: float
    wer: float
    char_errors: int
    chars: int
    word_errors: int
    words: int


def score(hypothesis: str, truth: str) -> Score:
    """CER/WER of already normalised texts."""
    char_errors = edit_distance([ord(c) for c in truth], [ord(c) for c in hypothesis])
    vocab: dict[str, int] = {}
    ref_words, hyp_words = _words(truth, vocab), _words(hypothesis, vocab)
    word_errors = edit_distance(ref_words, hyp_words)
    return Score(
        cer=round(char_errors / max(1, len(truth)), 4),
        wer=round(word_errors / max(1, len(ref_words)), 4),
        char_errors=char_errors,
        chars=len(truth),
        word_errors=word_errors,
        words=len(ref_words),
    )


def compare(hypothesis: str, truth: str) -> dict[str, Score]:
    return {
        "strict": score(normalise_strict(hypothesis), normalise_strict(truth)),
        "relaxed": score(normalise_relaxed(hypothesis), normalise_relaxed(truth)),
    }


def _overall(scores: list[Score]) -> dict[str, Any]:
    chars, words = sum(s.chars for s in scores), sum(s.words for s in scores)
    char_errors, word_errors = (
        sum(s.char_errors for s in scores),
        sum(s.word_errors for s in scores),
    )
    return {
        "cer": round(char_errors / max(1, chars), 4),
        "wer": round(word_errors / max(1, words), 4),
        "char_errors": char_errors,
        "chars": chars,
        "word_errors": word_errors,
        "words": words,
    }


def evaluate_run(output_dir: Path, truth_dir: Path) -> dict[str, Any]:
    """Every truth file matched to the run's Markdown of the same name (path, else stem)."""
    markdown = OutputLayout(output_dir).markdown_dir
    if not markdown.is_dir():
        raise ConfigError(f"{output_dir} has no markdown/ directory: is it an ocrfleet output?")
    if not truth_dir.is_dir():
        raise ConfigError(f"--truth {truth_dir} is not a directory")
    by_rel = {p.relative_to(markdown).with_suffix("").as_posix(): p for p in markdown.rglob("*.md")}
    by_stem: dict[str, list[Path]] = {}
    for path in by_rel.values():
        by_stem.setdefault(path.stem, []).append(path)
    documents: list[dict[str, Any]] = []
    missing: list[str] = []
    for truth_file in sorted(truth_dir.rglob("*.txt")):
        rel = truth_file.relative_to(truth_dir).with_suffix("").as_posix()
        output = by_rel.get(rel)
        if output is None and len(by_stem.get(truth_file.stem, [])) == 1:
            output = by_stem[truth_file.stem][0]
        if output is None:
            missing.append(rel)
            continue
        scores = compare(output.read_text(encoding="utf-8"), truth_file.read_text(encoding="utf-8"))
        documents.append(
            {
                "document": rel,
                "output": str(output.relative_to(output_dir)),
                **{name: asdict(s) for name, s in scores.items()},
            }
        )
    overall = {
        name: _overall([Score(**d[name]) for d in documents]) for name in ("strict", "relaxed")
    }
    return {"documents": documents, "overall": overall, "missing_outputs": missing}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'document':40} {'CER':>7} {'WER':>7} {'CER rel':>8} {'WER rel':>8}"]
    rows = [(d["document"], d["strict"], d["relaxed"]) for d in report["documents"]]
    rows.append(("overall", report["overall"]["strict"], report["overall"]["relaxed"]))
    for name, strict, relaxed in rows:
        lines.append(
            f"{name[:40]:40} {strict['cer']:7.2%} {strict['wer']:7.2%} "
            f"{relaxed['cer']:8.2%} {relaxed['wer']:8.2%}"
        )
    for rel in report["missing_outputs"]:
        lines.append(f"no output for truth file {rel}.txt")
    return "\n".join(lines)
