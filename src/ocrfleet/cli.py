"""The `ocrfleet` command: a thin layer over the library (runner, status, preflight, testing)."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__
from .config import RESOLUTIONS, EngineConfig, RunConfig
from .diskfull import DiskFull, LogFileHandler, is_disk_full
from .diskfull import detail as disk_detail
from .errors import ConfigError, LedgerError, OcrfleetError
from .layout import OutputLayout

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
EXIT_STATUSES = """\
exit status of `ocrfleet run`:
  0    every document done (needs_ocr pages, left for a run with an OCR engine, count)
  1    some documents failed, inputs were missing, or no PDF was found (the rest finished)
  2    bad options or a wrong setup (one line says what to do; nothing was started)
  3    stopped with pages left (Ctrl-C, SIGTERM, disk full, or every worker gave up)
  130  a second Ctrl-C stopped it at once
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Defaults that say something in option help (not None, off or []), the epilog
    (examples, exit statuses) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        from .options_doc import shown_default

        text = action.help or ""
        shown = shown_default(action)
        if "%(default)" in text or not shown or shown == "required":
            return text
        return f"{text} (default: %(default)s)"


def _gpus_arg(value: str) -> str:
    if value == "auto" or all(part.strip().isdigit() for part in value.split(",")):
        return value
    raise argparse.ArgumentTypeError("--gpus takes 'auto' or a list like 0,1,2,3")


def _engines_per_gpu_arg(value: str) -> int | None:
    if value == "auto":
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError("--engines-per-gpu takes 'auto' or a number ≥ 1")


