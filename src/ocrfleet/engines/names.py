"""The engine names and the rules that need nothing but the names (no imports: config.py
validates options with them while engines/ is still loading)."""

from __future__ import annotations

AUTO = "auto"
VLLM = "vllm"
TESSERACT = "tesseract"
TEXT = "text"
ENGINE_NAMES: tuple[str, ...] = (AUTO, VLLM, TESSERACT, TEXT)
# The OCR engine of auto: none leaves OCR pages as needs_ocr; default is chosen on the
# machine that runs (resolve.py).
NO_OCR = "none"
DECIDE = "default"
OCR_ENGINE_NAMES: tuple[str, ...] = (VLLM, TESSERACT, NO_OCR, DECIDE)


def is_custom(name: str) -> bool:
    """`module:factory`: an engine of the user's own (and the tests' scripted engines)."""
    return ":" in name


def names_problem(name: str, ocr_engine: str) -> str | None:
    """What is wrong with this engine / OCR engine pair, in one line; None when nothing."""
    if name not in ENGINE_NAMES and not is_custom(name):
        return f"unknown engine {name!r}: choose auto, vllm, tesseract, text, or module:factory"
    if ocr_engine not in OCR_ENGINE_NAMES and not is_custom(ocr_engine):
        return f"unknown OCR engine {ocr_engine!r}: choose vllm, tesseract or none"
    if name != AUTO and ocr_engine not in (DECIDE, NO_OCR):
        return (
            f"--ocr-engine {ocr_engine} applies to --engine auto only (--engine "
            f"{name} runs every page through itself)"
        )
    return None


def can_ocr(name: str, ocr_engine: str) -> bool:
    """The engine can OCR a page (so pages an earlier run left as needs_ocr are redone)."""
    if name == AUTO:
        return ocr_engine != NO_OCR
    return name != TEXT


def runs_model(engine: str | None) -> bool:
    """A page recorded with this engine went through the model (not a text layer)."""
    return engine == VLLM
