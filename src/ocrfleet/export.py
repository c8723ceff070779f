"""`ocrfleet export`: a run's ledgers (every shard, local or s3://) → Parquet or JSONL shards.

The ledgers are the source of truth; the export is derived from them, incrementally. DEST
holds numbered data files, `_manifest.json` (files, rows, schema version, source runs, the
options used) and `.index.json.gz` (document id → its file and fingerprint). Re-running the
export rewrites only what changed, document by document:

- a document is new, or its fingerprint changed (pages finished, failures retried): its rows
  are written to a new file;
- a file that held a changed (or removed) document is dropped, and its unchanged documents are
  rewritten along with the changed ones: no row is ever in two files;
- every other file stays as it is.

Commit order: new files under temporary names → index → dropped files removed → new files
renamed into place → manifest. A crash at any point leaves DEST with no duplicate rows once
the next export has run: files the manifest does not list are removed, and an index that does
not match the manifest means a full re-export. With different options (level, format,
--where, --complete-only) or another schema version, the whole export is rewritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError
from .export_files import (
    DATA_FILE,
    EXTENSIONS,
    FORMATS,
    LEVELS,
    PREFIXES,
    DataFile,
    RollingWriter,
    temp_path,
)
from .export_filter import Filter, Subject, parse_where, subject
from .export_schema import (
    EXPORT_SCHEMA_VERSION,
    document_row,
    document_schema,
    page_rows,
    page_schema,
    require_pyarrow,
)
from .export_source import DocMeta, LedgerReader, PageMeta, find_sources
from .storage import is_remote
from .writers import atomic_write_bytes, write_json

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
# Hidden: `datasets` reads every non-hidden file of a directory it infers as JSON.
INDEX = ".index.json.gz"
LOCK = ".ocrfleet-export.lock"
DEFAULT_ROWS_PER_FILE = 10_000
COMPLETE_PAGES = frozenset({"done", "blank", "truncated"})
# Temporary files of ours (data files, and atomic writes of the bookkeeping files): the only
# hidden files an export removes from DEST.
STALE_TEMP = re.compile(
    r"^\.(?:(documents|pages)-\d+\.(parquet|jsonl\.gz)|(_manifest\.json|\.index\.json\.gz|README\.md)\..+)\.tmp$"
)


@dataclass(frozen=True)
class ExportOptions:
    outputs: tuple[str, ...]
    dest: Path
    format: str = "parquet"
    level: str = "document"
    rows_per_file: int = DEFAULT_ROWS_PER_FILE
    where: str | None = None
    complete_only: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r}: choose one of {', '.join(FORMATS)}")
        if self.level not in LEVELS:
            raise ConfigError(f"--level {self.level!r}: choose one of {', '.join(LEVELS)}")
        if self.rows_per_file < 1:
            raise ConfigError("--rows-per-file must be at least 1")
        if is_remote(str(self.dest)):
            raise ConfigError(f"--to {self.dest}: export to a local directory, then upload it")
        parse_where(self.where)  # a bad filter fails before anything is read

    def compatibility(self) -> dict[str, Any]:
        """What must be equal for a previous export's files to be kept."""
        return {
            "schema_version": EXPORT_SCHEMA_VERSION,
            "level": self.level,
            "format": self.format,
            "where": (self.where or "").strip() or None,
            "complete_only": self.complete_only,
        }


@dataclass(frozen=True)
class ExportResult:
    dest: Path
    manifest: Path
    files: int
    rows: int
    documents: int
    added: int  # documents exported for the first time
    replaced: int  # documents whose content changed since the last export
    moved: int  # unchanged documents rewritten because they shared a file with a changed one
    removed: int  # documents exported before and no longer selected
    unchanged: int
    unfinished: int  # documents with pages still to do (not exported yet)
    left_out: int  # documents excluded by --where or --complete-only


@dataclass
class _Previous:
    files: dict[str, DataFile] = field(default_factory=dict)
    index: dict[str, tuple[str, str]] = field(default_factory=dict)  # doc → (file, fingerprint)
    next_number: int = 0


@dataclass
class _Selection:
    fingerprints: dict[str, str] = field(default_factory=dict)
    unfinished: int = 0
    left_out: int = 0


def export(options: ExportOptions) -> ExportResult:
    """Export the ledgers of `options.outputs` into `options.dest` (see the module doc)."""
    where = parse_where(options.where)
    schema = _schema(options)
    options.dest.mkdir(parents=True, exist_ok=True)
    with _locked(options.dest), tempfile.TemporaryDirectory(prefix="ocrfleet-export-") as tmp:
        readers: list[LedgerReader] = []
        try:
            for source in find_sources(options.outputs, Path(tmp)):
                readers.append(LedgerReader(source))
            return _export(options, where, schema, readers)
        finally:
            for reader in readers:
                reader.close()


