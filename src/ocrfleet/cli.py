"""The `ocrfleet` command: a thin layer over the library (runner, status, preflight, testing)."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .cli_run import EXIT_STATUSES, add_run, cmd_run
from .diskfull import DiskFull, is_disk_full
from .diskfull import detail as disk_detail
from .errors import ConfigError, LedgerError, OcrfleetError
from .layout import OutputLayout
from .options import Option
from .options_doc import HelpFormatter
from .run_options import RUN_OPTIONS

EXAMPLES = """\
examples:
  ocrfleet run scans/ --output-dir out/                      # every PDF under scans/, all GPUs
  ocrfleet run examples/pdfs -o out/ --engine text           # CPU: the PDFs' own text layer
  ocrfleet run pdfs/ -o out/ --ocr-engine tesseract         # text layer where good, else Tesseract
  ocrfleet eval out/ --truth truth/                          # CER/WER against truth texts
  ocrfleet run corpus.txt -o out/ --gpus 0,1 --engines-per-gpu 2
  ocrfleet run 'archive/**/*.pdf' -o out/ --num-shards 4 --shard-index 0
  ocrfleet status out/ --json
  ocrfleet export out/ --to dataset/ --format parquet         # documents, for DuckDB/datasets
  ocrfleet run s3://b/corpus/ -o s3://b/out --ray auto --num-shards 8   # shards on Ray
  ocrfleet report out/                                       # out/report.html
"""


def build_parser(run_options: Sequence[Option] = RUN_OPTIONS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocrfleet",
        description="Resumable PDF → Markdown with DeepSeek-OCR on vLLM, at corpus scale.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES + "\n" + EXIT_STATUSES,
    )
    parser.add_argument("--version", action="version", version=f"ocrfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run(sub, run_options)
    status = sub.add_parser("status", help="progress of a run, from its ledger")
    status.add_argument("output_dir", help="a local directory or s3://bucket/prefix")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    pre = sub.add_parser(
        "preflight",
        help="check a GPU node before a run: GPUs, driver, torch/vLLM, FP8 KV, a smoke page, "
        "baseline pages/s",
    )
    pre.add_argument("--expect-gpus", type=int, help="fail unless this many GPUs are visible")
    pre.add_argument("--expect-model", help="e.g. L4 (a word of the GPU name)")
    pre.add_argument(
        "--min-driver", type=int, default=550, help="lowest NVIDIA driver major version accepted"
    )
    pre.add_argument("--model", help="default /opt/models/DeepSeek-OCR if present, else the hub id")
    pre.add_argument("--smoke-pdf", type=Path, help="default: a one-page sample")
    pre.add_argument("--output-dir", type=Path, help="where the smoke run writes")
    pre.add_argument("--throughput-json", type=Path, help="where the baseline pages/s goes")
    pre.add_argument("--timeout", type=float, default=300.0, help="seconds the smoke run may take")
    pre.add_argument(
        "--skip-smoke", action="store_true", help="skip the one-page smoke run and the baseline"
    )
    pre.add_argument("--json", action="store_true", help="machine-readable output")
    rep = sub.add_parser(
        "report",
        help="write OUT/report.html: throughput, stages, GPU use, outcomes, failures, "
        "slowest and flagged pages (also written at the end of every run)",
    )
    rep.add_argument("output_dir", type=Path, help="the output directory of a run")
    rep.add_argument(
        "--output", type=Path, help="where to write the HTML (default: OUT/report.html)"
    )
    ev = sub.add_parser(
        "eval",
        help="CER/WER of a run's Markdown against plain-text truth files (one per document)",
    )
    ev.add_argument("output_dir", type=Path, help="the run's output directory")
    ev.add_argument(
        "--truth", type=Path, required=True, help="DIR of <name>.txt, matched to <name>.pdf"
    )
    ev.add_argument("--json", action="store_true", help="machine-readable output")
    ckpt = sub.add_parser(
        "make-checkpoint",
        help="write a synthetic DeepSeek-OCR model directory (config + tokenizer, no weights) "
        "for --load-format dummy",
    )
    ckpt.add_argument("directory", type=Path, help="where to write it (created)")
    ckpt.add_argument(
        "--size",
        choices=("tiny", "full"),
        default="tiny",
        help="tiny: runs on CPU vLLM in tests; full: the real architecture's sizes (GPU runs)",
    )
    _add_export(sub)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.formatter_class = HelpFormatter
    return parser


EXPORT_EXAMPLES = """\
examples:
  ocrfleet export out/ --to dataset/                       # zstd Parquet, one row per document
  ocrfleet export out/ --to pages/ --level page --format jsonl
  ocrfleet export s3://bucket/out --to dataset/ --complete-only
  ocrfleet export out/ --to clean/ --where "status = 'done' and flag != 'repetition_loop'"
