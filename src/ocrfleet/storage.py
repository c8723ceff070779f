"""s3:// inputs and outputs: stage PDFs onto local disk, upload outputs, checkpoint the ledger.

The pipeline only ever reads and writes local files: rendering needs random access to a PDF,
and the ledger is SQLite, which must never live on a network filesystem. So remote storage is
an edge of the run, not a layer under it:

- inputs: `stage_inputs` mirrors s3://bucket/prefix into `cache_dir/bucket/prefix` (keys
  become paths, so outputs mirror the keys) and returns local paths for the planner. A file
  already there with the remote size is not downloaded again; each download goes to a temp
  name and is renamed when complete, and gets the object's LastModified as its mtime, so the
  ledger's probe cache (path, size, mtime) still hits on a re-stage or a new instance.
- outputs: `OutputSync.upload` puts new or changed files (size + mtime, a manifest kept in
  the output directory) under the remote prefix. S3 makes an object visible only when its
  upload completes, and the writers only ever rename complete files into place, so a reader
  of the bucket never sees half a file. The manifest records only finished uploads: an
  interrupted upload is resumed by calling `upload()` again.
- ledger: `checkpoint_ledger` uploads a consistent copy (SQLite's backup API) to
  <remote>/ledger/<name>; `restore_ledger` brings it back on a replacement instance, which
  then resumes where the checkpoint was taken (pages finished later are redone).

s3fs is imported lazily (the `s3` extra). The endpoint follows botocore's standard settings
(`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the config file), so S3-compatible stores and
local test servers need no option of ours.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from .errors import ConfigError
from .filemode import apply_file_mode
from .layout import (
    CHECKPOINT_PREFIX,
    CHECKPOINT_SUFFIX,
    REMOTE_LEDGER_DIR,
    OutputLayout,
    is_ledger_file,
)
from .s3uri import SCHEME
from .s3uri import is_remote as is_remote  # re-exported: callers import it from here
from .s3uri import split_uri as split_uri

log = logging.getLogger(__name__)

T = TypeVar("T")
GLOB_CHARS = frozenset("*?[")
CONCURRENCY = 8
# Save the manifest this often during a long upload, so a kill -9 loses little of it.
MANIFEST_EVERY_FILES = 200
MANIFEST_EVERY_SECONDS = 30.0
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


def _safe_rel(key: str) -> PurePosixPath | None:
    """A key as a relative path that cannot leave the cache directory, or None."""
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    return PurePosixPath(*parts)


def _mtime(info: dict[str, Any]) -> float | None:
    value = info.get("LastModified") or info.get("last_modified") or info.get("mtime")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def _size(info: dict[str, Any]) -> int:
    return int(info.get("size", info.get("Size", 0)) or 0)


def _download(
    fs: Any, remote: str, local: Path, info: dict[str, Any], retries: int, backoff: float
) -> bool:
    """Fetch one object unless a complete copy is there; returns True when downloaded."""
    size = _size(info)
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
            mtime = _mtime(info)
            if mtime is not None:
                os.utime(tmp, (mtime, mtime))
            Path(tmp).replace(local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    with_retries(fetch, f"download s3://{remote}", retries, backoff)
    return True


def _find_pdfs(fs: Any, path: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = fs.find(path, detail=True)
    return {
        name: info
        for name, info in found.items()
        if name.lower().endswith(".pdf") and info.get("type", "file") == "file"
    }


def stage_inputs(
    uris: Sequence[str],
    cache_dir: Path,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    fs: Any = None,
) -> list[str]:
    """Local inputs for the planner: local paths as given; each s3:// input mirrored under
    `cache_dir/<bucket>/<key>` and replaced by its local counterpart (a directory for a
    prefix, a file for a key, a glob for a glob). An s3:// input that matches nothing is
    returned as given, so the planner reports it as a missing input."""
    if not any(is_remote(u) for u in uris):
        return list(uris)
    fs = fs if fs is not None else make_filesystem()
    staged: list[str] = []
    for uri in uris:
        if not is_remote(uri):
            staged.append(uri)
            continue
        bucket, key = split_uri(uri)
        objects, local = _list_input(fs, bucket, key, retries, backoff)
        if not objects:
            log.error("%s: no PDF there (or no access)", uri)
            staged.append(uri)
            continue
        root = cache_dir / bucket
        jobs: list[tuple[str, Path, dict[str, Any]]] = []
        for name, info in sorted(objects.items()):
            rel = _safe_rel(name.partition("/")[2])
            if rel is None:
                log.warning("s3://%s: a key that is not a safe path; skipped", name)
                continue
            jobs.append((name, root / rel, info))
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            fetched = sum(
                pool.map(lambda job: _download(fs, job[0], job[1], job[2], retries, backoff), jobs)
            )
        log.info(
            "%s: %d PDF(s) staged in %s (%d downloaded, %d already there)",
            uri,
            len(jobs),
            root,
            fetched,
            len(jobs) - fetched,
        )
        staged.append(str(local(root)))
    return staged


def _list_input(
    fs: Any, bucket: str, key: str, retries: int, backoff: float
) -> tuple[dict[str, dict[str, Any]], Callable[[Path], Path | str]]:
    """The PDFs an input names, and how to turn the staging root into the planner's input."""
    path = f"{bucket}/{key}" if key else bucket
    if any(ch in key for ch in GLOB_CHARS):
        matches: dict[str, dict[str, Any]] = with_retries(
            lambda: fs.glob(path, detail=True), f"list s3://{path}", retries, backoff
        )
        pdfs = {
            n: i
            for n, i in matches.items()
            if n.lower().endswith(".pdf") and i.get("type", "file") == "file"
        }
        return pdfs, lambda root: str(root / key)
    if key.lower().endswith(".pdf"):
        try:
            info: dict[str, Any] = with_retries(
                lambda: fs.info(path), f"stat s3://{path}", retries, backoff
            )
        except FileNotFoundError:
            info = {}
        if info.get("type") == "file":
            return {path: info}, lambda root: root / key
    try:
        pdfs = with_retries(lambda: _find_pdfs(fs, path), f"list s3://{path}", retries, backoff)
    except FileNotFoundError:
        pdfs = {}
    return pdfs, lambda root: root / key if key else root


