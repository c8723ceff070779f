"""OCR engines behind one protocol (base.OcrEngine); `create_engine` picks one by name, and
`engine_kind` answers what the parent process asks of an engine (kinds.py).

config.py imports engines.names while it loads: nothing here imports config at run time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import EngineKind, EngineNeeds, OcrEngine, OcrRequest, OcrResult
from .kinds import engine_kind

if TYPE_CHECKING:
    from ..config import EngineConfig

__all__ = [
    "EngineKind",
    "EngineNeeds",
    "OcrEngine",
    "OcrRequest",
    "OcrResult",
    "create_engine",
    "engine_kind",
]


def create_engine(config: EngineConfig) -> OcrEngine:
    """The engine named in the config; vLLM is imported only when asked for."""
    if config.name == "text":
        from .text import TextLayerEngine

        return TextLayerEngine()
    if config.name == "vllm":
        from .vllm import VllmEngine

        return VllmEngine(config)
    if config.name == "tesseract":
        from .tesseract import TesseractEngine

        return TesseractEngine(config)
    if config.name == "auto":
        from dataclasses import replace

        from .auto import AutoEngine

        ocr = None
        if config.ocr_engine != "none":
            ocr = create_engine(replace(config, name=config.ocr_engine, ocr_engine="none"))
        return AutoEngine(ocr)
    # "module:factory": an engine of the user's own (and the scripted engines of the tests).
    module_name, _, attr = config.name.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    engine: OcrEngine = factory(config)
    return engine
