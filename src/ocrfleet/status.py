"""`ocrfleet status OUT`: progress of a run, read from its ledger(s) only.

An output directory holds one ledger per shard that wrote to it; the corpus view adds them up.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from .corpus_view import CorpusClaims
from .errors import ConfigError, LedgerError
from .layout import LEDGER_GLOB, OutputLayout
from .ledger import Ledger
from .ledger_file import reader_problem
from .ledger_schema import DOC_STATUSES, PAGE_STATUSES
from .ocr_queue import route_report


def find_ledgers(output_dir: Path) -> list[Path]:
    ledgers = OutputLayout(output_dir).ledgers()
    if not ledgers:
        raise ConfigError(f"no ocrfleet ledger in {output_dir} (expected {LEDGER_GLOB})")
    return ledgers


def collect_status(output_dir: Path) -> dict[str, Any]:
    documents = dict.fromkeys(DOC_STATUSES, 0)
    pages = dict.fromkeys(PAGE_STATUSES, 0)
    in_flight = 0
    failed: list[dict[str, Any]] = []
    shards: list[dict[str, Any]] = []
    routing: dict[str, Any] = {"routes": {}, "quality_flags": {}, "attention": []}
    attention_total = 0
    claims = CorpusClaims({}, set(), set())
    for path in find_ledgers(output_dir):
        problem = reader_problem(path)
        if problem is not None:
            raise LedgerError(f"{path}: {problem}")
        try:
            ledger = Ledger.read_only(path)
        except LedgerError as exc:
            raise LedgerError(f"{path}: {exc}") from None
        try:
            counts = ledger.counts()
            shard_failed = ledger.failed_documents()
            report = route_report(ledger)
            claims.add(ledger)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path} is not a readable ledger: {exc}") from None
        finally:
            ledger.close()
        for key, value in counts.documents.items():
            documents[key] += value
        for key, value in counts.pages.items():
            pages[key] += value
        in_flight += counts.in_flight
        failed += shard_failed
        for key in ("routes", "quality_flags"):
            for name, value in report[key].items():
                routing[key][name] = routing[key].get(name, 0) + value
        routing["attention"] += report["attention"]
        attention_total += report["attention_total"]
        shards.append({"ledger": path.name, **counts.as_dict()})
    # "assembling" is a moment between the last page and the files: report it as pending.
    documents["pending"] += documents.pop("assembling")
    # Documents a shard listed but no shard registered: not done, whatever the pages say.
    unclaimed = claims.unclaimed()
    total_pages = sum(pages.values()) + sum(max(1, int(str(d["pages"]))) for d in unclaimed)
    finished = sum(pages.values()) - pages["pending"]
    return {
        "output_dir": str(output_dir),
        "documents": documents,
        "pages": pages,
        "pages_in_flight": in_flight,
        "progress": round(finished / total_pages, 4) if total_pages else 1.0,
        "failed_documents": failed,
        "shards": shards,
        **routing,
        "attention_total": attention_total,
        "unclaimed_documents": unclaimed,
    }


def format_status(status: dict[str, Any]) -> str:
    docs, pages = status["documents"], status["pages"]
    lines = [
        f"{status['output_dir']}: {status['progress'] * 100:.1f}% of pages finished",
        "documents  " + "  ".join(f"{k} {v}" for k, v in docs.items()),
        "pages      "
        + "  ".join(f"{k} {v}" for k, v in pages.items())
        + f"  (in flight {status['pages_in_flight']})",
    ]
    if status.get("routes"):
        lines.append("routes     " + "  ".join(f"{k} {v}" for k, v in status["routes"].items()))
    if status.get("quality_flags"):
        flags = status["quality_flags"]
        lines.append("flags      " + "  ".join(f"{k} {v}" for k, v in flags.items()))
    if status.get("attention"):
        lines.append(f"pages that need attention ({status['attention_total']}):")
        lines += [
            f"  {a['source']} page {a['page']}: {a['status']}"
            + (f": {a['reason']}" if a["reason"] else "")
            for a in status["attention"]
        ]
    unclaimed = status.get("unclaimed_documents") or []
    if unclaimed:
        lines.append(f"{len(unclaimed)} document(s) claimed by no shard (run their shard):")
        lines += [
            f"  {d['source']}: shard {d['shard']} of {d['num_shards']}" for d in unclaimed[:20]
        ]
    if status["failed_documents"]:
        lines.append("failed documents:")
        lines += [f"  {d['source']}: {d['reason']}" for d in status["failed_documents"]]
    return "\n".join(lines)