def _schema(options: ExportOptions) -> Any:
    if options.format != "parquet":
        return None
    pa = require_pyarrow()
    return document_schema(pa) if options.level == "document" else page_schema(pa)


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    with open(dest / LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{dest}: another ocrfleet export is writing there") from None
        yield


def _export(
    options: ExportOptions, where: Filter | None, schema: Any, readers: list[LedgerReader]
) -> ExportResult:
    dest = options.dest
    for stale in dest.glob(".*.tmp"):  # left by an export that was killed
        if STALE_TEMP.match(stale.name):
            stale.unlink(missing_ok=True)
    previous = _load_previous(dest, options)
    winners = _winners(readers)
    selection = _select(options, where, readers, winners)

    current = selection.fingerprints
    live = {name for name in previous.files if (dest / name).is_file()}
    changed = {
        doc
        for doc, fp in current.items()
        if doc not in previous.index
        or previous.index[doc][1] != fp
        or previous.index[doc][0] not in live
    }
    removed = {doc for doc in previous.index if doc not in current}
    dirty = {previous.index[doc][0] for doc in changed | removed if doc in previous.index}
    dirty |= set(previous.files) - live
    moved = {doc for doc in current if doc not in changed and previous.index[doc][0] in dirty}
    write = changed | moved

    writer = RollingWriter(
        dest, options.level, options.format, options.rows_per_file, previous.next_number, schema
    )
    index = {doc: entry for doc, entry in previous.index.items() if doc in current}
    try:
        if write:
            for position, reader in enumerate(readers):
                for doc in reader.documents():
                    if doc.doc_id in write and winners[doc.doc_id] == position:
                        rows = _rows(options, where, reader, doc)
                        index[doc.doc_id] = (writer.add(rows), current[doc.doc_id])
        new_files = writer.close()
    except BaseException:
        writer.abort()
        raise
    files = {name: f for name, f in previous.files.items() if name in live and name not in dirty}
    files.update({f.path: f for f in new_files})
    _commit(dest, files, index, new_files)
    manifest_stats = {
        "added": sum(1 for d in changed if d not in previous.index),
        "replaced": sum(1 for d in changed if d in previous.index),
        "moved": len(moved),
        "removed": len(removed),
        "unchanged": len(current) - len(write),
        "unfinished": selection.unfinished,
        "left_out": selection.left_out,
    }
    _write_manifest(dest, options, readers, files, index, writer.next_number, manifest_stats)
    return ExportResult(
        dest=dest,
        manifest=dest / MANIFEST,
        files=len(files),
        rows=sum(f.rows for f in files.values()),
        documents=len(index),
        **manifest_stats,
    )


def _winners(readers: list[LedgerReader]) -> dict[str, int]:
    """A document in two ledgers (two runs' OUTs) is taken from the one that finished more of
    its pages, then from the one that changed it last."""
    best: dict[str, tuple[tuple[int, float], int]] = {}
    for position, reader in enumerate(readers):
        for doc_id, progress in reader.finished_pages().items():
            if doc_id not in best or progress > best[doc_id][0]:
                best[doc_id] = (progress, position)
    return {doc_id: position for doc_id, (_, position) in best.items()}


def _doc_subject(doc: DocMeta) -> Subject:
    pages = doc.page_meta
    return subject(
        status=doc.status,
        doc_status=doc.status,
        page_status=[p.status for p in pages],
        route=[p.route for p in pages if p.route],
        flag=[f for p in pages for f in p.quality_flags],
        engine=[p.engine for p in pages if p.engine],
    )


def _page_subject(doc: DocMeta, page: PageMeta) -> Subject:
    return subject(
        status=page.status,
        page_status=page.status,
        doc_status=doc.status,
        route=page.route,
        flag=list(page.quality_flags),
        engine=page.engine,
    )


def _kept_pages(doc: DocMeta, where: Filter | None) -> set[int]:
    return {
        p.page
        for p in doc.page_meta
        if p.status != "pending" and (where is None or where(_page_subject(doc, p)))
    }


def _select(
    options: ExportOptions,
    where: Filter | None,
    readers: list[LedgerReader],
    winners: dict[str, int],
) -> _Selection:
    """The documents this export holds, with their fingerprints."""
    chosen = _Selection()
    for position, reader in enumerate(readers):
        for doc in reader.documents():
            if winners[doc.doc_id] != position:
                continue
            status = doc.status
            if options.level == "document" and status == "pending":
                chosen.unfinished += 1
            elif options.complete_only and not _complete(doc):
                chosen.unfinished += status == "pending"
                chosen.left_out += status != "pending"
            elif options.level == "document" and where is not None and not where(_doc_subject(doc)):
                chosen.left_out += 1
            elif options.level == "page" and not _kept_pages(doc, where):
                finished = any(p.status != "pending" for p in doc.page_meta)
                chosen.left_out += finished
                chosen.unfinished += not finished
            else:
                chosen.fingerprints[doc.doc_id] = doc.fingerprint()
    return chosen


def _complete(doc: DocMeta) -> bool:
    """Every page done, blank or truncated (not failed, not waiting for anything)."""
    return doc.status == "done" and all(p.status in COMPLETE_PAGES for p in doc.page_meta)


def _rows(
    options: ExportOptions, where: Filter | None, reader: LedgerReader, doc: DocMeta
) -> list[dict[str, Any]]:
    stored = reader.stored_pages(doc.doc_id)
    if options.level == "document":
        return [document_row(doc, stored, reader.source)]
    return page_rows(doc, stored, reader.source, _kept_pages(doc, where))


def _load_previous(dest: Path, options: ExportOptions) -> _Previous:
    on_disk = [p.name for p in dest.iterdir() if DATA_FILE.match(p.name)]
    numbers = [int(name.split("-", 1)[1].split(".", 1)[0]) for name in on_disk]
    fresh = _Previous(next_number=max(numbers, default=-1) + 1)
    try:
        manifest = json.loads((dest / MANIFEST).read_text("utf-8"))
    except FileNotFoundError:
        return fresh
    except ValueError:
        log.warning("%s: unreadable; exporting everything again", dest / MANIFEST)
        return fresh
    # File numbers never go back, even across a full re-export: a name always means one file.
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        fresh.next_number = max(fresh.next_number, int(manifest.get("next_file", 0)))
    if manifest.get("options") != options.compatibility():
        log.info("%s: exported with other options; exporting everything again", dest)
        return fresh
    try:
        raw = (dest / INDEX).read_bytes()
        if hashlib.sha256(raw).hexdigest() != manifest["index"]["sha256"]:
            raise ValueError("index does not match the manifest")
        entries = json.loads(gzip.decompress(raw))["documents"]
        files = {f["path"]: DataFile(**f) for f in manifest["files"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: %s; exporting everything again", dest / INDEX, exc)
        return fresh
    index = {doc: (entry[0], entry[1]) for doc, entry in entries.items()}
    return _Previous(files, index, fresh.next_number)


def _commit(
    dest: Path,
    files: dict[str, DataFile],
    index: dict[str, tuple[str, str]],
    new_files: list[DataFile],
) -> None:
    """Index first, then old files out and new ones in (see the module doc for why)."""
    payload = {"documents": {doc: list(entry) for doc, entry in sorted(index.items())}}
    atomic_write_bytes(dest / INDEX, gzip.compress(json.dumps(payload).encode(), mtime=0))
    for path in dest.iterdir():
        if DATA_FILE.match(path.name) and path.name not in files:
            path.unlink()
    for new in new_files:
        temp_path(dest, new.path).replace(dest / new.path)
    (dest / INDEX).chmod(0o644)  # a dataset is for others to read (temp files are 0600)


def _write_manifest(
    dest: Path,
    options: ExportOptions,
    readers: list[LedgerReader],
    files: dict[str, DataFile],
    index: dict[str, tuple[str, str]],
    next_number: int,
    stats: dict[str, int],
) -> None:
    index_sha = hashlib.sha256((dest / INDEX).read_bytes()).hexdigest()
    sources = [
        {
            "output": r.source.output,
            "ledger": r.source.name,
            "runs": [run.run_id for run in r.runs],
        }
        for r in readers
    ]
    write_json(
        dest / MANIFEST,
        {
            "format": "ocrfleet-export",
            "schema_version": EXPORT_SCHEMA_VERSION,
            "ocrfleet_version": __version__,
            "level": options.level,
            "file_format": options.format,
            "compression": "zstd" if options.format == "parquet" else "gzip",
            "options": options.compatibility(),
            "rows_per_file": options.rows_per_file,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": [
                {"path": f.path, "rows": f.rows, "documents": f.documents, "bytes": f.bytes}
                for f in sorted(files.values(), key=lambda f: f.path)
            ],
            "rows": sum(f.rows for f in files.values()),
            "documents": len(index),
            "sources": sources,
            "source_runs": sorted({run for s in sources for run in s["runs"]}),
            "last_export": stats,
            "next_file": next_number,
            "index": {"path": INDEX, "sha256": index_sha},
        },
    )
    (dest / MANIFEST).chmod(0o644)
    _write_card(dest, options, sum(f.rows for f in files.values()))


CARD = "README.md"
CARD_MARK = (
    "<!-- written by ocrfleet export: it rewrites this file; remove this line to keep yours -->"
)


def _write_card(dest: Path, options: ExportOptions, rows: int) -> None:
    """JSONL only: a dataset card whose `configs` name the data files, so `load_dataset(DEST)`
    does not read `_manifest.json` as data (it infers JSON from both). Parquet needs none (and
    a README.md would stop pyarrow reading the directory): a card of ours is removed then."""
    card = dest / CARD
    if card.exists() and CARD_MARK not in card.read_text("utf-8", errors="replace"):
        return  # the user's own card
    if options.format != "jsonl":
        card.unlink(missing_ok=True)
        return
    pattern = f"{PREFIXES[options.level]}-*{EXTENSIONS[options.format]}"
    text = (
        f'---\nconfigs:\n- config_name: default\n  data_files: "{pattern}"\n---\n{CARD_MARK}\n\n'
        f"# ocrfleet export\n\n{rows} {options.level} row(s) in `{pattern}`, export schema "
        f"version {EXPORT_SCHEMA_VERSION} (ocrfleet {__version__}; see docs/export-schema.md in "
        "ocrfleet). Files, sources and runs: `_manifest.json`.\n"
    )
    atomic_write_bytes(card, text.encode("utf-8"))
    card.chmod(0o644)