def _vllm_arg(value: str) -> tuple[str, Any]:
    if "=" not in value:
        raise argparse.ArgumentTypeError("--vllm-arg takes KEY=VALUE (VALUE may be JSON)")
    key, raw = value.split("=", 1)
    try:
        parsed: Any = json.loads(raw)
    except json.JSONDecodeError:
        parsed = raw
    return key.strip().replace("-", "_"), parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocrfleet",
        description="Resumable PDF → Markdown with DeepSeek-OCR on vLLM, at corpus scale.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES + "\n" + EXIT_STATUSES,
    )
    parser.add_argument("--version", action="version", version=f"ocrfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
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
                command.formatter_class = _HelpFormatter
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


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="OCR PDFs into Markdown (re-run the same command to resume)",
        formatter_class=_HelpFormatter,
        description="OCR every PDF of the inputs. Re-running the same command resumes.",
        epilog=EXIT_STATUSES,
    )
    run.add_argument("inputs", nargs="*", help="PDF files, directories, globs or list files")
    run.add_argument("--input-dir", action="append", default=[], help="a directory of PDFs")
    run.add_argument(
        "-o",
        "--output-dir",
        required=True,
        help="a local directory, or s3://bucket/prefix (written in --work-dir "
        "first, then uploaded with the ledger checkpointed)",
    )
    run.add_argument(
        "--sync-to",
        help="s3://bucket/prefix: upload outputs and ledger checkpoints there (local -o)",
    )
    run.add_argument(
        "--work-dir",
        type=Path,
        help="local directory for an s3:// output (default: under ~/.cache)",
    )
    run.add_argument(
        "--stage-dir",
        type=Path,
        help="where s3:// inputs are downloaded (default OUT/.ocrfleet-inputs)",
    )
    run.add_argument(
        "--sync-interval",
        type=float,
        default=300.0,
        help="seconds between uploads of an s3:// output",
    )
    run.add_argument(
        "--engine",
        default="auto",
        help="auto (per page: trusted text layer, else --ocr-engine), vllm, tesseract, text "
        "(the PDF's text layer only), or module:factory",
    )
    run.add_argument(
        "--mode",
        choices=("clean", "raw"),
        default="clean",
        help="clean: grounding tags removed, figures cropped and linked; raw: model output "
        "verbatim",
    )
    run.add_argument(
        "--prompt",
        choices=("markdown", "free"),
        default="markdown",
        help="DeepSeek-OCR prompt: markdown (<|grounding|>Convert the document to markdown.) "
        "or free (Free OCR.)",
    )
    run.add_argument(
        "--dpi", type=int, default=144, help="rendering resolution (as DeepSeek's script)"
    )
    run.add_argument(
        "--max-image-pixels",
        type=int,
        default=25_000_000,
        help="pages larger than this are rendered scaled down",
    )
    run.add_argument("--image-cache", type=Path, help="keep rendered pages here (local NVMe)")
    run.add_argument(
        "--render-workers",
        type=int,
        help="render processes per engine worker (default: CPU cores ÷ engines, at most 16)",
    )
    run.add_argument(
        "--batch-pages",
        type=int,
        help="pages in flight per engine worker (default: the engine's batch + 2 per "
        "render process)",
    )
    run.add_argument(
        "--timeout-seconds",
        type=float,
        default=600.0,
        help="per page and attempt, queueing in the engine included",
    )
    run.add_argument(
        "--max-attempts",
        type=int,
        default=2,
        help="attempts per page; attempt 2 switches prompt (a page that looped is asked for "
        "plain text)",
    )
    run.add_argument("--retry-failed", action="store_true", help="redo pages that failed")
    run.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="split the documents into N shards by content id (a document never changes "
        "shard); one ledger per shard",
    )
    run.add_argument("--shard-index", type=int, default=0, help="the shard this run does")
    run.add_argument(
        "--gpus",
        type=_gpus_arg,
        default="auto",
        help="'auto' (every visible GPU) or a list like 0,1,2,3",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes when no GPU is used (e.g. the text engine)",
    )
    run.add_argument(
        "--engines-per-gpu",
        type=_engines_per_gpu_arg,
        default="auto",
        help="vLLM engines sharing each GPU, started one after another; auto: from the GPU's "
        "memory, the model's weights and the CPU cores per GPU (the run summary says why)",
    )
    run.add_argument(
        "--max-worker-restarts",
        type=int,
        default=5,
        help="restarts per engine worker (backoff 1 s … 60 s) before giving up on it",
    )
    run.add_argument(
        "--blank-threshold",
        type=float,
        default=0.00002,
        help="ink share under which a page with no text layer is blank (0 disables)",
    )
    run.add_argument(
        "--fresh-ledger",
        action="store_true",
        help="if the ledger is empty (0 bytes) or unreadable, move it aside and start a new "
        "one (every page is redone); without it such a ledger is refused",
    )
    run.add_argument(
        "--render-timeout",
        type=float,
        default=300.0,
        help="seconds a page may take to render; a stuck render process is killed and "
        "replaced, the page fails with the reason, the run goes on",
    )
    run.add_argument(
        "--max-pages-per-document",
        type=int,
        help="a document with more pages fails with one reason (default: no limit)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (drawn only when stderr is a terminal anyway)",
    )
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="what run.log and the terminal get",
    )
    _add_ray_options(run)
    run.add_argument(
        "--ocr-engine",
        default=None,
        help="with --engine auto: vllm, tesseract or none for the pages that need OCR "
        "(default: vllm with a GPU and vLLM, else tesseract if installed, else none: the pages "
        "are left as needs_ocr for a later run)",
    )
    run.add_argument(
        "--tesseract-langs", default="ell+eng", help="Tesseract languages, e.g. grc+ell+eng"
    )
    run.add_argument(
        "--redo-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="send finished pages carrying this quality flag to OCR again (repeatable)",
    )
    vllm = run.add_argument_group("vLLM engine")
    vllm.add_argument(
        "--model", default="deepseek-ai/DeepSeek-OCR", help="hub id or local directory"
    )
    vllm.add_argument("--dtype", default="bfloat16", help="model dtype")
    vllm.add_argument(
        "--kv-cache-dtype",
        default="fp8",
        choices=("auto", "fp8"),
        help="fp8 (as the plan runs it; compute capability ≥ 8.9) or auto (the model's dtype)",
    )
    vllm.add_argument("--quantization", choices=("fp8",), help="fp8 weights")
    vllm.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.9,
        help="share of each GPU's memory for vLLM, split between the engines on one GPU",
    )
    vllm.add_argument(
        "--max-num-seqs", type=int, help="pages inside one engine at once (default: vLLM's)"
    )
    vllm.add_argument(
        "--max-model-len", type=int, default=8192, help="prompt + output tokens of one page"
    )
    vllm.add_argument("--max-tokens", type=int, default=8192, help="output tokens per page")
    vllm.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=1,
        help="one engine over N GPUs (N must divide the model's 10 attention heads)",
    )
    vllm.add_argument(
        "--mm-encoder-tp-mode",
        choices=("weights", "data"),
        help="passed to vLLM (DeepSeek-OCR supports weights only; default: vLLM's)",
    )
    vllm.add_argument("--load-format", help="e.g. dummy: random weights (tests, benchmarks)")
    vllm.add_argument(
        "--enforce-eager", action="store_true", help="no CUDA graphs (slower; for debugging)"
    )
    vllm.add_argument(
        "--resolution",
        choices=RESOLUTIONS,
        default="gundam",
        help="DeepSeek-OCR mode: tiny 73, small 111, base 273, large 421 image "
        "tokens; gundam 273 + tiles (up to 933)",
    )
    vllm.add_argument(
        "--preprocess",
        choices=("render", "vllm"),
        default="render",
        help="render: resize/tile in ocrfleet's render processes (fast); vllm: "
        "in vLLM's frontend thread, as the recipe",
    )
    vllm.add_argument(
        "--ngram",
        choices=("batched", "per-request", "off"),
        default="batched",
        help="no-repeat n-gram logits processor",
    )
    vllm.add_argument(
        "--ngram-size",
        type=int,
        default=30,
        help="n of the no-repeat n-gram ban (the recipe's); <td>, </td> are exempt",
    )
    vllm.add_argument(
        "--ngram-window", type=int, default=90, help="tokens the n-gram ban looks back over"
    )
    vllm.add_argument(
        "--ignore-eos",
        action="store_true",
        help="benchmarks only: always decode --max-tokens (random weights)",
    )
    vllm.add_argument(
        "--vllm-arg",
        type=_vllm_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other vLLM engine argument",
    )
    run.add_argument(
        "--gpu-sample-seconds",
        type=float,
        default=5.0,
        help="seconds between GPU samples (utilisation, memory, power, temperature) each GPU "
        "worker writes to the ledger; 0 turns them off",
    )


