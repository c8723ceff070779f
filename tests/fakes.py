"""Scripted engines for failure injection (tests only; the product never uses them).

Selected with `--engine tests.fakes:scripted` (worker processes import it by name) and
scripted through the engine's extra args: {"script": {"<page>": [behaviour per attempt]}}.
Behaviours: "ok" (text ending the page), "loop" (no EOS: finish_reason length), "sleep:S"
(takes S seconds), "figure" (grounded output with an image region and a torn last tag),
"error" (the engine rejects the page), "crash" (the worker process dies
at once, like a CUDA fault), "dead" (the engine reports itself dead). Pages not scripted get
"ok". The text says which page and attempt produced it, so tests can check what was kept.
Extra args "delay" (seconds on every page) and "fail_start" (the engine cannot start) too,
and "barrier" ({"dir": D, "count": N}): start() waits until N engines have started, so tests
of work sharing do not depend on how fast each worker process starts; "stagger" ({"dir": D,
"seconds": S}): the k-th engine to start (from 0) is ready k×S seconds after the first;
"start_seconds" (every start takes that long); "fail_first_starts" ({"dir": D, "count": N}):
the first N starts among all engines fail, as concurrent vLLM starts on one GPU did;
"record_env" (a directory): start() writes the CUDA and MPS variables it was given to
<dir>/<pid>.json. At most "concurrency" pages are inside the engine at once, as in vLLM's
batch.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ocrfleet.config import EngineConfig
from ocrfleet.engines.base import EngineNeeds, OcrRequest, OcrResult
from ocrfleet.errors import EngineDead, EngineError


class ScriptedEngine:
    name = "scripted"

    def __init__(self, config: EngineConfig) -> None:
        self.script: dict[str, list[str]] = config.extra_args.get("script", {})
        self.concurrency = int(config.extra_args.get("concurrency", 4))
        self.delay = float(config.extra_args.get("delay", 0.0))
        self.fail_start = bool(config.extra_args.get("fail_start", False))
        self.barrier: dict[str, Any] | None = config.extra_args.get("barrier")
        self.stagger: dict[str, Any] | None = config.extra_args.get("stagger")
        self.start_seconds = float(config.extra_args.get("start_seconds", 0.0))
        self.fail_first: dict[str, Any] | None = config.extra_args.get("fail_first_starts")
        self.record_env: str | None = config.extra_args.get("record_env")
        self._running = asyncio.Semaphore(self.concurrency)
        self.calls: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.started = False
        self.gpu_memory_utilization = config.gpu_memory_utilization
        self.kv_cache_memory_bytes = config.extra_args.get("kv_cache_memory_bytes")

    @property
    def needs(self) -> EngineNeeds:
        return EngineNeeds(image=True, text_layer=True)

    @property
    def max_concurrency(self) -> int:
        return self.concurrency

    async def start(self) -> None:
        if self.record_env:
            seen = {k: v for k, v in os.environ.items() if k.startswith("CUDA_")}
            Path(self.record_env).mkdir(parents=True, exist_ok=True)
            (Path(self.record_env) / f"{os.getpid()}.json").write_text(json.dumps(seen))
        if self.fail_start:
            raise RuntimeError("scripted engine cannot start")
        if self.fail_first and self._arrival(Path(self.fail_first["dir"])) < int(
            self.fail_first["count"]
        ):
            raise RuntimeError("scripted engine failed at start (out of GPU memory)")
        if self.start_seconds:
            await asyncio.sleep(self.start_seconds)
        if self.barrier:
            await self._wait_for_peers(Path(self.barrier["dir"]), int(self.barrier["count"]))
        if self.stagger:
            await asyncio.sleep(self._arrival(Path(self.stagger["dir"])) * self.stagger["seconds"])
        self.started = True

    @staticmethod
    def _arrival(directory: Path) -> int:
        """How many engines started before this one (files created exclusively, in order)."""
        directory.mkdir(parents=True, exist_ok=True)
        index = 0
        while True:
            try:
                os.close(os.open(directory / str(index), os.O_CREAT | os.O_EXCL))
                return index
            except FileExistsError:
                index += 1

    @staticmethod
    async def _wait_for_peers(directory: Path, count: int, timeout: float = 120.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / str(os.getpid())).touch()
        deadline = time.monotonic() + timeout
        while len(list(directory.iterdir())) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def ocr(self, request: OcrRequest) -> OcrResult:
        async with self._running:
            return await self._ocr(request)

    async def _ocr(self, request: OcrRequest) -> OcrResult:
        page = request.page
        key = (page.doc_id, page.page)
        self.calls[key] += 1
        attempt = self.calls[key]
        if self.delay:
            await asyncio.sleep(self.delay)
        plan = self.script.get(str(page.page), [])
        behaviour = plan[attempt - 1] if attempt <= len(plan) else "ok"
        base = page.text_layer or f"page {page.page}"
        text = f"{base}\n\n[{request.prompt_name} attempt {attempt}]"
        if behaviour.startswith("sleep:"):
            await asyncio.sleep(float(behaviour.split(":", 1)[1]))
            return OcrResult(text=text, finish_reason="stop", prompt_tokens=10, output_tokens=5)
        if behaviour == "loop":
            looping = text + "\n" + "<td>1</td> same words again " * 200
            return OcrResult(
                text=looping, finish_reason="length", prompt_tokens=10, output_tokens=8192
            )
        if behaviour == "figure":
            grounded = (
                "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 90]]<|/det|>\n# Τίτλος\n\n"
                "<|ref|>image<|/ref|><|det|>[[100, 200, 500, 600]]<|/det|>\n\n"
                "<|ref|>image_caption<|/ref|><|det|>[[100, 610, 500, 640]]<|/det|>\n"
                "<center>Σχ. 1 \\coloneqq</center>\n\n"
                "<|ref|>text<|/ref|><|det|>[[100, 700"
            )
            return OcrResult(
                text=grounded, finish_reason="stop", prompt_tokens=10, output_tokens=60
            )
        if behaviour == "error":
            raise EngineError(f"scripted error on page {page.page}")
        if behaviour == "crash":
            os._exit(17)
        if behaviour == "dead":
            raise EngineDead("scripted engine death")
        return OcrResult(text=text, finish_reason="stop", prompt_tokens=10, output_tokens=5)

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        # Its share of the GPU, as the worker's per-slot config gave it (tests read it back).
        return {
            "engine": "scripted",
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
        }


def scripted(config: EngineConfig) -> ScriptedEngine:
    return ScriptedEngine(config)
