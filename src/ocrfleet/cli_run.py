"""`ocrfleet run`: its parser and config, both made from `options.RUN_OPTIONS`, and the run."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import RunConfig
from .diskfull import LogFileHandler
from .errors import ConfigError
from .layout import OutputLayout
from .options import COMMAND, Option, add_options, layer_values
from .options_doc import HelpFormatter
from .run_options import RUN_OPTIONS

EXIT_STATUSES = """\
exit status of `ocrfleet run`:
  0    every document done (needs_ocr pages, left for a run with an OCR engine, count)
  1    some documents failed, inputs were missing, or no PDF was found (the rest finished)
  2    bad options or a wrong setup (one line says what to do; nothing was started)
  3    stopped with pages left (Ctrl-C, SIGTERM, disk full, or every worker gave up)
  130  a second Ctrl-C stopped it at once
"""
RUN_END_LOGGER = "ocrfleet.run_end"


def add_run(sub: Any, options: Sequence[Option] = RUN_OPTIONS) -> None:
    run = sub.add_parser(
        "run",
        help="OCR PDFs into Markdown (re-run the same command to resume)",
        formatter_class=HelpFormatter,
        description="OCR every PDF of the inputs. Re-running the same command resumes.",
        epilog=EXIT_STATUSES,
    )
    add_options(run, options)


def config_from_args(
    args: argparse.Namespace, options: Sequence[Option] = RUN_OPTIONS
) -> RunConfig:
    """The RunConfig of parsed `ocrfleet run` arguments: each option's value goes to the field
    its description names."""
    layers = layer_values(args, options)
    command = layers.pop(COMMAND)
    return RunConfig.for_output(
        tuple(command["input_dir"]) + tuple(command["inputs"]),
        command["output_dir"],
        work_dir=command["work_dir"],
        **RunConfig.layer_kwargs(layers),
    )


def setup_logging(level: str, output_dir: Path | None) -> None:
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


def cmd_run(args: argparse.Namespace) -> int:
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
        setup_logging(config.log_level, config.output_dir)
        return _run_ray(args, config)
    config = resolve_run_config(config)
    check_run_setup(config)  # wrong setups: one line, exit 2, before any file is written
    setup_logging(config.log_level, config.output_dir)
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
