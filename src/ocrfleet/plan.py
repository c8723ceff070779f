"""Planning: from inputs to documents registered in this shard's ledger.

Every shard plans the whole corpus the same way (discover, probe, name outputs, split), then
keeps its own documents. Probes are cached in the ledger by (path, size, mtime), so a resumed
run does not hash the corpus again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .config import RunConfig
from .ledger import Ledger, NewDocument
from .shards import assign_shards
from .sources import Probe, SourceFile, assign_output_paths, discover, probe_all

log = logging.getLogger(__name__)


@dataclass
class Plan:
    documents: list[NewDocument] = field(default_factory=list)  # this shard's
    corpus_documents: int = 0
    missing_inputs: list[str] = field(default_factory=list)
    duplicates: int = 0
    new_documents: int = 0


def ledger_path(output_dir: Path, num_shards: int, shard_index: int) -> Path:
    if num_shards == 1:
        return output_dir / "ocrfleet.sqlite"
    return output_dir / f"ocrfleet.shard-{shard_index}-of-{num_shards}.sqlite"


def shard_suffix(num_shards: int, shard_index: int) -> str:
    return "" if num_shards == 1 else f".shard-{shard_index}-of-{num_shards}"


def probe_sources(ledger: Ledger, files: list[SourceFile], workers: int) -> dict[Path, Probe]:
    cache = ledger.cached_probes()
    probes: dict[Path, Probe] = {}
    stats: dict[Path, os.stat_result] = {}
    todo: list[str] = []
    for f in files:
        try:
            st = f.path.stat()
        except OSError:
            todo.append(str(f.path))
            continue
        stats[f.path] = st
        hit = cache.get(str(f.path))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            probes[f.path] = Probe(doc_id=hit[2], size=hit[0], pages=hit[3], error=hit[4])
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
            if st_ is not None:
                rows.append(
                    (path_str, st_.st_size, st_.st_mtime_ns, probe.doc_id, probe.pages, probe.error)
                )
        ledger.store_probes(rows)
    return probes


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
        labelled.append(SourceFile(f.path, f"s3://{rel.as_posix()}", f.rel))
    return labelled


def make_plan(config: RunConfig, ledger: Ledger) -> Plan:
    files, missing = discover(config.inputs)
    files = label_staged(files, config.staging_dir)
    plan = Plan(missing_inputs=missing)
    workers = max(1, min(8, os.cpu_count() or 1))
    probes = probe_sources(ledger, files, workers)
    # One document per content id: the first path (in input order) names it.
    first: dict[str, SourceFile] = {}
    for f in files:
        doc_id = probes[f.path].doc_id
        if doc_id in first:
            plan.duplicates += 1
            log.info("%s has the same content as %s: processed once", f.given, first[doc_id].given)
        else:
            first[doc_id] = f
    names = assign_output_paths([(d, f.rel) for d, f in first.items()])
    shard_of = assign_shards(
        [(d, probes[f.path].pages) for d, f in first.items()], config.num_shards
    )
    plan.corpus_documents = len(first)
    for doc_id, f in first.items():
        if shard_of[doc_id] != config.shard_index:
            continue
        probe = probes[f.path]
        plan.documents.append(
            NewDocument(
                doc_id=doc_id,
                source=f.given,
                path=str(f.path),
                rel=str(PurePosixPath(names[doc_id])),
                size=probe.size,
                pages=probe.pages,
                error=probe.error,
            )
        )
    # Duplicate paths are recorded as aliases of the document that is processed.
    aliases = [
        NewDocument(probes[f.path].doc_id, f.given, str(f.path), "", 0, 0)
        for f in files
        if first[probes[f.path].doc_id] is not f
        and shard_of[probes[f.path].doc_id] == config.shard_index
    ]
    plan.new_documents = ledger.add_documents(plan.documents + aliases)
    return plan
