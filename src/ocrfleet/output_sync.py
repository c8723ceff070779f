"""s3:// outputs: upload the output directory and checkpoint the ledger.

- outputs: `OutputSync.upload` puts new or changed files (size + mtime, a manifest kept in
  the output directory) under the remote prefix. S3 makes an object visible only when its
  upload completes, and the writers only ever rename complete files into place, so a reader
  of the bucket never sees half a file. The manifest records only finished uploads: an
  interrupted upload is resumed by calling `upload()` again.
- ledger: `checkpoint_ledger` uploads a consistent copy (SQLite's backup API) to
  <remote>/ledger/<name>; `restore_ledger` brings it back on a replacement instance, which
  then resumes where the checkpoint was taken (pages finished later are redone).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .layout import (
    CHECKPOINT_PREFIX,
    CHECKPOINT_SUFFIX,
    REMOTE_LEDGER_DIR,
    OutputLayout,
    is_ledger_file,
)
from .s3_client import (
    CONCURRENCY,
    download,
    make_filesystem,
    object_mtime,
    object_size,
    with_retries,
)
from .s3uri import SCHEME, split_uri

log = logging.getLogger(__name__)

# Save the manifest this often during a long upload, so a kill -9 loses little of it.
MANIFEST_EVERY_FILES = 200
MANIFEST_EVERY_SECONDS = 30.0


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
            files[rel] = {"size": object_size(info), "remote_mtime": object_mtime(info)}
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

    def remote_path(self, rel: str) -> str:
        """The bucket path of the output file `rel` (relative to the output directory)."""
        return self._remote_path(rel)

    def forget(self, rels: Iterable[str]) -> None:
        """Drop manifest entries of files no longer in the bucket (set aside remotely)."""
        files = self._load_manifest()
        for rel in rels:
            files.pop(rel, None)
        self._save_manifest(files)

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
        download(self.fs, remote, ledger_path, info, self.retries, self.backoff)
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
