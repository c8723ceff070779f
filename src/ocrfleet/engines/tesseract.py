"""The `tesseract` engine: Debian's tesseract-ocr (5.x) with its ell, grc and eng data, on CPU.

We call the `tesseract` command, one process per page, rather than a Python binding: the
project adds no dependency for it, a crash or a hang of Tesseract takes down one child
process (the pipeline's timeout cancels the request and we kill it), and the CLI is the
interface Debian ships and keeps stable. Pages arrive rendered at 300 dpi (`min_dpi`), the
resolution Tesseract's models expect; the image goes in on stdin as PNM, the text comes back
on stdout. Each process runs single-threaded (OMP_THREAD_LIMIT=1) and the engine runs as
many at once as the machine has cores, so throughput scales with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from typing import Any

from ..config import EngineConfig
from ..errors import EngineError
from .base import EngineNeeds, OcrRequest, OcrResult

TESSERACT_DPI = 300


def tesseract_path() -> str | None:
    return shutil.which("tesseract")


def installed_languages(binary: str) -> set[str]:
    try:
        out = subprocess.run(
            [binary, "--list-langs"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.strip() for line in out.splitlines()[1:] if line.strip()}


def pnm(page: Any) -> bytes:
    """The rendered page as binary PPM (what Tesseract reads fastest from a pipe)."""
    import numpy as np

    rgb = np.asarray(page.image())
    header = f"P6\n{rgb.shape[1]} {rgb.shape[0]}\n255\n".encode()
    return header + np.ascontiguousarray(rgb[..., :3]).tobytes()


class TesseractEngine:
    name = "tesseract"

    def __init__(self, config: EngineConfig) -> None:
        self.langs = config.tesseract_langs
        self.jobs = max(1, os.cpu_count() or 1)
        self.binary: str | None = None
        self.version = ""

    @property
    def needs(self) -> EngineNeeds:
        return EngineNeeds(image=True, min_dpi=TESSERACT_DPI)

    @property
    def max_concurrency(self) -> int:
        return self.jobs

    async def start(self) -> None:
        binary = tesseract_path()
        if binary is None:
            raise EngineError(
                "tesseract is not installed: apt-get install tesseract-ocr tesseract-ocr-ell "
                "(or choose another --ocr-engine)"
            )
        missing = set(self.langs.split("+")) - installed_languages(binary)
        if missing:
            raise EngineError(
                f"tesseract has no data for {', '.join(sorted(missing))}: install "
                + " ".join(f"tesseract-ocr-{m.replace('_', '-')}" for m in sorted(missing))
            )
        self.binary = binary
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
        self.version = (
            (out.stdout or out.stderr).splitlines()[0] if out.stdout or out.stderr else ""
        )
        self._slots = asyncio.Semaphore(self.jobs)

    async def ocr(self, request: OcrRequest) -> OcrResult:
        if self.binary is None:
            raise EngineError("the tesseract engine was not started")
        page = request.page
        dpi = str(round(page.effective_dpi))
        data = await asyncio.to_thread(pnm, page)
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "stdin", "stdout", "-l", self.langs, "--dpi", dpi, "--psm", "3",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )  # fmt: skip
            try:
                out, err = await proc.communicate(data)
            except asyncio.CancelledError:  # the pipeline's timeout: no orphan left behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
        if proc.returncode != 0:
            reason = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
            raise EngineError(f"tesseract exited with {proc.returncode}: {reason[0]}")
        text = out.decode("utf-8", "replace").replace("\f", "").strip()
        return OcrResult(text=text, finish_reason="stop", engine="tesseract")

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"engine": "tesseract", "version": self.version, "langs": self.langs}
