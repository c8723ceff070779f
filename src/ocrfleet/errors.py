"""The exceptions ocrfleet raises, one hierarchy so callers can catch what they can handle.

    OcrfleetError
    ├── ConfigError          options that cannot work together (raised before anything loads)
    ├── InputError           a PDF that cannot be read: carries the file and, when known, the page
    │   └── RenderError      a page that cannot be rendered
    │       └── RenderCrash  the renderer process died on this page, twice (render.py)
    ├── EngineError          the OCR engine failed a page or died
    │   └── EngineDead       the engine cannot serve any further page (the worker restarts)
    └── LedgerError          the ledger is unusable (another schema version)

A page that runs past --timeout-seconds is not an exception: the attempt is recorded as timed
out, the engine aborts the request, and the next attempt (or the failure) follows.
"""

from __future__ import annotations

from pathlib import Path


class OcrfleetError(Exception):
    """Base class of every error ocrfleet raises on purpose."""


class ConfigError(OcrfleetError):
    """Options that cannot work; the message says what to run instead."""


class InputError(OcrfleetError):
    """A document (and optionally one page of it) that cannot be processed."""

    def __init__(self, source: str | Path, reason: str, page: int | None = None) -> None:
        self.source = str(source)
        self.reason = reason
        self.page = page
        where = f"{self.source} page {page}" if page is not None else self.source
        super().__init__(f"{where}: {reason}")


class RenderError(InputError):
    """A page that pypdfium2 could not turn into an image."""


class RenderCrash(RenderError):
    """pdfium took the render process down on this page, twice."""


class RenderTimeout(RenderError):
    """The page was still rendering after --render-timeout: its process was killed."""


class EngineError(OcrfleetError):
    """The engine failed one request; the page may be retried.

    The one way an engine fails a page: any other exception from `OcrEngine.ocr` is taken
    as an engine crash (the worker restarts, the pages in flight count a crash)."""


class EngineDead(EngineError):
    """The engine cannot take more requests; the worker process must restart."""


class LedgerError(OcrfleetError):
    """The ledger cannot be used as it is."""
