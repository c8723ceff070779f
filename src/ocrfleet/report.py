"""`OUT/report.html`: one self-contained page about a run, for a person to look at.

No network and no JavaScript: charts are inline SVG (svg.py), page thumbnails are re-rendered
small from the source PDFs and embedded as data: URIs. Written at the end of every run and by
`ocrfleet report OUT`; everything in it comes from the ledger(s) (report_data.py).
"""

from __future__ import annotations

import base64
import io
import logging
import time
from html import escape
from pathlib import Path

from . import svg
from .layout import REPORT_NAME, OutputLayout
from .report_data import NO_ENGINE, STAGES, PageRef, ReportData, collect_report
from .writers import atomic_write_text

log = logging.getLogger(__name__)

THUMB_WIDTH = 220
TEXT_PREVIEW = 1500
STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f4f4f4}.num{text-align:right}
.charts{display:flex;flex-wrap:wrap;gap:12px}.card{display:flex;gap:14px;margin:10px 0;
padding:8px;border:1px solid #ddd}.card img{border:1px solid #999;align-self:flex-start}
.card pre{white-space:pre-wrap;font-size:12px;max-height:320px;overflow:auto;margin:0;flex:1}
.flag{background:#fde7c7;border-radius:3px;padding:1px 5px;margin-right:4px;font-size:12px}
.muted{color:#777}
"""


def thumbnail_data_uri(pdf: Path, page: int, width: int = THUMB_WIDTH) -> str | None:
    """The page drawn small (JPEG), or None when the source cannot be read any more."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(str(pdf))
    except (pdfium.PdfiumError, OSError, ValueError):
        return None
    try:
        if not 1 <= page <= len(document):
            return None
        handle = document[page - 1]
        try:
            scale = width / max(1.0, handle.get_width())
            image = handle.render(scale=min(scale, 2.0)).to_pil().convert("RGB")
        finally:
            handle.close()
    except pdfium.PdfiumError:
        return None
    finally:
        document.close()
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _table(header: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{escape(c)}</td>' if i in numeric else f"<td>{escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _overview(data: ReportData) -> str:
    total = sum(data.pages.values())
    finished = total - data.pages.get("pending", 0)
    runs = [
        [
            r.run_id,
            _clock(r.started_at),
            _clock(r.finished_at) if r.finished_at else "running or killed",
            str(r.pages_processed),
            f"{r.pages_per_second:.2f}",
            "" if r.exit_code is None else str(r.exit_code),
        ]
        for r in data.runs[-20:]
    ]
    return (
        f"<p>{finished} of {total} pages finished "
        f"({finished / total * 100 if total else 100:.1f} %), "
        f"{sum(data.documents.values())} documents: "
        + ", ".join(f"{v} {escape(k)}" for k, v in sorted(data.documents.items()))
        + "</p><h2>Runs</h2>"
        + _table(["run", "started", "finished", "pages", "pages/s", "exit"], runs, {3, 4, 5})
    )


def _time_axis(data: ReportData) -> str:
    if data.window is None:
        return "seconds"
    return f"seconds since {_clock(data.window[0])}"


def _charts(data: ReportData) -> str:
    axis = _time_axis(data)
    parts = [
        svg.line_chart(
            data.throughput(),
            title="Pages/s per worker (latest run with pages)",
            x_label=axis,
            y_label="pages/s",
        )
    ]
    stages = data.stage_summary()
    bars = [
        (f"{stage} {kind}", values[i])
        for stage, values in stages.items()
        for i, kind in enumerate(("mean", "p50", "p95"))
    ]
    parts.append(svg.bar_chart(bars, title="Seconds a page, by stage (OCR'd pages)", unit=" s"))
    parts.append(
        svg.line_chart(
            data.stages_over_time(),
            title="Seconds a page by stage, over time",
            x_label=axis,
            y_label="seconds a page",
        )
    )
    if data.gpu:
        start = data.window[0] if data.window else min(p.t for v in data.gpu.values() for p in v)
        util = {
            g: [(p.t - start, p.util) for p in v if p.util is not None] for g, v in data.gpu.items()
        }
        memory = {
            g: [(p.t - start, p.mem_used_mib / 1024) for p in v if p.mem_used_mib is not None]
            for g, v in data.gpu.items()
        }
        parts.append(
            svg.line_chart(util, title="GPU utilisation", x_label=axis, y_label="%", y_max=100)
        )
        parts.append(svg.line_chart(memory, title="GPU memory used", x_label=axis, y_label="GiB"))
    else:
        parts.append('<p class="muted">No GPU telemetry in this ledger (CPU run).</p>')
    parts.append(svg.bar_chart(sorted(data.pages.items()), title="Pages by status"))
    parts.append(svg.bar_chart(data.routes.most_common(12), title="Pages by route"))
    parts.append(svg.bar_chart(data.flags.most_common(12), title="Pages by quality flag"))
    return '<div class="charts">' + "".join(parts) + "</div>"


def _gpu_table(data: ReportData) -> str:
    if not data.gpu:
        return ""
    rows = []
    for gpu, points in sorted(data.gpu.items()):

        def mean(values: list[float | None]) -> str:
            present = [v for v in values if v is not None]
            return f"{sum(present) / len(present):.1f}" if present else "–"

        rows.append(
            [
                gpu,
                str(len(points)),
                mean([p.util for p in points]),
                mean([p.mem_used_mib for p in points]),
                mean([p.power_w for p in points]),
                mean([p.temp_c for p in points]),
            ]
        )
    header = ["GPU", "samples", "util %", "memory MiB", "power W", "temp °C"]
    return "<h2>GPU means</h2>" + _table(header, rows, {1, 2, 3, 4, 5})


def _failures(data: ReportData) -> str:
    if not data.failures:
        return "<h2>Failures</h2><p>None.</p>"
    rows = [[src, "" if page is None else str(page), reason] for src, page, reason in data.failures]
    return "<h2>Failures</h2>" + _table(["document", "page", "reason"], rows, {1})


def _slowest(data: ReportData) -> str:
    rows = [
        [p.source, str(p.page), p.status, f"{p.seconds:.3f}", " ".join(p.flags)]
        for p in data.slowest
    ]
    header = ["document", "page", "status", "seconds (render+queue+infer)", "flags"]
    return "<h2>Slowest pages</h2>" + _table(header, rows, {1, 3})


def _card(page: PageRef) -> str:
    uri = thumbnail_data_uri(Path(page.path), page.page)
    image = (
        f'<img src="{uri}" width="{THUMB_WIDTH}" alt="page {page.page}">'
        if uri
        else f'<div class="muted" style="width:{THUMB_WIDTH}px">source not readable: '
        f"{escape(page.path)}</div>"
    )
    text = page.text[:TEXT_PREVIEW] + ("…" if len(page.text) > TEXT_PREVIEW else "")
    flags = "".join(f'<span class="flag">{escape(f)}</span>' for f in page.flags)
    return (
        f'<div class="card">{image}<div style="flex:1"><b>{escape(page.source)}</b>, page '
        f"{page.page} ({escape(page.status)}) {flags}<pre>{escape(text) or '(no text)'}</pre>"
        "</div></div>"
    )


def render_report(data: ReportData) -> str:
    gallery = "".join(_card(p) for p in data.flagged) or "<p>No flagged pages.</p>"
    note = f"“{NO_ENGINE}”: blank pages, detected from the image without an engine."
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>ocrfleet report: {escape(str(data.output_dir))}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>ocrfleet report: {escape(str(data.output_dir))}</h1>"
        f'<p class="muted">generated {_clock(data.generated_at)} from the ledger; stages: '
        f"{', '.join(STAGES)}. {escape(note)}</p>"
        + _overview(data)
        + "<h2>Throughput, stages, GPUs, outcomes</h2>"
        + _charts(data)
        + _gpu_table(data)
        + _failures(data)
        + _slowest(data)
        + "<h2>Flagged pages</h2>"
        + gallery
        + "</body></html>"
    )


def write_report(output_dir: Path, target: Path | None = None) -> Path:
    """Collect, render and write the report atomically; returns its path."""
    path = target or OutputLayout(output_dir).report
    atomic_write_text(path, render_report(collect_report(output_dir)))
    return path


def write_report_after_run(output_dir: Path) -> Path | None:
    """The end-of-run report: a failure to draw it is logged, never fails the run."""
    try:
        path = write_report(output_dir)
    except Exception as exc:
        log.warning(
            "could not write %s: %s (try `ocrfleet report %s`)", REPORT_NAME, exc, output_dir
        )
        return None
    log.info("report: %s", path)
    return path