class OutputSync:
    """Uploads an output directory to s3://bucket/prefix, file by file, resumably."""

    def __init__(
        self,
        local_dir: Path,
        remote: str,
        *,
        retries: int = 5,
        fs: Any = None,
        backoff: float = 1.0,
        concurrency: int = CONCURRENCY,
    ) -> None:
        bucket, key = split_uri(remote)
        self.local_dir = local_dir
        self.remote = f"{SCHEME}{bucket}/{key}" if key else f"{SCHEME}{bucket}"
        self._root = f"{bucket}/{key}" if key else bucket
        self.retries = retries
        self.backoff = backoff
        self.concurrency = max(1, concurrency)
        self._fs = fs
        self.manifest_path = OutputLayout(local_dir).upload_manifest

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = make_filesystem()
        return self._fs

    def _remote_path(self, rel: str) -> str:
        return f"{self._root}/{rel}"

    # -- the manifest: rel path -> [size, mtime_ns] of the local file when it was uploaded,
    # or {"size", "remote_mtime"} for entries rebuilt from a remote listing.

    def _load_manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            if data.get("remote") == self.remote and isinstance(data.get("files"), dict):
                return dict(data["files"])
        except (OSError, ValueError):
            pass
        return self._manifest_from_remote()

    def _manifest_from_remote(self) -> dict[str, Any]:
        """What the bucket already holds: a new instance must not upload it all again."""
        self.fs.invalidate_cache()
        try:
            listing: dict[str, dict[str, Any]] = with_retries(
                lambda: self.fs.find(self._root, detail=True),
                f"list {self.remote}",
                self.retries,
                self.backoff,
            )
        except FileNotFoundError:
            listing = {}
        files: dict[str, Any] = {}
        for name, info in listing.items():
            if info.get("type", "file") != "file" or not name.startswith(self._root + "/"):
                continue
            rel = name[len(self._root) + 1 :]
            if rel.split("/", 1)[0] == REMOTE_LEDGER_DIR:
                continue
            files[rel] = {"size": _size(info), "remote_mtime": _mtime(info)}
        return files

    def _save_manifest(self, files: dict[str, Any]) -> None:
        from .writers import atomic_write_text

        data = {"remote": self.remote, "files": files}
        atomic_write_text(self.manifest_path, json.dumps(data, ensure_ascii=False, indent=0))

    @staticmethod
    def _unchanged(entry: Any, st: os.stat_result) -> bool:
        if isinstance(entry, list) and len(entry) == 2:
            return bool(entry[0] == st.st_size and entry[1] == st.st_mtime_ns)
        if isinstance(entry, dict):
            remote_mtime = entry.get("remote_mtime")
            newer = remote_mtime is not None and st.st_mtime > float(remote_mtime)
            return bool(entry.get("size") == st.st_size and not newer)
        return False

    def _candidates(self, paths: Iterable[Path] | None) -> Iterator[str]:
        """Relative paths of the output files to consider: not the ledger (checkpointed on
        its own), not lock, temp or manifest files (hidden names at the top, or temp files
        the writers are still filling)."""
        if paths is None:
            found = (p for p in self.local_dir.rglob("*") if p.is_file())
        else:
            found = (p if p.is_absolute() else self.local_dir / p for p in paths)
        root = self.local_dir.resolve()
        for path in found:
            try:
                rel = path.resolve().relative_to(root)
            except ValueError:
                log.warning("%s is outside %s: not uploaded", path, self.local_dir)
                continue
            name = rel.name
            if rel.parts[0].startswith("."):
                continue
            if name.startswith(".") and name.endswith((".tmp", ".part")):
                continue
            if is_ledger_file(name):
                continue
            yield rel.as_posix()

    def upload(self, paths: Iterable[Path] | None = None) -> int:
        """Upload new and changed files (all of the output directory, or `paths`); returns
        how many were uploaded. Safe to call again after an interruption."""
        files = self._load_manifest()
        todo: list[tuple[str, os.stat_result]] = []
        for rel in sorted(set(self._candidates(paths))):
            try:
                st = (self.local_dir / rel).stat()
            except FileNotFoundError:  # replaced or removed since the scan
                continue
            if not self._unchanged(files.get(rel), st):
                todo.append((rel, st))
        if not todo:
            self._save_manifest(files)
            return 0
        uploaded = 0
        last_save = time.monotonic()

        def put(job: tuple[str, os.stat_result]) -> tuple[str, os.stat_result]:
            rel, st = job
            with_retries(
                lambda: self.fs.put_file(str(self.local_dir / rel), self._remote_path(rel)),
                f"upload {rel} to {self.remote}",
                self.retries,
                self.backoff,
            )
            # The stat taken before the upload: a file rewritten meanwhile is uploaded again
            # next time.
            return rel, st

        try:
            with ThreadPoolExecutor(self.concurrency) as pool:
                for rel, st in _completed(pool, put, todo):
                    files[rel] = [st.st_size, st.st_mtime_ns]
                    uploaded += 1
                    if (
                        uploaded % MANIFEST_EVERY_FILES == 0
                        or time.monotonic() - last_save > MANIFEST_EVERY_SECONDS
                    ):
                        self._save_manifest(files)
                        last_save = time.monotonic()
        finally:
            self._save_manifest(files)
        log.info("uploaded %d file(s) to %s", uploaded, self.remote)
        return uploaded

    def ledger_uri(self, ledger_path: Path) -> str:
        return f"{self.remote}/{REMOTE_LEDGER_DIR}/{ledger_path.name}"

    def checkpoint_ledger(self, ledger_path: Path) -> None:
        """Upload a consistent copy of the ledger, taken while workers keep writing to it."""
        snapshot = self.snapshot_ledger(ledger_path)
        try:
            self.publish_ledger(snapshot, ledger_path.name)
        finally:
            snapshot.unlink(missing_ok=True)

    def snapshot_ledger(self, ledger_path: Path) -> Path:
        """A consistent, self-contained copy of the ledger next to it (SQLite's backup API);
        the caller removes it. Taken before an upload and published after it, a checkpoint
        never calls done a document whose files are not in the bucket yet."""
        if not ledger_path.is_file():
            raise ConfigError(f"no ledger at {ledger_path} to checkpoint")
        fd, tmp = tempfile.mkstemp(
            dir=ledger_path.parent, prefix=CHECKPOINT_PREFIX, suffix=CHECKPOINT_SUFFIX
        )
        os.close(fd)
        try:
            source = sqlite3.connect(ledger_path, timeout=60)
            target = sqlite3.connect(tmp)
            try:
                with target:
                    source.backup(target)
                # A single self-contained file: no -wal to carry along.
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
                source.close()
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def publish_ledger(self, snapshot: Path, name: str) -> None:
        """Upload a snapshot as the ledger checkpoint `name`."""
        remote = self._remote_path(f"{REMOTE_LEDGER_DIR}/{name}")
        with_retries(
            lambda: self.fs.put_file(str(snapshot), remote),
            f"checkpoint {name} to {self.remote}",
            self.retries,
            self.backoff,
        )
        log.info("ledger checkpoint: %s/%s/%s", self.remote, REMOTE_LEDGER_DIR, name)

    def restore_ledger(self, ledger_path: Path) -> bool:
        """On a fresh instance: fetch the ledger checkpoint when there is no local ledger.
        Returns True when one was restored. A local ledger always wins."""
        if ledger_path.exists():
            return False
        remote = self._remote_path(f"{REMOTE_LEDGER_DIR}/{ledger_path.name}")
        self.fs.invalidate_cache()
        try:
            info: dict[str, Any] = with_retries(
                lambda: self.fs.info(remote), f"stat {remote}", self.retries, self.backoff
            )
        except FileNotFoundError:
            return False
        ledger_path.parent.mkdir(parents=True, exist_ok=True)
        # A -wal/-shm left by a ledger that is gone would be replayed into the restored one.
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{ledger_path}{suffix}").unlink(missing_ok=True)
        _download(self.fs, remote, ledger_path, info, self.retries, self.backoff)
        # What is uploaded already comes from the bucket's listing, not from a stale manifest.
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path.unlink()
        self._save_manifest(self._manifest_from_remote())
        log.info("restored the ledger from %s", self.ledger_uri(ledger_path))
        return True


def _completed(
    pool: ThreadPoolExecutor,
    fn: Callable[[tuple[str, os.stat_result]], tuple[str, os.stat_result]],
    jobs: Sequence[tuple[str, os.stat_result]],
) -> Iterator[tuple[str, os.stat_result]]:
    """Results as they finish; the first failure is raised after the others finished, so
    every upload that did complete is in the manifest."""
    from concurrent.futures import as_completed

    futures = [pool.submit(fn, job) for job in jobs]
    error: BaseException | None = None
    for future in as_completed(futures):
        try:
            yield future.result()
        except BaseException as exc:
            if error is None:
                error = exc
                for other in futures:
                    other.cancel()
    if error is not None:
        raise error