def _add_ray_options(run: Any) -> None:
    ray = run.add_argument_group("many nodes on Ray (pip install 'ocrfleet[ray]')")
    ray.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the --num-shards shards as Ray tasks: auto (the cluster this node is in), "
        "local (a throwaway local cluster), or host:port",
    )
    ray.add_argument(
        "--gpus-per-shard",
        type=float,
        help="GPUs (or --shard-resource units) each shard asks for (default: the largest node's)",
    )
    ray.add_argument(
        "--max-shard-retries",
        type=int,
        default=3,
        help="times Ray reruns a shard whose node was lost (it resumes from its checkpoint)",
    )
    ray.add_argument(
        "--shard-resource",
        default="GPU",
        help="the Ray resource a shard asks for (a custom one stands in for GPUs on CPU nodes)",
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    engine = EngineConfig(
        name=args.engine,
        model=args.model,
        dtype=args.dtype,
        kv_cache_dtype=args.kv_cache_dtype,
        quantization=args.quantization,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        max_tokens=args.max_tokens,
        tensor_parallel_size=args.tensor_parallel_size,
        mm_encoder_tp_mode=args.mm_encoder_tp_mode,
        load_format=args.load_format,
        enforce_eager=args.enforce_eager,
        resolution=args.resolution,
        preprocess=args.preprocess,
        ngram_impl=args.ngram,
        ngram_size=args.ngram_size,
        ngram_window=args.ngram_window,
        extra_args=dict(args.vllm_arg),
        ignore_eos=args.ignore_eos,
    )
    engine = replace(
        engine, ocr_engine=args.ocr_engine or "default", tesseract_langs=args.tesseract_langs
    )
    gpus = () if args.gpus == "auto" else tuple(int(g) for g in args.gpus.split(","))
    return RunConfig.for_output(
        tuple(args.input_dir) + tuple(args.inputs),
        args.output_dir,
        work_dir=args.work_dir,
        sync_to=args.sync_to,
        sync_interval=args.sync_interval,
        stage_dir=args.stage_dir,
        engine=engine,
        mode=args.mode,
        prompt=args.prompt,
        dpi=args.dpi,
        max_image_pixels=args.max_image_pixels,
        image_cache=args.image_cache,
        render_workers=args.render_workers,
        batch_pages=args.batch_pages,
        timeout_seconds=args.timeout_seconds,
        max_attempts=args.max_attempts,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        retry_failed=args.retry_failed,
        gpus=gpus,
        workers=args.workers,
        engines_per_gpu=args.engines_per_gpu,
        max_worker_restarts=args.max_worker_restarts,
        blank_threshold=args.blank_threshold,
        progress=False if args.no_progress else None,  # None: when stderr is a terminal
        log_level=args.log_level,
        gpu_sample_seconds=args.gpu_sample_seconds,
        fresh_ledger=args.fresh_ledger,
        render_timeout=args.render_timeout,
        redo_flags=tuple(args.redo_flag),
        max_pages_per_document=args.max_pages_per_document,
    )


def _setup_logging(level: str, output_dir: Path | None) -> None:
    from .redact import install_redaction
    from .telemetry import TqdmLogHandler

    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = TqdmLogHandler()
    console.setFormatter(fmt)
    handlers: list[logging.Handler] = [console]
    if output_dir is not None:
        layout = OutputLayout(output_dir)
        layout.logs_dir.mkdir(parents=True, exist_ok=True)
        file_handler = LogFileHandler(layout.run_log, encoding="utf-8")
        file_handler.setFormatter(fmt)
        handlers.append(file_handler)
        # The run's last line in run.log, whatever ended it (not repeated on the console).
        end = logging.getLogger(RUN_END_LOGGER)
        end.handlers[:] = [file_handler]
        end.propagate = False
    logging.basicConfig(level=level, handlers=handlers, force=True)
    install_redaction(handlers)  # tokens never reach a log line


RUN_END_LOGGER = "ocrfleet.run_end"


def _cmd_run(args: argparse.Namespace) -> int:
    from .resolve import resolve_run_config
    from .runner import run
    from .setup_checks import check_output_dir, check_run_setup

    if args.ray:
        from .ray_run import require_ray

        require_ray()  # before anything is staged or started
    config = config_from_args(args)
    if args.ray:
        # GPUs, the OCR engine of auto and the engine's install are the shards' nodes' to
        # decide (the head node of a cluster often has no GPU): each shard resolves and
        # checks on its own node (runner.run). The driver checks only what is its own.
        check_output_dir(config.output_dir)
        _setup_logging(config.log_level, config.output_dir)
        return _run_ray(args, config)
    config = resolve_run_config(config)
    check_run_setup(config)  # wrong setups: one line, exit 2, before any file is written
    _setup_logging(config.log_level, config.output_dir)
    end = logging.getLogger(RUN_END_LOGGER)
    try:
        result = run(config, handle_signals=True, setup_checked=True)
    except BaseException as exc:
        end.error("run ended without a summary: %s", str(exc) or type(exc).__name__)
        raise
    end.info("run ended: exit %d (%s)", result.exit_code, result.summary_path)
    s = result.summary
    pages, docs, this_run = s.pages, s.documents, s.this_run
    # Results go to stdout (a script can keep them); logs and progress go to stderr.
    print(
        f"documents: {docs.get('done', 0)} done, {docs.get('failed', 0)} failed, "
        f"{docs.get('pending', 0)} pending | pages: "
        + ", ".join(f"{v} {k}" for k, v in pages.items())
        + f" | this run: {this_run.pages_processed} pages in {this_run.wall_seconds:.1f} s"
        f" ({this_run.pages_per_second:.2f} pages/s)",
    )
    if {"text", "ocr"} & set(s.routes):
        print("routes: " + ", ".join(f"{v} {k}" for k, v in s.routes.items()), file=sys.stderr)
    if pages.get("needs_ocr"):
        print(
            f"{pages['needs_ocr']} page(s) need OCR and no OCR engine ran: re-run with "
            "--ocr-engine tesseract (CPU) or vllm (GPU) to do exactly those",
            file=sys.stderr,
        )
    for failed in s.failed_documents[:20]:
        print(f"failed: {failed.source}: {failed.reason}")
    if len(s.failed_documents) > 20:
        print(
            f"… and {len(s.failed_documents) - 20} more; see {result.summary_path}",
        )
    print(f"summary: {result.summary_path}")
    report = OutputLayout(result.summary_path.parent).report
    if report.is_file():
        print(f"report: {report}")
    return result.exit_code


def _run_ray(args: argparse.Namespace, config: RunConfig) -> int:
    from .ray_run import RayOptions, run_on_ray

    if args.shard_index:
        raise ConfigError("--ray runs every shard: leave --shard-index out")
    options = RayOptions(
        address=args.ray,
        num_shards=args.num_shards,
        gpus_per_shard=args.gpus_per_shard,
        max_shard_retries=args.max_shard_retries,
        resource=args.shard_resource,
        work_root=args.work_dir,
    )
    result = run_on_ray(config, options)
    s = result.summary
    print(
        f"documents: {s['documents']} | pages: {s['pages']} | this run: "
        f"{s['this_run']['pages_processed']} pages in {s['this_run']['wall_seconds']:.1f} s"
    )
    for shard in s["shards"]:
        where = ", ".join(n[:12] for n in shard["nodes"]) or "-"
        print(
            f"shard {shard['shard']}: exit {shard['exit_code']} on node(s) {where}"
            + (f": {shard['error']}" if shard["error"] else "")
        )
    for failed in s["failed_documents"][:20]:
        print(f"failed: {failed['source']}: {failed['reason']}")
    return result.exit_code


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
        "run": _cmd_run,
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
