"""Redaction for output ocrfleet does not format itself: a worker's raw stdout/stderr and
tracebacks nobody caught.

An engine worker's file descriptors 1 and 2 (vLLM's own logging, its engine-core child
processes, faulthandler dumps) go into a pipe read by a small redactor process that writes
`logs/worker-N.out` line by line with every secret masked (ocrfleet.redact). It is a process,
not a thread, so a worker that dies at once (a CUDA fault, os._exit) still gets its last
lines written: the redactor reads until every writer is gone. It runs in a session of its
own and ignores SIGINT/SIGTERM, so stopping a worker's process group does not cut it short.

`install_excepthooks` makes an uncaught exception print its traceback redacted (an AWS key
id in a botocore message, a token in a URL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType

from .redact import redact, secret_values


def redirect_output(path: Path) -> subprocess.Popen[bytes]:
    """Send this process's fds 1 and 2 (and its children's) through a redactor into `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # The redactor imports this very package, wherever it was loaded from.
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    redactor = subprocess.Popen(
        [sys.executable, "-m", "ocrfleet.redact_stream", str(path)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    assert redactor.stdin is not None
    os.dup2(redactor.stdin.fileno(), 1)
    os.dup2(redactor.stdin.fileno(), 2)
    redactor.stdin.close()  # fds 1 and 2 hold the pipe now
    return redactor


def copy_redacted(source: int, path: Path) -> None:
    """Copy lines from fd `source` to `path` (appending), each one redacted, until EOF."""
    secrets = secret_values()
    # Unbuffered: a line that cannot be written is dropped, not kept to fail again.
    with os.fdopen(source, "rb") as lines, path.open("ab", buffering=0) as out:
        for raw in lines:
            # A full disk must not end the redactor: the worker's writes would then fail
            # (EPIPE). The line is lost; the pipe keeps draining.
            with contextlib.suppress(OSError):
                out.write(redact(raw.decode("utf-8", errors="replace"), secrets).encode())


def _print_redacted(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write(redact(text))
    sys.stderr.flush()


def install_excepthooks() -> None:
    """Uncaught exceptions (main thread and other threads) print redacted tracebacks."""
    sys.excepthook = _print_redacted

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            _print_redacted(args.exc_type, args.exc_value, args.exc_traceback)

    threading.excepthook = thread_hook


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    copy_redacted(sys.stdin.fileno(), Path(sys.argv[1]))


if __name__ == "__main__":
    main()
