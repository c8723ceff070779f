"""The checks of `ocrfleet preflight` that run ocrfleet: one real page through `ocrfleet run`
on GPU 0 (smoke), and the throughput baseline its summary gives, written down with the
machine and the versions."""

from __future__ import annotations

import importlib.util
import json
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from .layout import OutputLayout
from .preflight_checks import Check, GpuInfo, PreflightOptions, Runner, cap_text, tail_lines
from .run_summary import ThisRun


def make_sample_pdf(path: Path) -> Path:
    """One page of English and Greek text (reportlab and the DejaVu font needed)."""
    from .testing import samples

    text = samples.paragraph(0, greek=False) + " " + samples.paragraph(0)
    return samples.text_pdf(path, [text])


def smoke_command(pdf: Path, run_dir: Path, model: str, timeout: float, fp8: bool) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "ocrfleet",
        "run",
        str(pdf),
        "-o",
        str(run_dir),
        "--engine",
        "vllm",  # the smoke page is born-digital: auto would keep its text layer
        "--batch-pages",
        "1",
        "--timeout-seconds",
        f"{timeout:g}",
        "--gpus",
        "0",
        "--model",
        model,
        "--no-progress",
    ]
    return cmd if fp8 else [*cmd, "--kv-cache-dtype", "auto"]


def _first_text_record(run_dir: Path) -> dict[str, Any] | None:
    for path in sorted(OutputLayout(run_dir).pages_dir.glob("**/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(record, dict)
                and record.get("status") in ("done", "truncated")
                and str(record.get("text") or "").strip()
            ):
                return record
    return None


def smoke_check(
    options: PreflightOptions, runner: Runner, fp8: bool, base_dir: Path
) -> tuple[Check, Path | None]:
    """One page through `ocrfleet run` on GPU 0; returns the check and the run directory."""
    pdf = options.smoke_pdf
    if pdf is None:
        if importlib.util.find_spec("reportlab") is None:
            return (
                Check(
                    "smoke",
                    False,
                    "skipped: no sample PDF to OCR (reportlab is not installed)",
                    "pass --smoke-pdf FILE (any one-page PDF), or pip install reportlab",
                    skipped=True,
                ),
                None,
            )
        try:
            pdf = make_sample_pdf(base_dir / "preflight-sample.pdf")
        except Exception as exc:
            return (
                Check(
                    "smoke",
                    False,
                    f"skipped: the sample PDF could not be made ({type(exc).__name__}: {exc})",
                    "install fonts-dejavu (Greek glyphs), or pass --smoke-pdf FILE",
                    skipped=True,
                ),
                None,
            )
    elif not pdf.is_file():
        return Check("smoke", False, f"{pdf} does not exist", "pass an existing PDF"), None
    run_dir = base_dir / f"smoke-{time.strftime('%Y%m%dT%H%M%S')}"
    cmd = smoke_command(pdf, run_dir, options.resolved_model(), options.timeout, fp8)
    rerun = f"see {OutputLayout(run_dir).run_log}; rerun by hand: {shlex.join(cmd)}"
    try:
        rc, out, err = runner(cmd)
    except OSError as exc:
        return Check("smoke", False, f"could not start ocrfleet: {exc}", rerun), run_dir
    record = _first_text_record(run_dir) if run_dir.is_dir() else None
    if rc == 0 and record is not None:
        text = " ".join(str(record["text"]).split())
        excerpt = text[:60] + ("…" if len(text) > 60 else "")
        return (
            Check("smoke", True, f"page 1 → {len(text)} characters: {excerpt!r} ({run_dir})"),
            run_dir,
        )
    if rc == 0:
        detail = "the run finished but no page came back with text"
    else:
        detail = f"`ocrfleet run` exited with {rc}: {tail_lines(err or out) or 'no output'}"
    return Check("smoke", False, detail, rerun), run_dir


def throughput_check(
    run_dir: Path,
    out_path: Path,
    gpus: Sequence[GpuInfo],
    software: dict[str, Any],
    model: str,
) -> Check:
    """A baseline from the smoke run's summary, written down with the machine and versions."""
    summary_path = OutputLayout(run_dir).summary()
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        this_run = ThisRun.from_json(summary["this_run"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Check(
            "throughput",
            False,
            f"no run summary to read ({type(exc).__name__}: {exc})",
            f"check {summary_path}",
        )
    pages = int(this_run.pages_processed or 0)
    wall = float(this_run.wall_seconds or 0.0)
    rate = this_run.pages_per_second_after_engine_start
    basis = "after engine start"
    if not rate and pages and wall > 0:
        rate, basis = pages / wall, "over the whole run, engine start included"
    if not rate:
        return Check(
            "throughput", False, "the smoke run processed no page", f"check {summary_path}"
        )
    baseline = {
        "kind": "ocrfleet-preflight-baseline",
        "note": "one page on one GPU: a smoke baseline, not a benchmark",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "gpu": {
            "name": gpus[0].name if gpus else None,
            "count": len(gpus),
            "driver": gpus[0].driver_version if gpus else None,
            "memory_mib": gpus[0].memory_mib if gpus else None,
            "compute_cap": cap_text(gpus[0].compute_cap) if gpus else None,
        },
        "versions": {
            "ocrfleet": __version__,
            "python": platform.python_version(),
            "torch": software.get("torch"),
            "torch_cuda": software.get("torch_cuda"),
            "vllm": software.get("vllm"),
        },
        "model": model,
        "pages": pages,
        "pages_per_second": round(float(rate), 4),
        "pages_per_second_basis": basis,
        "engine_start_seconds": this_run.engine_start_seconds,
        "wall_seconds": wall,
        # How the run shared GPU 0 (engines per GPU, CUDA MPS) and why: a long run does the same.
        "engines_per_gpu": summary.get("engines_per_gpu"),
        "run_summary": str(summary_path),
    }
    from .writers import write_json

    write_json(out_path, baseline)
    return Check(
        "throughput",
        True,
        f"{float(rate):.3f} pages/s on GPU 0 ({basis}{_sharing(summary)}) → {out_path}",
    )


def _sharing(summary: dict[str, Any]) -> str:
    """How the run shared GPU 0, from its summary's engines_per_gpu (if any), as
    '; 4 engine(s), CUDA MPS on (why)'."""
    sharing = summary.get("engines_per_gpu") or {}
    if not sharing.get("engines"):
        return ""
    mps = "on" if sharing.get("mps") else "off"
    reason = f" ({sharing['mps_reason']})" if sharing.get("mps_reason") else ""
    return f"; {sharing['engines']} engine(s), CUDA MPS {mps}{reason}"
