"""Where a dead worker's cause is: the last error line of `logs/worker-N.log` or `.out`.

A worker logs ocrfleet's own messages (and tracebacks) to worker-N.log; vLLM and anything
else that writes to stdout/stderr land in worker-N.out. When the supervisor gives up on a
worker, the user needs the one line that says why, and the file to open for the rest.

vLLM's engine start ends in a wrapper that names no cause ("Engine core initialization
failed. See root cause above. Failed core proc(s): {}", H200, 2026-12-03); the cause is the
exception its engine core (or GPU worker) process printed before it, in worker-N.out, behind
prefixes such as "(EngineCore pid=12) ERROR 12-03 06:01:02 [core.py:1202] ".
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
# A line that only points elsewhere for the cause (vLLM's engine start wrappers).
POINTS_ELSEWHERE = re.compile(r"See (?:root cause above|stack trace for root cause)")
# The process tag and log header vLLM puts before a line of its engine core or GPU workers.
# One space after each: what follows keeps a traceback frame's indentation.
VLLM_PREFIX = re.compile(
    r"^(?:\((?:EngineCore|Worker|APIServer)[^)]*\) ?)?"
    r"(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \[[^\]]*\] ?)?"
)


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


def last_error_line(
    lines: list[str], *, causes_only: bool = False, before: int | None = None
) -> tuple[int, str] | None:
    """(index, line) of the last error line (before index `before`): a traceback's end wins
    over a logged ERROR line that precedes it, since it names the exception itself. The line
    comes without vLLM's prefix; a traceback logged at ERROR level counts by its last line,
    not its frames. `causes_only`: exceptions only, and none that points elsewhere."""
    end = len(lines) if before is None else before
    for index in range(end - 1, -1, -1):
        text = lines[index].rstrip()
        body = VLLM_PREFIX.sub("", text)
        line = body.strip()
        if not line or body[:1].isspace() or line.startswith("Traceback ("):
            continue
        exception = TRACEBACK_END.match(line) is not None
        if causes_only and (not exception or POINTS_ELSEWHERE.search(line)):
            continue
        if exception or LOGGED_ERROR.search(text):
            return index, line
    return None


def _quoted(path: Path, line: str) -> WorkerError:
    line = redact(line)
    if len(line) > MAX_QUOTE:
        line = line[: MAX_QUOTE - 1] + "…"
    return WorkerError(path, line)


def last_worker_error(layout: OutputLayout, slot: int) -> WorkerError | None:
    """The most recent error line of worker `slot`, from whichever of its files has one
    (the more recently written file first). Where that line only points elsewhere ("See
    root cause above"), the cause instead: the last exception of worker-N.out (where vLLM's
    processes write) that is no such pointer, before the pointer if it is in that file too;
    the pointer itself where there is none."""
    files = [layout.worker_log(slot), layout.worker_out(slot)]
    existing = [f for f in files if f.is_file()]
    existing.sort(key=lambda f: f.stat().st_mtime_ns, reverse=True)
    for path in existing:
        lines = _tail_lines(path)
        found = last_error_line(lines)
        if found is None:
            continue
        if not POINTS_ELSEWHERE.search(found[1]):
            return _quoted(path, found[1])
        out = layout.worker_out(slot)
        if path == out:
            cause = last_error_line(lines, causes_only=True, before=found[0])
        else:
            cause = last_error_line(_tail_lines(out), causes_only=True)
        return _quoted(out, cause[1]) if cause is not None else _quoted(path, found[1])
    return None
