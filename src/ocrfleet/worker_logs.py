"""Where a dead worker's cause is: the last error line of `logs/worker-N.log` or `.out`.

A worker logs ocrfleet's own messages (and tracebacks) to worker-N.log; vLLM and anything
else that writes to stdout/stderr land in worker-N.out. When the supervisor gives up on a
worker, the user needs the one line that says why, and the file to open for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .layout import OutputLayout
from .redact import redact

TAIL_BYTES = 256 * 1024
MAX_QUOTE = 300
# The last line of a Python traceback ("ModuleNotFoundError: No module named 'torch'"),
# or a logged error ("12:00:01 ERROR ocrfleet.supervisor: …").
TRACEBACK_END = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Dead)\b.*")
LOGGED_ERROR = re.compile(r"\b(?:ERROR|CRITICAL|FATAL)\b")


@dataclass(frozen=True)
class WorkerError:
    path: Path  # the file that holds the cause
    line: str  # its last error line, redacted and shortened

    def describe(self, base: Path) -> str:
        try:
            shown = self.path.relative_to(base)
        except ValueError:
            shown = self.path
        return f"{self.line} (see {shown})"


def _tail_lines(path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()


def last_error_line(lines: list[str]) -> tuple[int, str] | None:
    """(index, line) of the last error line: a traceback's end wins over a logged ERROR
    line that precedes it, since it names the exception itself."""
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].strip()
        if line and (TRACEBACK_END.match(line) or LOGGED_ERROR.search(line)):
            return index, line
    return None


def last_worker_error(layout: OutputLayout, slot: int) -> WorkerError | None:
    """The most recent error line of worker `slot`, from whichever of its files has one
    (the more recently written file first)."""
    files = [layout.worker_log(slot), layout.worker_out(slot)]
    existing = [f for f in files if f.is_file()]
    existing.sort(key=lambda f: f.stat().st_mtime_ns, reverse=True)
    for path in existing:
        found = last_error_line(_tail_lines(path))
        if found is not None:
            line = redact(found[1])
            if len(line) > MAX_QUOTE:
                line = line[: MAX_QUOTE - 1] + "…"
            return WorkerError(path, line)
    return None
