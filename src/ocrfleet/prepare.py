"""Preparers: engine-specific work done inside render processes, off the engine's hot path.

An engine names a preparer (EngineNeeds.prepare); each render process loads it once and runs
it on every page it renders. The result travels to the engine as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .page import RenderedPage

Preparer = Callable[[RenderedPage], dict[str, np.ndarray]]


def load_preparer(name: str) -> Preparer:
    """`deepseek-ocr:<resolution>`: DeepSeek-OCR's resize/pad/tile, packed as uint8."""
    kind, _, arg = name.partition(":")
    if kind == "deepseek-ocr":
        from .deepseek.modes import mode
        from .deepseek.packing import pack_page

        mode(arg)  # fail at load, not on the first page

        def prepare(page: RenderedPage) -> dict[str, np.ndarray]:
            return {"packed": pack_page(page.image(), arg)}

        return prepare
    raise ValueError(f"unknown preparer {name!r}")
