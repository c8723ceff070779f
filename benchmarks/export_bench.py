"""`ocrfleet export` at corpus scale: a synthetic ledger of N documents × P pages of Greek text,
exported as Parquet documents, Parquet pages and JSONL documents; then re-exported with nothing
changed and with 1 % of the documents changed (pages retried). Seconds, rows/s, pages/s, output
MB and the process's peak RSS go to a JSON in benchmarks/results/.

    uv run python -m benchmarks.export_bench --docs 2000 --pages 25 --out benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow

from ocrfleet import __version__
from ocrfleet.export import ExportOptions, ExportResult, export
from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument
from ocrfleet.testing.samples import paragraph


def build_ledger(out: Path, docs: int, pages: int) -> float:
    """A finished run's ledger, written as the workers write it (one record per page)."""
    started = time.perf_counter()
    ledger = Ledger(out / "ocrfleet.sqlite")
    ledger.begin_run("bench", json.dumps({"engine": {"name": "vllm", "model": "DeepSeek-OCR"}}))
    ledger.add_documents(
        [
            NewDocument(f"{d:064x}", f"/c/{d}.pdf", f"/c/{d}.pdf", str(d), 1, pages)
            for d in range(docs)
        ]
    )
    words = " ".join(paragraph(k) + " " + paragraph(k, greek=False) for k in range(12)).split()
    now = time.time()
    with ledger.transaction() as db:
        for d in range(docs):
            doc_id = f"{d:064x}"
            rows = []
            for page in range(1, pages + 1):
                pick = random.Random(d * 100_003 + page)
                text = " ".join(pick.choice(words) for _ in range(250))  # ~2 kB, mostly Greek
                record = {
                    "engine": "vllm", "status": "done", "text": text, "raw": text,
                    "quality_flags": ["repetition_loop"] if page == 3 else [],
                    "quality": {"chars": len(text)}, "prompt_tokens": 900,
                    "output_tokens": 700, "finish_reason": "stop", "attempts": 1,
                }  # fmt: skip
                rows.append((doc_id, page, text, text, json.dumps(record, ensure_ascii=False)))
            db.executemany(
                "INSERT INTO page_text (doc_id, page, text, raw, record) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("UPDATE pages SET status='done', updated_at=? WHERE doc_id=?", (now, doc_id))
        db.execute("UPDATE documents SET status='done', finished_at=?", (now,))
    ledger.close()
    return time.perf_counter() - started


def change_some(out: Path, docs: int, share: float) -> int:
    """Pages of share×docs documents finish again (as after --retry-failed)."""
    changed = max(1, int(docs * share))
    db = sqlite3.connect(out / "ocrfleet.sqlite")
    with db:
        for d in range(0, docs, docs // changed):
            db.execute(
                "UPDATE pages SET updated_at=? WHERE doc_id=? AND page=1",
                (time.time(), f"{d:064x}"),
            )
    db.close()
    return len(range(0, docs, docs // changed))


def timed(options: ExportOptions) -> tuple[float, ExportResult]:
    started = time.perf_counter()
    result = export(options)
    return time.perf_counter() - started, result


def size_mb(dest: Path) -> float:
    return round(sum(p.stat().st_size for p in dest.glob("*-*.*")) / 1e6, 2)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--pages", type=int, default=25)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    total_pages = args.docs * args.pages
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_s = build_ledger(root / "run", args.docs, args.pages)
        runs: dict[str, Any] = {}
        for name, level, fmt in (
            ("documents_parquet", "document", "parquet"),
            ("pages_parquet", "page", "parquet"),
            ("documents_jsonl", "document", "jsonl"),
        ):
            options = ExportOptions((str(root / "run"),), root / name, fmt, level, 1000)
            seconds, result = timed(options)
            runs[name] = {
                "seconds": round(seconds, 3),
                "rows": result.rows,
                "files": result.files,
                "rows_per_s": round(result.rows / seconds, 1),
                "pages_per_s": round(total_pages / seconds, 1),
                "output_mb": size_mb(root / name),
            }
        glob = f"'{root / 'documents_parquet'}/*.parquet'"
        assert duckdb.sql(f"SELECT count(*) FROM {glob}").fetchall()[0][0] == args.docs
        options = ExportOptions(
            (str(root / "run"),), root / "documents_parquet", rows_per_file=1000
        )
        seconds, result = timed(options)
        runs["reexport_nothing_changed"] = {
            "seconds": round(seconds, 3),
            "unchanged": result.unchanged,
        }
        changed = change_some(root / "run", args.docs, 0.01)
        seconds, result = timed(options)
        runs["reexport_1pct_changed"] = {
            "seconds": round(seconds, 3),
            "changed": changed,
            "replaced": result.replaced,
            "moved": result.moved,
            "unchanged": result.unchanged,
        }
        ledger_mb = round((root / "run" / "ocrfleet.sqlite").stat().st_size / 1e6, 1)
    report = {
        "benchmark": "export",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": {
            "ocrfleet": __version__,
            "pyarrow": pyarrow.__version__,
            "duckdb": duckdb.__version__,
            "sqlite": sqlite3.sqlite_version,
        },
        "corpus": {
            "documents": args.docs,
            "pages_per_document": args.pages,
            "pages": total_pages,
            "ledger_mb": ledger_mb,
            "ledger_build_s": round(build_s, 2),
        },
        "rows_per_file": 1000,
        "runs": runs,
        "note": "peak RSS of the whole process, ledger build included; the re-export after "
        "1 % changed rewrites every file that held a changed document (spread evenly here)",
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
