"""s3:// inputs and outputs: stage PDFs onto local disk (here), upload outputs and checkpoint
the ledger (output_sync.py), through one S3 client (s3_client.py).

The pipeline only ever reads and writes local files: rendering needs random access to a PDF,
and the ledger is SQLite, which must never live on a network filesystem. So remote storage is
an edge of the run, not a layer under it.

Inputs: `stage_inputs` mirrors s3://bucket/prefix into `cache_dir/bucket/prefix` (keys
become paths, so outputs mirror the keys) and returns local paths for the planner. A file
already there with the remote size is not downloaded again; each download goes to a temp
name and is renamed when complete, and gets the object's LastModified as its mtime, so the
ledger's probe cache (path, size, mtime) still hits on a re-stage or a new instance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from .s3_client import CONCURRENCY, download, make_filesystem, with_retries
from .s3uri import is_remote as is_remote  # re-exported: callers import it from here
from .s3uri import split_uri as split_uri

log = logging.getLogger(__name__)

GLOB_CHARS = frozenset("*?[")


def _safe_rel(key: str) -> PurePosixPath | None:
    """A key as a relative path that cannot leave the cache directory, or None."""
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    return PurePosixPath(*parts)


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
                pool.map(lambda job: download(fs, job[0], job[1], job[2], retries, backoff), jobs)
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
