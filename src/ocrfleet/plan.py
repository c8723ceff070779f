"""Planning: from inputs to documents registered in this shard's ledger.

Every shard plans the whole corpus the same way (discover, probe, name outputs, split), then
keeps its own documents (a document's shard is a function of its content id: it never moves).
Probes are cached in the ledger by (path, size, mtime, ctime, inode), so a resumed run does
not hash the corpus again, and a replaced file is always hashed again. Every input path ends
up in the plan: a document, a duplicate of one (outputs of its own), or rejected with a reason.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import (
    Duplicate,
    FileStat,
    cached_probes,
    ensure_probe_columns,
    reconcile,
    record_duplicates,
    record_files,
    record_listing,
    rename_documents,
    sibling_names,
    store_probes,
    taken_names,
)
from .config import PagePolicy, RunConfig
from .layout import shard_ledger_glob
from .ledger import Ledger
from .ledger_rows import NewDocument
from .names import assign_names, short_hash
from .shards import shard_of
from .sources import (
    UNREADABLE_PREFIX,
    Probe,
    SourceFile,
    discover,
    path_id,
    path_to_text,
    probe_all,
)
from .stale_outputs import set_aside

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputEntry:
    """One input path as planned: for the manifest under OUT."""

    source: str
    doc_id: str
    role: str  # "document", "duplicate" or "rejected"
    duplicate_of: str | None = None
    problem: str | None = None


@dataclass
class Plan:
    documents: list[NewDocument] = field(default_factory=list)  # this shard's
    corpus_documents: int = 0
    missing_inputs: list[str] = field(default_factory=list)
    new_documents: int = 0
    entries: list[InputEntry] = field(default_factory=list)  # this shard's input paths
    retired: int = 0
    moved: int = 0


def probe_sources(
    ledger: Ledger, files: list[SourceFile], workers: int
) -> tuple[dict[Path, Probe], dict[Path, FileStat]]:
    """Content id and page count of every file, from the cache when nothing about the file
    (size, mtime, ctime, inode) may have changed, else by hashing it again."""
    ensure_probe_columns(ledger)
    cache = cached_probes(ledger)
    probes: dict[Path, Probe] = {}
    stats: dict[Path, FileStat] = {}
    todo: list[str] = []
    for f in files:
        if f.problem is not None:  # never opened: a FIFO or /dev/zero would block or not end
            probes[f.path] = Probe(path_id(str(f.path)), 0, 0, f.problem)
            continue
        try:
            st = FileStat.of(f.path.stat())
        except OSError:
            todo.append(str(f.path))
            continue
        stats[f.path] = st
        hit = cache.get(path_to_text(str(f.path)))
        if hit is not None and hit.stat == st:
            probes[f.path] = Probe(
                doc_id=hit.doc_id, size=st.size, pages=hit.pages, error=hit.error
            )
        else:
            todo.append(str(f.path))
    if todo:
        log.info("probing %d PDF(s) (hash + page count) with %d processes", len(todo), workers)
        fresh = probe_all(todo, workers)
        rows = []
        for path_str, probe in fresh.items():
            path = Path(path_str)
            probes[path] = probe
            st_ = stats.get(path)
            # An unreadable file is probed again next time (the error may pass), not cached.
            if st_ is not None and not probe.doc_id.startswith(UNREADABLE_PREFIX):
                rows.append((path_to_text(path_str), st_, probe.doc_id, probe.pages, probe.error))
        store_probes(ledger, rows)
    return probes, stats


def _known_primaries(
    ledger: Ledger, files: list[SourceFile], probes: dict[Path, Probe], stored: dict[Path, str]
) -> dict[str, SourceFile]:
    by_path = {stored[f.path]: f for f in files}
    primaries: dict[str, SourceFile] = {}
    for row in ledger.query("SELECT doc_id, path FROM documents"):
        f = by_path.get(row[1])
        if f is not None and probes[f.path].doc_id == row[0]:
            primaries[row[0]] = f
    return primaries


@dataclass(frozen=True)
class PlanScope:
    """What the planner reads besides the page policy: the inputs, where staged s3:// inputs
    sit, the output directory (the other shards' ledgers) and this run's shard."""

    inputs: tuple[str, ...]
    staging_dir: Path
    output_dir: Path
    num_shards: int = 1
    shard_index: int = 0

    @classmethod
    def of(cls, config: RunConfig) -> PlanScope:
        fleet = config.fleet
        return cls(
            config.inputs,
            config.staging_dir,
            config.output_dir,
            fleet.num_shards,
            fleet.shard_index,
        )


def _siblings(scope: PlanScope, ledger: Ledger) -> list[Path]:
    if scope.num_shards == 1:
        return []
    pattern = shard_ledger_glob(scope.num_shards)
    return sorted(p for p in scope.output_dir.glob(pattern) if p != ledger.path)


def page_limit_error(probe: Probe, limit: int | None) -> str | None:
    if probe.error or limit is None or probe.pages <= limit:
        return probe.error
    return f"has {probe.pages} pages, over --max-pages-per-document {limit}"


def label_staged(files: list[SourceFile], stage_dir: Path) -> list[SourceFile]:
    """A PDF staged from s3://bucket/key sits at stage_dir/bucket/key: its `source` (the
    input as the user named it) is the URI again."""
    root = stage_dir.resolve()
    labelled = []
    for f in files:
        try:
            rel = f.path.relative_to(root)
        except ValueError:
            labelled.append(f)
            continue
        labelled.append(SourceFile(f.path, f"s3://{rel.as_posix()}", f.rel, f.problem))
    return labelled


def make_plan(config: RunConfig, ledger: Ledger) -> Plan:
    """Register this shard's documents of a run's inputs in its ledger."""
    return plan_documents(PlanScope.of(config), config.policy, ledger)


def plan_documents(scope: PlanScope, policy: PagePolicy, ledger: Ledger) -> Plan:
    files, missing = discover(scope.inputs)
    files = label_staged(files, scope.staging_dir)
    plan = Plan(missing_inputs=missing)
    workers = max(1, min(8, os.cpu_count() or 1))
    probes, stats = probe_sources(ledger, files, workers)
    limit = policy.max_pages_per_document
    # One document per content id: the first path (in input order) names it.
    stored = {f.path: path_to_text(str(f.path)) for f in files}
    # One document per content id: the path the ledger already reads it from, if listed
    # with those bytes; else the first path in input order names it.
    first = _known_primaries(ledger, files, probes, stored)
    for f in files:
        doc_id = probes[f.path].doc_id
        first.setdefault(doc_id, f)
    for f in files:
        if first[probes[f.path].doc_id] is not f:
            log.info(
                "%s has the same content as %s: processed once",
                f.given,
                first[probes[f.path].doc_id].given,
            )
    shard = {d: shard_of(d, scope.num_shards) for d in first}
    mine = {d: f for d, f in first.items() if shard[d] == scope.shard_index}
    moved_ids: list[str] = []
    plan.retired, plan.moved = reconcile(
        ledger,
        {stored[f.path]: probes[f.path].doc_id for f in files},
        {d: (stored[f.path], f.given) for d, f in mine.items()},
        moved_ids,
    )
    if plan.retired or plan.moved:
        log.info(
            "%d document(s) found at a new path; %d whose file now holds other bytes retired",
            plan.moved,
            plan.retired,
        )
    dup_key = {
        f.path: "dup:" + short_hash(f.given) for f in files if first[probes[f.path].doc_id] is not f
    }
    # A re-pointed document is named again for its new path: its old name is free, for the
    # new bytes at its old path, say.
    taken = {**sibling_names(_siblings(scope, ledger)), **taken_names(ledger)}
    moving = set(moved_ids)
    names = assign_names(
        [(d, f.rel) for d, f in first.items()]
        + [(dup_key[f.path], f.rel) for f in files if f.path in dup_key],
        {name: key for name, key in taken.items() if key not in moving},
    )
    plan.corpus_documents = len(first)
    for doc_id, f in mine.items():
        probe = probes[f.path]
        plan.documents.append(
            NewDocument(
                doc_id=doc_id,
                source=f.given,
                path=stored[f.path],
                rel=str(names[doc_id]),
                size=probe.size,
                pages=probe.pages,
                error=page_limit_error(probe, limit),
            )
        )
    dups = [
        Duplicate(f.given, probes[f.path].doc_id, stored[f.path], str(names[dup_key[f.path]]))
        for f in files
        if f.path in dup_key and probes[f.path].doc_id in mine
    ]
    rename_documents(ledger, {d: str(names[d]) for d in moved_ids})  # frees their old names
    plan.new_documents = ledger.add_documents(plan.documents)
    record_duplicates(ledger, dups)
    record_files(
        ledger, [(d, stored[f.path], stats[f.path]) for d, f in mine.items() if f.path in stats]
    )
    if first and not plan.missing_inputs:
        # A listing that found no PDF or lost an input (an unmounted corpus on one node of a
        # SLURM array) would say every other shard's document is gone: keep the last one.
        record_listing(
            ledger,
            [(d, f.given, shard[d], probes[f.path].pages) for d, f in first.items()],
            scope.num_shards,
        )
    # Before any page is done: the files of names freed above (and by a crashed run) go to
    # OUT/retired, so no stale text sits where the current output of an input belongs.
    set_aside(ledger, scope.output_dir, _siblings(scope, ledger))
    for f in files:
        doc_id = probes[f.path].doc_id
        if doc_id not in mine:
            continue
        primary = first[doc_id]
        if f.problem is not None:
            plan.entries.append(InputEntry(f.given, doc_id, "rejected", problem=f.problem))
        elif primary is f:
            plan.entries.append(InputEntry(f.given, doc_id, "document"))
        else:
            plan.entries.append(InputEntry(f.given, doc_id, "duplicate", primary.given))
    return plan
