"""What `ocrfleet export` reads: every shard ledger of one or more output directories.

A local OUT holds its ledgers (`ocrfleet*.sqlite`); an s3:// OUT holds the checkpoints the run
uploads (`<prefix>/ledger/ocrfleet*.sqlite`, see output_sync.OutputSync), which are downloaded to
a scratch directory first. Each ledger is opened read-only inside one read transaction, so
an export taken while a run is writing sees one consistent snapshot of every shard, and never
takes a write lock from the workers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .config import flat_settings
from .errors import ConfigError
from .layout import LEDGER_GLOB, REMOTE_LEDGER_DIR
from .ledger_file import reader_problem
from .ledger_rows import StoredPage, read_stored_pages
from .s3_client import make_filesystem, with_retries
from .status import find_ledgers
from .storage import is_remote, split_uri

RETRIES = 5  # transient S3 errors, as for a run's uploads


@dataclass(frozen=True)
class LedgerSource:
    output: str  # the OUT as the user gave it (a directory or an s3:// URI)
    name: str  # the ledger's file name
    path: Path  # the local file read (a downloaded copy for s3://)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started_at: float
    engine: str | None
    model: str | None
    settings: str  # the run's configuration, as JSON


@dataclass(frozen=True)
class PageMeta:
    """A page as the ledger knows it, without its text."""

    page: int
    status: str
    route: str | None
    engine: str | None
    quality_flags: tuple[str, ...]
    prompt_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None
    error: str | None
    updated_at: float | None


@dataclass(frozen=True)
class DocMeta:
    doc_id: str
    sources: tuple[str, ...]  # the first is the path the ledger registered it under
    rel: str
    pages: int
    ledger_status: str
    error: str | None
    finished_at: float | None
    page_meta: tuple[PageMeta, ...]
    run: RunInfo | None

    @property
    def status(self) -> str:
        """done, failed, or pending (a page still to do): computed from the pages, so an
        export does not wait for the document's files to be assembled."""
        if self.error and not self.page_meta:
            return "failed"
        if any(p.status == "pending" for p in self.page_meta):
            return "pending"
        return "failed" if any(p.status == "failed" for p in self.page_meta) else "done"

    def fingerprint(self) -> str:
        """Changes whenever anything exported for this document would change."""
        state = [
            self.doc_id,
            self.sources,
            self.rel,
            self.pages,
            self.status,
            self.error,
            self.run.run_id if self.run else None,
            [(p.page, p.status, p.updated_at, p.error) for p in self.page_meta],
        ]
        return hashlib.sha256(json.dumps(state, ensure_ascii=False).encode()).hexdigest()[:32]


def _route(value: str | None) -> str | None:
    """`route` in a page record: a verdict string, or an object holding one."""
    if value is None or not value.startswith("{"):
        return value
    try:
        data = json.loads(value)
    except ValueError:
        return None
    verdict = data.get("route", data.get("verdict")) if isinstance(data, dict) else None
    return verdict if isinstance(verdict, str) else None


def _flags(value: str | None) -> tuple[str, ...]:
    try:
        flags = json.loads(value) if value else []
    except ValueError:
        return ()
    return tuple(str(f) for f in flags) if isinstance(flags, list) else ()


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


