"""What the run report shows, read from the ledger(s) of an output directory (read only).

Everything is aggregated in SQL (json_extract over the stored page records), so a ledger of a
million pages reports in seconds. Time series cover the latest run that processed pages: a
resumed corpus has days between runs, which would flatten every curve to nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .run_summary import ThisRun
from .status import find_ledgers

STAGES = ("render", "queue", "infer")
TIME_BUCKETS = 60
SLOWEST = 20
GALLERY = 12
FAILURES = 200
NO_ENGINE = "no engine pass"  # blank pages: detected from the image, never inferred
# The record's route may be a word or an object holding the verdict (the route step's).
ROUTE_SQL = (
    "COALESCE(json_extract(t.record, '$.route.route'), json_extract(t.record, '$.route.verdict'),"
    " json_extract(t.record, '$.route'), 'not recorded')"
)
SECONDS_SQL = " + ".join(f"COALESCE(json_extract(t.record, '$.{s}_seconds'), 0)" for s in STAGES)


@dataclass(frozen=True)
class PageRef:
    doc_id: str
    source: str
    path: str
    page: int
    status: str
    seconds: float
    flags: tuple[str, ...]
    text: str
    error: str | None


@dataclass(frozen=True)
class RunRow:
    run_id: str
    started_at: float
    finished_at: float | None
    pages_processed: int
    pages_per_second: float
    exit_code: int | None


@dataclass(frozen=True)
class GpuPoint:
    t: float
    util: float | None
    mem_used_mib: float | None
    mem_total_mib: float | None
    power_w: float | None
    temp_c: float | None


@dataclass
class ReportData:
    output_dir: Path
    generated_at: float = field(default_factory=time.time)
    documents: Counter[str] = field(default_factory=Counter)
    pages: Counter[str] = field(default_factory=Counter)
    runs: list[RunRow] = field(default_factory=list)
    window: tuple[float, float] | None = None  # the run the time series show
    finishes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    stage_values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # (finished at, {stage: seconds}) of the OCR'd pages in the window: stages over time.
    stage_points: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    routes: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, int | None, str]] = field(default_factory=list)
    slowest: list[PageRef] = field(default_factory=list)
    flagged: list[PageRef] = field(default_factory=list)
    gpu: dict[str, list[GpuPoint]] = field(default_factory=lambda: defaultdict(list))

    def throughput(self, buckets: int = TIME_BUCKETS) -> dict[str, list[tuple[float, float]]]:
        """Pages/s per worker label over the window, in equal buckets (x: seconds from start)."""
        times = [t for values in self.finishes.values() for t in values]
        if not times:
            return {}
        start = self.window[0] if self.window else min(times)
        span = max(times) - start
        width = max(1.0, span / buckets)
        count = int(span // width) + 1
        series: dict[str, list[tuple[float, float]]] = {}
        for label, values in sorted(self.finishes.items()):
            counts = [0] * count
            for t in values:
                counts[min(count - 1, int((t - start) // width))] += 1
            series[label] = [((i + 0.5) * width, n / width) for i, n in enumerate(counts)]
        return series

    def stages_over_time(self, buckets: int = TIME_BUCKETS) -> dict[str, list[tuple[float, float]]]:
        """Mean seconds a page per stage, in equal time buckets (x: seconds from start)."""
        if not self.stage_points:
            return {}
        start = self.window[0] if self.window else min(t for t, _ in self.stage_points)
        width = max(1.0, (max(t for t, _ in self.stage_points) - start) / buckets)
        sums: dict[int, dict[str, float]] = defaultdict(lambda: dict.fromkeys(STAGES, 0.0))
        counts: Counter[int] = Counter()
        for t, seconds in self.stage_points:
            bucket = int((t - start) // width)
            counts[bucket] += 1
            for stage in STAGES:
                sums[bucket][stage] += seconds.get(stage, 0.0)
        return {
            stage: [((b + 0.5) * width, sums[b][stage] / counts[b]) for b in sorted(counts)]
            for stage in STAGES
        }

    def stage_summary(self) -> dict[str, tuple[float, float, float]]:
        """Per stage: (mean, median, 95th percentile) seconds a page."""
        out: dict[str, tuple[float, float, float]] = {}
        for stage in STAGES:
            values = sorted(self.stage_values.get(stage, []))
            if not values:
                continue
            mean = sum(values) / len(values)
            out[stage] = (mean, values[len(values) // 2], values[int(0.95 * (len(values) - 1))])
        return out


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    db.row_factory = sqlite3.Row
    return db


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
    return row.fetchone() is not None


def _page_ref(row: sqlite3.Row) -> PageRef:
    record: dict[str, Any] = json.loads(row["record"]) if row["record"] else {}
    return PageRef(
        doc_id=row["doc_id"],
        source=row["source"],
        path=row["path"],
        page=int(row["page"]),
        status=row["status"],
        seconds=float(row["seconds"] or 0.0),
        flags=tuple(record.get("quality_flags") or ()),
        text=str(row["text"] or ""),
        error=row["error"],
    )


PAGE_COLUMNS = (
    "p.doc_id, d.source, d.path, p.page, p.status, p.error, t.text, t.record, "
    f"({SECONDS_SQL}) AS seconds FROM pages p JOIN documents d ON d.doc_id = p.doc_id "
    "JOIN page_text t ON t.doc_id = p.doc_id AND t.page = p.page"
)


def _runs(db: sqlite3.Connection) -> list[RunRow]:
    rows = []
    for r in db.execute("SELECT run_id, started_at, finished_at, summary FROM runs"):
        summary = json.loads(r["summary"]) if r["summary"] else {}
        this_run = ThisRun.from_json(summary.get("this_run"))
        rows.append(
            RunRow(
                r["run_id"],
                float(r["started_at"]),
                r["finished_at"],
                int(this_run.pages_processed or 0),
                float(this_run.pages_per_second or 0.0),
                summary.get("exit_code"),
            )
        )
    return rows


def _window(runs: list[RunRow]) -> tuple[float, float] | None:
    worked = [r for r in runs if r.pages_processed > 0 or r.finished_at is None]
    if not worked:
        return None
    last = max(worked, key=lambda r: r.started_at)
    return last.started_at, last.finished_at or time.time()


def _read_ledger(db: sqlite3.Connection, data: ReportData, window: tuple[float, float]) -> None:
    for r in db.execute("SELECT status, COUNT(*) FROM documents GROUP BY status"):
        data.documents["pending" if r[0] == "assembling" else r[0]] += r[1]
    for r in db.execute("SELECT status, COUNT(*) FROM pages GROUP BY status"):
        data.pages[r[0]] += r[1]
    last_attempt = (
        "WITH last AS (SELECT doc_id, page, MAX(id) AS id FROM attempts GROUP BY doc_id, page) "
        f"SELECT p.updated_at, COALESCE(w.gpu, a.worker, '{NO_ENGINE}') AS label FROM pages p "
        "LEFT JOIN last l ON l.doc_id = p.doc_id AND l.page = p.page "
        "LEFT JOIN attempts a ON a.id = l.id LEFT JOIN workers w ON w.worker = a.worker "
        "WHERE p.status != 'pending' AND p.updated_at BETWEEN ? AND ?"
    )
    for r in db.execute(last_attempt, window):
        data.finishes[r["label"]].append(float(r["updated_at"]))
    for stage in STAGES:
        query = (
            f"SELECT json_extract(t.record, '$.{stage}_seconds') FROM page_text t "
            "JOIN pages p ON p.doc_id = t.doc_id AND p.page = t.page "
            "WHERE p.status IN ('done', 'truncated')"
        )
        data.stage_values[stage] += [float(r[0]) for r in db.execute(query) if r[0] is not None]
    columns = ", ".join(f"json_extract(t.record, '$.{s}_seconds')" for s in STAGES)
    for r in db.execute(
        f"SELECT p.updated_at, {columns} FROM page_text t JOIN pages p ON p.doc_id = t.doc_id "
        "AND p.page = t.page WHERE p.status IN ('done', 'truncated') AND p.updated_at "
        "BETWEEN ? AND ?",
        window,
    ):
        seconds = {s: float(v) for s, v in zip(STAGES, tuple(r)[1:], strict=True) if v is not None}
        data.stage_points.append((float(r[0]), seconds))
    for r in db.execute(f"SELECT {ROUTE_SQL}, COUNT(*) FROM page_text t GROUP BY 1"):
        data.routes[str(r[0])] += r[1]
    flags = "SELECT f.value, COUNT(*) FROM page_text t, json_each(t.record, '$.quality_flags') f"
    for r in db.execute(flags + " GROUP BY f.value"):
        data.flags[str(r[0])] += r[1]
    for r in db.execute(
        "SELECT d.source, p.page, COALESCE(p.error, d.error) FROM documents d LEFT JOIN pages p "
        "ON p.doc_id = d.doc_id AND p.status = 'failed' WHERE d.status = 'failed' "
        "ORDER BY d.seq, p.page LIMIT ?",
        (FAILURES,),
    ):
        data.failures.append((r[0], r[1], r[2] or "no reason recorded"))
    data.slowest += [
        _page_ref(r)
        for r in db.execute(f"SELECT {PAGE_COLUMNS} ORDER BY seconds DESC LIMIT ?", (SLOWEST,))
    ]
    flagged = (
        f"SELECT {PAGE_COLUMNS} WHERE p.status IN ('done', 'truncated') AND EXISTS "
        "(SELECT 1 FROM json_each(t.record, '$.quality_flags')) ORDER BY d.seq, p.page LIMIT ?"
    )
    data.flagged += [_page_ref(r) for r in db.execute(flagged, (GALLERY,))]
    if _has_table(db, "gpu_samples"):
        for r in db.execute(
            "SELECT t, gpu, util, mem_used_mib, mem_total_mib, power_w, temp_c FROM gpu_samples "
            "WHERE t BETWEEN ? AND ? ORDER BY t",
            window,
        ):
            point = GpuPoint(
                r["t"], r["util"], r["mem_used_mib"], r["mem_total_mib"], r["power_w"], r["temp_c"]
            )
            data.gpu[f"gpu{r['gpu']}"].append(point)


def collect_report(output_dir: Path) -> ReportData:
    """Everything the report shows, from every ledger (shard) in `output_dir`."""
    data = ReportData(output_dir)
    ledgers = find_ledgers(output_dir)
    connections = [_connect(path) for path in ledgers]
    try:
        for db in connections:
            data.runs += _runs(db)
        data.runs.sort(key=lambda r: r.started_at)
        data.window = _window(data.runs)
        window = data.window or (0.0, time.time() + 1e9)
        for db in connections:
            _read_ledger(db, data, window)
    finally:
        for db in connections:
            db.close()
    data.slowest = sorted(data.slowest, key=lambda p: -p.seconds)[:SLOWEST]
    data.flagged = data.flagged[:GALLERY]
    return data
