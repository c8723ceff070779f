"""Claim latency with a big queue: 1 M pending pages in one ledger.

A worker refills by claiming suspects (pages a dead worker had in flight, crashes > 0) and
then ordinary pages, with a fair-share check when other workers run. Measures each of those
claims (median and p99 over many refills, pages released again after each claim so the queue
stays at its size) on a real SQLite ledger in a temporary directory:

    uv run python benchmarks/claim_bench.py --pages 1000000
Writes benchmarks/results/claim-<host>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ocrfleet import __version__
from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument


def build(path: Path, pages: int, per_doc: int) -> Ledger:
    ledger = Ledger(path)
    docs = [
        NewDocument(f"{i:064x}", f"doc{i}.pdf", f"/in/doc{i}.pdf", f"doc{i}", 1, per_doc)
        for i in range(pages // per_doc)
    ]
    for start in range(0, len(docs), 100):
        ledger.add_documents(docs[start : start + 100])
    return ledger


def timed(ledger: Ledger, rounds: int, **claim: Any) -> dict[str, float]:
    samples: list[float] = []
    for _ in range(rounds):
        began = time.perf_counter()
        got = ledger.claim("bench:1", lease_seconds=60.0, **claim)
        samples.append((time.perf_counter() - began) * 1000)
        ledger.release("bench:1", [(c.doc_id, c.page) for c in got])
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
        "max_ms": round(samples[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=1_000_000)
    parser.add_argument("--per-doc", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument(
        "--drop-index", action="store_true", help="drop pages_crashed: the 'before' numbers"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        ledger = build(Path(tmp) / "ocrfleet.sqlite", args.pages, args.per_doc)
        build_s = time.perf_counter() - began
        if args.drop_index:
            with ledger.transaction() as db:
                db.execute("DROP INDEX pages_crashed")
        ledger.register_worker("bench:1", 0, 1, None)
        results: dict[str, Any] = {
            "suspect_claim_none_crashed": timed(ledger, args.rounds, limit=1, suspect=True),
            "claim_64_alone": timed(ledger, args.rounds, limit=64, suspect=False),
        }
        ledger.register_worker("bench:2", 1, 2, None)  # fair share now applies
        results["claim_64_fair_share_2_workers"] = timed(
            ledger, args.rounds, limit=64, suspect=False, in_flight=32
        )
        # A few crashed pages deep in the queue: the suspects' claim finds them at once.
        with ledger.transaction() as db:
            db.execute(
                "UPDATE pages SET crashes=1 WHERE rowid IN (SELECT rowid FROM pages "
                "ORDER BY rowid DESC LIMIT 3)"
            )
        results["suspect_claim_3_crashed"] = timed(ledger, args.rounds, limit=1, suspect=True)
        pending = ledger.pending_pages()
        ledger.close()
    record = {
        "benchmark": "claim_bench",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "host": platform.node(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
        },
        "ocrfleet_version": __version__,
        "pending_pages": pending,
        "pages_per_document": args.per_doc,
        "rounds": args.rounds,
        "build_seconds": round(build_s, 1),
        "pages_crashed_index": not args.drop_index,
        "claims": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "-no-index" if args.drop_index else ""
    out = args.out / f"claim-{platform.node()}-{record['date']}{tag}.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
