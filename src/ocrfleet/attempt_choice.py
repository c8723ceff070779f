"""Which prompt an attempt on a page uses, and which of a page's attempts is kept."""

from __future__ import annotations

from .engines.base import OcrResult
from .quality import assess


def prompt_for_attempt(first: str, attempt: int) -> str:
    """Attempt 1 uses the chosen prompt; later attempts switch: a page that looped under the
    grounding prompt is asked for plain text (glossAPI's repair retry)."""
    if attempt == 1:
        return first
    return "free" if first == "markdown" else "markdown"


def pick_result(results: list[tuple[str, OcrResult]]) -> tuple[str, OcrResult] | None:
    """The first attempt that ended the page wins; otherwise the least repetitive output."""
    for name, result in results:
        if result.finish_reason != "length":
            return name, result
    if not results:
        return None

    def loopiness(item: tuple[str, OcrResult]) -> float:
        metrics = assess(item[1].text, finish_reason=item[1].finish_reason).metrics
        return metrics.get("repeated_ngram_ratio", 0.0)

    return min(results, key=loopiness)
