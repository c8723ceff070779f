"""The `ocrfleet` command: a thin layer over the library (runner, status, preflight, testing)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import RESOLUTIONS, EngineConfig, RunConfig
from .errors import ConfigError, OcrfleetError

EXAMPLES = """\
examples:
  ocrfleet run scans/ --output-dir out/                      # every PDF under scans/, all GPUs
  ocrfleet run examples/pdfs -o out/ --engine text           # CPU: the PDFs' own text layer
  ocrfleet run corpus.txt -o out/ --gpus 0,1 --engines-per-gpu 2
  ocrfleet run 'archive/**/*.pdf' -o out/ --num-shards 4 --shard-index 0
  ocrfleet status out/ --json
"""


def _gpus_arg(value: str) -> str:
    if value == "auto" or all(part.strip().isdigit() for part in value.split(",")):
        return value
    raise argparse.ArgumentTypeError("--gpus takes 'auto' or a list like 0,1,2,3")


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
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=f"ocrfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    status = sub.add_parser("status", help="progress of a run, from its ledger")
    status.add_argument("output_dir", type=Path)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    pre = sub.add_parser(
        "preflight",
        help="check a GPU node before a run: GPUs, driver, torch/vLLM, FP8 KV, a smoke page, "
        "baseline pages/s",
    )
    pre.add_argument("--expect-gpus", type=int)
    pre.add_argument("--expect-model", help="e.g. L4 (a word of the GPU name)")
    pre.add_argument("--min-driver", type=int, default=550)
    pre.add_argument("--model", help="default /opt/models/DeepSeek-OCR if present, else the hub id")
    pre.add_argument("--smoke-pdf", type=Path, help="default: a one-page sample")
    pre.add_argument("--output-dir", type=Path, help="where the smoke run writes")
    pre.add_argument("--throughput-json", type=Path, help="where the baseline pages/s goes")
    pre.add_argument("--timeout", type=float, default=300.0)
    pre.add_argument("--skip-smoke", action="store_true")
    pre.add_argument("--json", action="store_true")
    ckpt = sub.add_parser(
        "make-checkpoint",
        help="write a synthetic DeepSeek-OCR model directory (config + tokenizer, no weights) "
        "for --load-format dummy",
    )
    ckpt.add_argument("directory", type=Path)
    ckpt.add_argument("--size", choices=("tiny", "full"), default="tiny")
    return parser


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="OCR PDFs into Markdown (re-run the same command to resume)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="OCR every PDF of the inputs. Re-running the same command resumes.",
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
        "--engine", default="vllm", help="vllm, text (the PDF's text layer), or module:factory"
    )
    run.add_argument("--mode", choices=("clean", "raw"), default="clean")
    run.add_argument("--prompt", choices=("markdown", "free"), default="markdown")
    run.add_argument("--dpi", type=int, default=144)
    run.add_argument(
        "--max-image-pixels",
        type=int,
        default=25_000_000,
        help="pages larger than this are rendered scaled down",
    )
    run.add_argument("--image-cache", type=Path, help="keep rendered pages here (local NVMe)")
    run.add_argument("--render-workers", type=int, help="render processes per engine worker")
    run.add_argument("--batch-pages", type=int, help="pages in flight per engine worker")
    run.add_argument(
        "--timeout-seconds",
        type=float,
        default=600.0,
        help="per page and attempt, queueing in the engine included",
    )
    run.add_argument("--max-attempts", type=int, default=2)
    run.add_argument("--retry-failed", action="store_true", help="redo pages that failed")
    run.add_argument("--num-shards", type=int, default=1)
    run.add_argument("--shard-index", type=int, default=0)
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
    run.add_argument("--engines-per-gpu", type=int, default=1)
    run.add_argument("--max-worker-restarts", type=int, default=5)
    run.add_argument(
        "--blank-threshold",
        type=float,
        default=0.0001,
        help="ink share under which a page is blank (0 disables)",
    )
    run.add_argument(
        "--max-pages-per-document",
        type=int,
        help="a document with more pages fails with one reason (default: no limit)",
    )
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    vllm = run.add_argument_group("vLLM engine")
    vllm.add_argument(
        "--model", default="deepseek-ai/DeepSeek-OCR", help="hub id or local directory"
    )
    vllm.add_argument("--dtype", default="bfloat16")
    vllm.add_argument("--kv-cache-dtype", default="fp8", choices=("auto", "fp8"))
    vllm.add_argument("--quantization", choices=("fp8",), help="fp8 weights")
    vllm.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    vllm.add_argument("--max-num-seqs", type=int)
    vllm.add_argument("--max-model-len", type=int, default=8192)
    vllm.add_argument("--max-tokens", type=int, default=8192, help="output tokens per page")
    vllm.add_argument("--tensor-parallel-size", type=int, default=1)
    vllm.add_argument("--mm-encoder-tp-mode", choices=("weights", "data"))
    vllm.add_argument("--load-format", help="e.g. dummy: random weights (tests, benchmarks)")
    vllm.add_argument("--enforce-eager", action="store_true")
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
    vllm.add_argument("--ngram-size", type=int, default=30)
    vllm.add_argument("--ngram-window", type=int, default=90)
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


def detect_gpus() -> list[int]:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(v) for v in visible.split(",") if v.strip().isdigit()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [i for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def local_output(output: str, work_dir: Path | None) -> tuple[Path, str | None]:
    """(local output directory, s3:// URI to upload to or None)."""
    if not output.startswith("s3://"):
        return Path(output), None
    if work_dir is None:
        digest = hashlib.sha256(output.encode()).hexdigest()[:16]
        work_dir = Path.home() / ".cache" / "ocrfleet" / "runs" / digest
    return work_dir, output


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
    gpus: tuple[int, ...] = ()
    if args.engine == "vllm":
        gpus = (
            tuple(detect_gpus())
            if args.gpus == "auto"
            else tuple(int(g) for g in args.gpus.split(","))
        )
    output_dir, sync_to = local_output(args.output_dir, args.work_dir)
    if args.sync_to:
        if sync_to and sync_to != args.sync_to:
            raise ConfigError("give an s3:// --output-dir or --sync-to, not two different ones")
        sync_to = args.sync_to
    return RunConfig(
        inputs=tuple(args.input_dir) + tuple(args.inputs),
        output_dir=output_dir,
        sync_to=sync_to,
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
        progress=not args.no_progress and sys.stderr.isatty(),
        log_level=args.log_level,
        max_pages_per_document=args.max_pages_per_document,
    )


def _setup_logging(level: str, output_dir: Path | None) -> None:
    from .redact import install_redaction
    from .telemetry import TqdmLogHandler

    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = TqdmLogHandler()
    console.setFormatter(fmt)
    handlers: list[logging.Handler] = [console]
    if output_dir is not None:
        (output_dir / "logs").mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(output_dir / "logs" / "run.log", encoding="utf-8")
        file_handler.setFormatter(fmt)
        handlers.append(file_handler)
    logging.basicConfig(level=level, handlers=handlers, force=True)
    install_redaction(handlers)  # tokens never reach a log line


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run

    config = config_from_args(args)
    _setup_logging(config.log_level, config.output_dir)
    result = run(config)
    s = result.summary
    pages, docs, this_run = s["pages"], s["documents"], s["this_run"]
    print(
        f"documents: {docs.get('done', 0)} done, {docs.get('failed', 0)} failed, "
        f"{docs.get('pending', 0)} pending | pages: "
        + ", ".join(f"{v} {k}" for k, v in pages.items())
        + f" | this run: {this_run['pages_processed']} pages in {this_run['wall_seconds']:.1f} s"
        f" ({this_run['pages_per_second']:.2f} pages/s)",
        file=sys.stderr,
    )
    for failed in s["failed_documents"][:20]:
        print(f"failed: {failed['source']}: {failed['reason']}", file=sys.stderr)
    if len(s["failed_documents"]) > 20:
        print(
            f"… and {len(s['failed_documents']) - 20} more; see {result.summary_path}",
            file=sys.stderr,
        )
    print(f"summary: {result.summary_path}", file=sys.stderr)
    return result.exit_code


def _cmd_status(args: argparse.Namespace) -> int:
    from .status import collect_status, format_status

    status = collect_status(args.output_dir)
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
    else:
        print(format_status(status))
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


def _cmd_make_checkpoint(args: argparse.Namespace) -> int:
    from .testing.checkpoint import write_checkpoint

    path = write_checkpoint(args.directory, size=args.size)
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {
        "run": _cmd_run,
        "status": _cmd_status,
        "make-checkpoint": _cmd_make_checkpoint,
        "preflight": _cmd_preflight,
    }
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        print(f"ocrfleet: {exc}", file=sys.stderr)
        return 2
    except OcrfleetError as exc:
        print(f"ocrfleet: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
