"""What the test engines that overwrite their own input PDF mid-run share (tests only):
extra args "target" (the PDF being read) and "replacement" (whose bytes go over it); pages
come back as their text layer unless the engine says otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocrfleet.config import EngineConfig
from ocrfleet.engines.base import EngineNeeds


class InputSwappingEngine:
    name = "swapping"
    concurrency = 1

    def __init__(self, config: EngineConfig) -> None:
        self.target = Path(config.extra_args["target"])
        self.replacement = Path(config.extra_args["replacement"])
        self.done = False  # the swap happened

    @property
    def needs(self) -> EngineNeeds:
        return EngineNeeds(image=True, text_layer=True)

    @property
    def max_concurrency(self) -> int:
        return self.concurrency

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name}
