"""The S3 client: an s3fs filesystem from the environment, retries of transient errors, and
complete downloads (a temp name, renamed when whole, with the object's mtime).

s3fs is imported lazily (the `s3` extra). The endpoint follows botocore's standard settings
(`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the config file), so S3-compatible stores and
local test servers need no option of ours.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .filemode import apply_file_mode

log = logging.getLogger(__name__)

T = TypeVar("T")
CONCURRENCY = 8
# Exceptions that retrying cannot fix. Everything else an S3 client raises (OSError from
# s3fs, botocore/aiohttp connection errors, timeouts, throttling) is worth another try.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_TRANSIENT_NAMES = frozenset({"BotoCoreError", "ClientError", "ServerTimeoutError"})
# botocore errors that say the request itself is wrong: retrying repeats the same mistake.
_PERMANENT_NAMES = frozenset({"ParamValidationError", "InvalidS3AddressingStyleError"})


def make_filesystem() -> Any:
    """An s3fs filesystem with the environment's credentials and endpoint."""
    try:
        import s3fs
    except ImportError as exc:
        raise ConfigError(
            "s3:// paths need s3fs: pip install 'ocrfleet[s3]' (or uv pip install s3fs)"
        ) from exc
    # No instance cache: a long run must not reuse a listing cached hours ago.
    return s3fs.S3FileSystem(skip_instance_cache=True)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (*_PERMANENT, ValueError)):
        return False
    if any(cls.__name__ in _PERMANENT_NAMES for cls in type(exc).__mro__):
        return False
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


def with_retries(
    action: Callable[[], T],
    what: str,
    retries: int,
    backoff: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`; on a transient error wait (exponential, jittered, capped at 60 s) and
    try again, up to `retries` more times."""
    attempt = 0
    while True:
        try:
            return action()
        except Exception as exc:
            if attempt >= retries or not _is_transient(exc):
                raise
            delay = min(60.0, backoff * 2**attempt) * (0.5 + random.random() / 2)
            attempt += 1
            log.warning(
                "%s: %s: %s; retry %d/%d in %.1f s",
                what,
                type(exc).__name__,
                exc,
                attempt,
                retries,
                delay,
            )
            sleep(delay)


def object_mtime(info: dict[str, Any]) -> float | None:
    value = info.get("LastModified") or info.get("last_modified") or info.get("mtime")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def object_size(info: dict[str, Any]) -> int:
    return int(info.get("size", info.get("Size", 0)) or 0)


def download(
    fs: Any, remote: str, local: Path, info: dict[str, Any], retries: int, backoff: float
) -> bool:
    """Fetch one object unless a complete copy is there; returns True when downloaded."""
    size = object_size(info)
    if local.is_file() and local.stat().st_size == size:
        return False
    local.parent.mkdir(parents=True, exist_ok=True)

    def fetch() -> None:
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name[:40]}.", suffix=".part")
        try:
            apply_file_mode(fd)
        finally:
            os.close(fd)
        try:
            fs.get_file(remote, tmp)
            got = Path(tmp).stat().st_size
            if got != size:
                raise OSError(f"short download: {got} of {size} bytes")
            mtime = object_mtime(info)
            if mtime is not None:
                os.utime(tmp, (mtime, mtime))
            Path(tmp).replace(local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    with_retries(fetch, f"download s3://{remote}", retries, backoff)
    return True
