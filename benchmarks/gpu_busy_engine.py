"""An engine for recording GPU telemetry on a real GPU without vLLM: each page's text layer,
after `busy_seconds` (extra arg, default 1.0) of bf16 matrix products on the worker's GPU.

    ocrfleet run PDFS -o OUT --engine benchmarks.gpu_busy_engine:create --gpus 0 \\
        --vllm-arg busy_seconds=1.5 --gpu-sample-seconds 1

It makes NVML's utilisation, memory and power move as real work does, so the telemetry
path (worker sampler → ledger → progress, summary, report) is recorded end to end on a GPU.
Not an OCR engine; not used by the product.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ocrfleet.config import EngineConfig
from ocrfleet.engines.base import EngineNeeds, OcrRequest, OcrResult


class GpuBusyEngine:
    name = "gpu-busy"

    def __init__(self, config: EngineConfig) -> None:
        self.busy_seconds = float(config.extra_args.get("busy_seconds", 1.0))
        self.size = int(config.extra_args.get("matrix", 8192))
        self._torch: Any = None
        self._a: Any = None

    @property
    def needs(self) -> EngineNeeds:
        return EngineNeeds(image=True, text_layer=True)

    @property
    def max_concurrency(self) -> int:
        return 1

    async def start(self) -> None:
        import torch

        self._torch = torch
        self._a = torch.randn(self.size, self.size, device="cuda", dtype=torch.bfloat16)

    def _burn(self) -> None:
        torch = self._torch
        deadline = time.monotonic() + self.busy_seconds
        while time.monotonic() < deadline:
            for _ in range(20):
                self._a = torch.tanh(self._a @ self._a)
            torch.cuda.synchronize()

    async def ocr(self, request: OcrRequest) -> OcrResult:
        await asyncio.to_thread(self._burn)
        return OcrResult(text=request.page.text_layer or "", finish_reason="stop")

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "torch": str(self._torch.__version__ if self._torch else "")}


def create(config: EngineConfig) -> GpuBusyEngine:
    return GpuBusyEngine(config)
