"""The text-layer router on a labelled set, Tesseract's CER, and the GPU pages `auto` saves.

1. Verdicts: every page of `ocrfleet.testing.routeset` (born-digital Greek/polytonic/English,
   columns, photos; scans clean and degraded, stamped, under invisible OCR layers; fonts
   with a Latin or an empty Unicode map) is routed as the pipeline does (rendered at 144 dpi,
   the default) and compared with its label: precision and recall of `ocr` and `text`, the
   score ranges per kind (the thresholds' margins), wrong pages listed.
2. End to end: `ocrfleet run SET --ocr-engine tesseract` then `ocrfleet eval` against the
   truth texts: CER/WER per document; the synthetic Greek scans (clean and mildly degraded)
   must stay at or under 5 % strict CER; no U+FFFE or soft hyphen in any text output.
3. GPU pages saved: pages of a `samples.realistic_pdf` mix (born-digital and scanned pages
   alternating) that `auto` keeps as text, and the router's CPU time per page.

    uv run python benchmarks/route_eval.py           # writes benchmarks/results/route-eval-*.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_TEXT_KEPT = 0.90
GOAL_CER = 0.05
SCAN_DOCS = ("greek-scan", "greek-scan-degraded")


def route_pages(pdf_path: Path, dpi: int = 144) -> list[Any]:
    import pypdfium2 as pdfium

    from ocrfleet.route import route_rendered

    routes = []
    pdf = pdfium.PdfDocument(str(pdf_path))
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            scale = dpi / 72
            routes.append(route_rendered(page, page.render(scale=scale).to_numpy(), scale))
            page.close()
    finally:
        pdf.close()
    return routes


def precision_recall(pairs: list[tuple[str, str]], positive: str) -> dict[str, float]:
    tp = sum(1 for want, got in pairs if want == positive and got == positive)
    fp = sum(1 for want, got in pairs if want != positive and got == positive)
    fn = sum(1 for want, got in pairs if want == positive and got != positive)
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
        "support": tp + fn,
    }


def verdicts(root: Path) -> tuple[dict[str, Any], list[Any]]:
    from ocrfleet.testing.routeset import build_set

    docs = build_set(root / "set")
    pairs: list[tuple[str, str]] = []
    by_kind: dict[str, dict[str, Any]] = {}
    wrong: list[dict[str, Any]] = []
    for doc in docs:
        for label, route in zip(doc.pages, route_pages(doc.path), strict=True):
            pairs.append((label.route, route.route))
            kind = by_kind.setdefault(label.kind, {"pages": 0, "right": 0, "scores": {}})
            kind["pages"] += 1
            kind["right"] += int(label.route == route.route)
            for key, value in route.record()["route_scores"].items():
                low, high = kind["scores"].get(key, (value, value))
                kind["scores"][key] = (min(low, value), max(high, value))
            if label.route != route.route:
                wrong.append(
                    {"document": doc.name, "kind": label.kind, "expected": label.route,
                     "got": route.route, "reasons": list(route.reasons)}
                )  # fmt: skip
    good = [(w, g) for w, g in pairs if w == "text"]
    result = {
        "pages": len(pairs),
        "documents": len(docs),
        "ocr": precision_recall(pairs, "ocr"),
        "text": precision_recall(pairs, "text"),
        "good_born_digital_kept_as_text": round(
            sum(1 for w, g in good if g == "text") / max(1, len(good)), 4
        ),
        "every_scan_and_broken_page_to_ocr": all(g == "ocr" for w, g in pairs if w == "ocr"),
        "by_kind": by_kind,
        "wrong": wrong,
    }
    return result, docs


def end_to_end(root: Path, docs: list[Any]) -> dict[str, Any]:
    """The real CLI with Tesseract on the whole set, then `ocrfleet eval`."""
    truth = root / "truth"
    truth.mkdir()
    for doc in docs:
        text = "\n\n".join(page.truth for page in doc.pages)
        (truth / f"{doc.name}.txt").write_text(text, encoding="utf-8")
    out = root / "out"
    began = time.perf_counter()
    cli = [sys.executable, "-m", "ocrfleet"]
    run = subprocess.run(
        [*cli, "run", str(root / "set"), "-o", str(out), "--ocr-engine", "tesseract",
         "--no-progress", "--workers", "1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - began
    if run.returncode != 0:
        raise SystemExit(f"ocrfleet run failed ({run.returncode}): {run.stderr[-2000:]}")
    report = json.loads(
        subprocess.run(
            [*cli, "eval", str(out), "--truth", str(truth), "--json"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    marks = 0
    for jsonl in (out / "pages").rglob("*.jsonl"):
        for line in jsonl.read_text("utf-8").splitlines():
            marks += sum(json.loads(line)["text"].count(m) for m in ("\ufffe", "\u00ad"))
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    scans = {d["document"]: d["strict"]["cer"] for d in report["documents"]}
    return {
        "wall_seconds": round(wall, 1),
        "summary_pages": summary["pages"],
        "routes": summary["routes"],
        "eval": report,
        "greek_scan_cer_strict": {name: scans.get(name) for name in SCAN_DOCS},
        "hyphen_marks_in_text_output": marks,
    }


def gpu_pages_saved(root: Path, pages: int) -> dict[str, Any]:
    from ocrfleet.testing import samples

    pdf = samples.realistic_pdf(root / "realistic.pdf", pages)
    began = time.perf_counter()
    routes = route_pages(pdf)
    seconds = time.perf_counter() - began
    text = sum(1 for r in routes if r.route == "text")
    return {
        "pages": pages,
        "kept_as_text": text,
        "sent_to_ocr": pages - text,
        "gpu_pages_saved_share": round(text / pages, 4),
        "render_and_route_ms_per_page": round(seconds * 1000 / pages, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--realistic-pages", type=int, default=40)
    parser.add_argument("--skip-ocr", action="store_true", help="verdicts only (no Tesseract)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    import pypdfium2

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        routing, docs = verdicts(root)
        e2e = None if args.skip_ocr else end_to_end(root, docs)
        saved = gpu_pages_saved(root, args.realistic_pages)
    tesseract = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    goals: dict[str, Any] = {
        "every_scan_and_broken_page_to_ocr": routing["every_scan_and_broken_page_to_ocr"],
        "good_born_digital_kept_as_text_ge_90pct": routing["good_born_digital_kept_as_text"]
        >= GOAL_TEXT_KEPT,
    }
    if e2e is not None:
        goals["no_hyphen_marks_in_text_output"] = e2e["hyphen_marks_in_text_output"] == 0
        goals["greek_scan_cer_strict_le_5pct"] = all(
            cer is not None and cer <= GOAL_CER for cer in e2e["greek_scan_cer_strict"].values()
        )
    result = {
        "benchmark": "route_eval",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "host": platform.node(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
        },
        "versions": {
            "python": platform.python_version(),
            "pypdfium2": pypdfium2.version.PYPDFIUM_INFO.version,
            "pdfium": str(pypdfium2.version.PDFIUM_INFO.build),
            "tesseract": (tesseract.stdout or tesseract.stderr).splitlines()[0],
        },
        "goals": goals,
        "routing": routing,
        "end_to_end_tesseract": e2e,
        "gpu_pages_saved_realistic_mix": saved,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"route-eval-{platform.node()}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({"goals": goals, "ocr": routing["ocr"], "text": routing["text"],
                      "saved": saved}, indent=2))  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
