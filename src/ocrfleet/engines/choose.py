"""Which OCR engine `--engine auto` hands its OCR pages to, when the user did not say."""

from __future__ import annotations

import importlib.util

from ..errors import ConfigError
from .tesseract import installed_languages, tesseract_path


def default_ocr_engine(gpus: list[int] | tuple[int, ...], langs: str) -> str:
    """vLLM when a GPU and vLLM are there, else Tesseract when installed, else none."""
    if gpus and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    binary = tesseract_path()
    if binary is not None and set(langs.split("+")) <= installed_languages(binary):
        return "tesseract"
    return "none"


def check_tesseract(langs: str) -> None:
    """Fail before the run when Tesseract or one of its languages is missing."""
    binary = tesseract_path()
    if binary is None:
        raise ConfigError(
            "tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-ell); "
            "choose another engine or --ocr-engine none"
        )
    missing = set(langs.split("+")) - installed_languages(binary)
    if missing:
        raise ConfigError(
            f"tesseract has no data for {', '.join(sorted(missing))} (apt-get install "
            + " ".join(f"tesseract-ocr-{m}" for m in sorted(missing))
            + ")"
        )