Run it again after more pages finished: only changed documents are rewritten.
--where fields: status, page_status, doc_status, route, flag, engine; operators =, !=,
in ('a', 'b'), not in (…); combined with and, or, not, parentheses.
"""


def _add_export(sub: Any) -> None:
    from .export import DEFAULT_ROWS_PER_FILE
    from .export_files import FORMATS, LEVELS

    exp = sub.add_parser(
        "export",
        help="the corpus as Parquet or JSONL shards (every shard ledger of OUT), incrementally",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Merge the ledgers of one or more runs into dataset files with a "
        "_manifest.json; the schema is in docs/export-schema.md.",
        epilog=EXPORT_EXAMPLES,
    )
    exp.add_argument("outputs", nargs="+", help="run output directories (local or s3://)")
    exp.add_argument("--to", dest="dest", type=Path, required=True, help="a local directory")
    exp.add_argument("--format", choices=FORMATS, default="parquet", help="default: parquet")
    exp.add_argument("--level", choices=LEVELS, default="document", help="default: document")
    exp.add_argument(
        "--rows-per-file",
        type=int,
        metavar="N",
        default=DEFAULT_ROWS_PER_FILE,
        help=f"rows per data file (default {DEFAULT_ROWS_PER_FILE}; a document's rows stay "
        "in one file)",
    )
    exp.add_argument(
        "--where", metavar="FILTER", help="a filter, e.g. \"status = 'done'\" (see below)"
    )
    exp.add_argument(
        "--complete-only",
        action="store_true",
        help="leave out documents with failed pages (by default exported, failures marked)",
    )
    exp.add_argument("--json", action="store_true", help="the result as JSON")


def _cmd_status(args: argparse.Namespace) -> int:
    from .shard_view import format_shard_states, job_status
    from .status import format_status

    status = job_status(args.output_dir)
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
    else:
        print(format_status(status))
        if status.get("shard_states"):
            print(format_shard_states(status["shard_states"]))
    return 0


def _cmd_preflight(args: argparse.Namespace) -> int:
    from .preflight import PreflightOptions, exit_code, report, run_preflight

    checks = run_preflight(
        PreflightOptions(
            expect_gpus=args.expect_gpus,
            expect_model=args.expect_model,
            min_driver=args.min_driver,
            smoke_pdf=args.smoke_pdf,
            model=args.model,
            output_dir=args.output_dir,
            throughput_json=args.throughput_json,
            timeout=args.timeout,
            skip_smoke=args.skip_smoke,
        )
    )
    print(report(checks, as_json=args.json))
    return exit_code(checks)


def _cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .export import ExportOptions, export

    result = export(
        ExportOptions(
            outputs=tuple(args.outputs),
            dest=args.dest,
            format=args.format,
            level=args.level,
            rows_per_file=args.rows_per_file,
            where=args.where,
            complete_only=args.complete_only,
        )
    )
    if args.json:
        print(
            json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()})
        )
        return 0
    print(
        f"{result.documents} document(s), {result.rows} row(s) in {result.files} file(s) "
        f"under {result.dest} | this export: {result.added} added, {result.replaced} replaced, "
        f"{result.removed} removed, {result.unchanged} unchanged"
    )
    if result.unfinished:
        print(
            f"{result.unfinished} document(s) still have pages to do: export again when the "
            "run has finished them"
        )
    print(f"manifest: {result.manifest}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    try:
        print(write_report(args.output_dir, args.output))
    except OSError as exc:
        target = args.output or OutputLayout(args.output_dir).report
        raise ConfigError(
            f"cannot write {target} ({exc.strerror or exc}); give --output a writable path"
        ) from None
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run, format_table

    report = evaluate_run(args.output_dir, args.truth)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_table(report))
    return 0 if report["documents"] else 1


def _cmd_make_checkpoint(args: argparse.Namespace) -> int:
    from .testing.checkpoint import write_checkpoint

    path = write_checkpoint(args.directory, size=args.size)
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .redact_stream import install_excepthooks

    install_excepthooks()  # a traceback nobody caught is printed redacted
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {
        "run": cmd_run,
        "status": _cmd_status,
        "make-checkpoint": _cmd_make_checkpoint,
        "preflight": _cmd_preflight,
        "export": _cmd_export,
        "report": _cmd_report,
        "eval": _cmd_eval,
    }
    try:
        return commands[args.command](args)
    except DiskFull as exc:
        print(f"ocrfleet: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, LedgerError) as exc:
        print(f"ocrfleet: {exc}", file=sys.stderr)
        return 2
    except OcrfleetError as exc:
        print(f"ocrfleet: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.DatabaseError) as exc:
        where = getattr(args, "output_dir", "")
        if is_disk_full(exc):
            print(f"ocrfleet: {DiskFull(where, disk_detail(exc))}", file=sys.stderr)
            return 3
        if not isinstance(exc, sqlite3.DatabaseError):
            raise
        # Damage deep inside a ledger shows only when that part is read.
        print(
            f"ocrfleet: the ledger in {where} cannot be used ({exc}): restore it (a checkpoint, "
            "a backup), or run again with --fresh-ledger to start a new one",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