class LedgerReader:
    """One ledger, read-only, in a single read transaction (one snapshot) until closed."""

    def __init__(self, source: LedgerSource) -> None:
        self.source = source
        problem = reader_problem(source.path)
        if problem is not None:
            raise ConfigError(f"{source.path}: {problem}")
        uri = f"file:{quote(str(source.path.resolve()))}?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
            self._db.row_factory = sqlite3.Row
            self._db.execute("BEGIN")
            self.runs = self._runs()
            self.aliases = self._aliases()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{source.path} is not a readable ledger: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def _runs(self) -> list[RunInfo]:
        runs: list[RunInfo] = []
        for row in self._db.execute("SELECT run_id, started_at, config FROM runs ORDER BY 2"):
            try:
                engine = json.loads(row["config"]).get("engine", {})
            except ValueError:
                engine = {}
            runs.append(
                RunInfo(
                    row["run_id"],
                    float(row["started_at"]),
                    engine.get("name"),
                    engine.get("model"),
                    flat_settings(row["config"]),
                )
            )
        return runs

    def _aliases(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        # Paths with the same bytes: `aliases` (older ledgers) and `duplicates` (each with
        # its own outputs), whichever the ledger has.
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        query = "SELECT doc_id, source FROM aliases"
        if "duplicates" in tables:
            query += " UNION SELECT doc_id, source FROM duplicates"
        for row in self._db.execute(query + " ORDER BY source"):
            found.setdefault(row[0], []).append(row[1])
        return found

    def finished_pages(self) -> dict[str, tuple[int, float]]:
        """doc id → (finished pages, last change): which copy wins when two ledgers hold one."""
        rows = self._db.execute(
            "SELECT d.doc_id, COUNT(p.page) - COALESCE(SUM(p.status = 'pending'), 0), "
            "MAX(COALESCE(p.updated_at, d.finished_at, d.added_at)) "
            "FROM documents d LEFT JOIN pages p ON p.doc_id = d.doc_id GROUP BY d.doc_id"
        )
        return {r[0]: (int(r[1]), float(r[2] or 0.0)) for r in rows}

    def run_for(self, at: float | None) -> RunInfo | None:
        """The run that was going on at `at`: the last one started before it."""
        if not self.runs:
            return None
        if at is None:
            return self.runs[-1]
        chosen = self.runs[0]
        for run in self.runs:
            if run.started_at <= at:
                chosen = run
        return chosen

    def documents(self) -> Iterator[DocMeta]:
        """Every document in ledger order, with its pages' metadata (no text)."""
        pages = self._db.execute(
            "SELECT p.doc_id, p.page, p.status, p.error, p.updated_at, "
            "json_extract(t.record, '$.route') AS route, "
            "json_extract(t.record, '$.engine') AS engine, "
            "json_extract(t.record, '$.quality_flags') AS flags, "
            "json_extract(t.record, '$.prompt_tokens') AS prompt_tokens, "
            "json_extract(t.record, '$.output_tokens') AS output_tokens, "
            "json_extract(t.record, '$.finish_reason') AS finish_reason "
            "FROM pages p LEFT JOIN page_text t ON t.doc_id = p.doc_id AND t.page = p.page "
            "ORDER BY p.doc_seq, p.page"
        )
        pending_row = pages.fetchone()
        docs = self._db.cursor().execute(
            "SELECT doc_id, source, rel, pages, status, error, finished_at "
            "FROM documents ORDER BY seq"
        )
        for doc in docs:
            metas: list[PageMeta] = []
            while pending_row is not None and pending_row["doc_id"] == doc["doc_id"]:
                r = pending_row
                metas.append(
                    PageMeta(
                        page=int(r["page"]),
                        status=r["status"],
                        route=_route(r["route"]),
                        engine=r["engine"],
                        quality_flags=_flags(r["flags"]),
                        prompt_tokens=_int(r["prompt_tokens"]),
                        output_tokens=_int(r["output_tokens"]),
                        finish_reason=r["finish_reason"],
                        error=r["error"],
                        updated_at=r["updated_at"],
                    )
                )
                pending_row = pages.fetchone()
            extra = [s for s in self.aliases.get(doc["doc_id"], []) if s != doc["source"]]
            last = max((p.updated_at for p in metas if p.updated_at), default=None)
            yield DocMeta(
                doc_id=doc["doc_id"],
                sources=(doc["source"], *extra),
                rel=doc["rel"],
                pages=int(doc["pages"]),
                ledger_status=doc["status"],
                error=doc["error"],
                finished_at=doc["finished_at"],
                page_meta=tuple(metas),
                run=self.run_for(last if last is not None else doc["finished_at"]),
            )

    def stored_pages(self, doc_id: str) -> list[StoredPage]:
        return read_stored_pages(self._db, doc_id)


def find_sources(outputs: Sequence[str], scratch: Path) -> list[LedgerSource]:
    """Every shard ledger of the given output directories (s3:// ones downloaded to scratch)."""
    if not outputs:
        raise ConfigError("export needs at least one output directory")
    found: list[LedgerSource] = []
    for index, output in enumerate(outputs):
        if is_remote(output):
            found += _remote_ledgers(output, scratch / str(index))
        else:
            found += [LedgerSource(output, p.name, p) for p in find_ledgers(Path(output))]
    return found


def _remote_ledgers(output: str, scratch: Path) -> list[LedgerSource]:
    from fnmatch import fnmatch

    bucket, key = split_uri(output)
    root = f"{bucket}/{key}" if key else bucket
    fs = make_filesystem()
    try:
        names = sorted(
            with_retries(lambda: fs.find(f"{root}/{REMOTE_LEDGER_DIR}"), f"list {output}", RETRIES)
        )
    except FileNotFoundError:
        names = []
    ledgers = [n for n in names if fnmatch(n.rsplit("/", 1)[-1], LEDGER_GLOB)]
    if not ledgers:
        raise ConfigError(
            f"no ocrfleet ledger checkpoint in {output}/{REMOTE_LEDGER_DIR}/ (expected "
            f"{LEDGER_GLOB}, uploaded by `ocrfleet run -o {output}` or --sync-to)"
        )
    scratch.mkdir(parents=True, exist_ok=True)
    found: list[LedgerSource] = []
    for name in ledgers:
        local = scratch / name.rsplit("/", 1)[-1]
        fetch = functools.partial(fs.get_file, name, str(local))
        with_retries(fetch, f"download s3://{name}", RETRIES)
        found.append(LedgerSource(output, local.name, local))
    return found
