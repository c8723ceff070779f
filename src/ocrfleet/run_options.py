"""Every option of `ocrfleet run`, described once (options.Option rows).

`ocrfleet run`'s parser (cli_run.py), the config it builds (`config_from_args`) and the README's
options table (options_doc.py) are all made from `RUN_OPTIONS`. Adding an option is one row here
plus its field in the layer (config.py) and the code that reads it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .config import RESOLUTIONS
from .gpu_sharing import MPS_MODES
from .options import COMMAND, RAY_GROUP, VLLM_GROUP, Option


def _gpus_arg(value: str) -> str:
    if value == "auto" or all(part.strip().isdigit() for part in value.split(",")):
        return value
    raise argparse.ArgumentTypeError("--gpus takes 'auto' or a list like 0,1,2,3")


def _gpu_list(value: str) -> tuple[int, ...]:
    return () if value == "auto" else tuple(int(g) for g in value.split(","))


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


def _progress(no_progress: bool) -> bool | None:
    return False if no_progress else None  # None: a bar when stderr is a terminal


RUN_OPTIONS: tuple[Option, ...] = (
    Option(("inputs",), "PDF files, directories, globs or list files", COMMAND, nargs="*"),
    Option(("--input-dir",), "a directory of PDFs", COMMAND, action="append", default=[]),
    Option(
        ("-o", "--output-dir"),
        "a local directory, or s3://bucket/prefix (written in --work-dir first, then uploaded "
        "with the ledger checkpointed)",
        COMMAND,
        required=True,
    ),
    Option(
        ("--sync-to",),
        "s3://bucket/prefix: upload outputs and ledger checkpoints there (local -o)",
        "sync",
    ),
    Option(
        ("--work-dir",),
        "local directory for an s3:// output (default: under ~/.cache)",
        COMMAND,
        type=Path,
    ),
    Option(
        ("--stage-dir",),
        "where s3:// inputs are downloaded (default OUT/.ocrfleet-inputs)",
        "sync",
        type=Path,
    ),
    Option(
        ("--sync-interval",),
        "seconds between uploads of an s3:// output",
        "sync",
        default=300.0,
        type=float,
    ),
    Option(
        ("--engine",),
        "auto (per page: trusted text layer, else --ocr-engine), vllm, tesseract, text "
        "(the PDF's text layer only), or module:factory",
        "engine",
        field="name",
        default="auto",
    ),
    Option(
        ("--mode",),
        "clean: grounding tags removed, figures cropped and linked; raw: model output verbatim",
        "render",
        default="clean",
        choices=("clean", "raw"),
    ),
    Option(
        ("--prompt",),
        "DeepSeek-OCR prompt: markdown (<|grounding|>Convert the document to markdown.) "
        "or free (Free OCR.)",
        "policy",
        default="markdown",
        choices=("markdown", "free"),
    ),
    Option(
        ("--dpi",), "rendering resolution (as DeepSeek's script)", "render", default=144, type=int
    ),
    Option(
        ("--max-image-pixels",),
        "pages larger than this are rendered scaled down",
        "render",
        default=25_000_000,
        type=int,
    ),
    Option(
        ("--image-cache",),
        "keep rendered pages here (local NVMe)",
        "render",
        type=Path,
    ),
    Option(
        ("--render-workers",),
        "render processes per engine worker (default: CPU cores ÷ engines, at most 16)",
        "render",
        type=int,
    ),
    Option(
        ("--batch-pages",),
        "pages in flight per engine worker (default: the engine's batch + 2 per render process)",
        "fleet",
        type=int,
    ),
    Option(
        ("--timeout-seconds",),
        "per page and attempt, queueing in the engine included",
        "policy",
        default=600.0,
        type=float,
    ),
    Option(
        ("--max-attempts",),
        "attempts per page; attempt 2 switches prompt (a page that looped is asked for plain text)",
        "policy",
        default=2,
        type=int,
    ),
    Option(("--retry-failed",), "redo pages that failed", "policy", action="store_true"),
    Option(
        ("--num-shards",),
        "split the documents into N shards by content id (a document never changes shard); "
        "one ledger per shard",
        "fleet",
        default=1,
        type=int,
    ),
    Option(("--shard-index",), "the shard this run does", "fleet", default=0, type=int),
    Option(
        ("--gpus",),
        "'auto' (every visible GPU) or a list like 0,1,2,3",
        "fleet",
        default="auto",
        type=_gpus_arg,
        convert=_gpu_list,
    ),
    Option(
        ("--workers",),
        "worker processes when no GPU is used (e.g. the text engine)",
        "fleet",
        default=1,
        type=int,
    ),
    Option(
        ("--engines-per-gpu",),
        "vLLM engines sharing each GPU, started one after another; auto: from the GPU's "
        "memory, the model's weights and the CPU cores per GPU (the run summary says why)",
        "fleet",
        default="auto",
        type=_engines_per_gpu_arg,
    ),
    Option(
        ("--mps",),
        "CUDA MPS, so engines sharing a GPU run their kernels side by side: auto (where "
        "engines share a GPU and nvidia-cuda-mps-control is installed), on, off; a private "
        "daemon per GPU, quit at the end",
        "fleet",
        default="auto",
        choices=MPS_MODES,
    ),
    Option(
        ("--max-worker-restarts",),
        "restarts per engine worker (backoff 1 s … 60 s) before giving up on it",
        "fleet",
        default=5,
        type=int,
    ),
    Option(
        ("--blank-threshold",),
        "ink share under which a page with no text layer is blank (0 disables)",
        "policy",
        default=0.00002,
        type=float,
    ),
    Option(
        ("--fresh-ledger",),
        "if the ledger is empty (0 bytes) or unreadable, move it aside and start a new one "
        "(every page is redone); without it such a ledger is refused",
        "run",
        action="store_true",
    ),
    Option(
        ("--render-timeout",),
        "seconds a page may take to render; a stuck render process is killed and replaced, "
        "the page fails with the reason, the run goes on",
        "render",
        default=300.0,
        type=float,
    ),
    Option(
        ("--max-pages-per-document",),
        "a document with more pages fails with one reason (default: no limit)",
        "policy",
        type=int,
    ),
    Option(
        ("--no-progress",),
        "no progress bar (drawn only when stderr is a terminal anyway)",
        "run",
        field="progress",
        action="store_true",
        convert=_progress,
    ),
    Option(
        ("--log-level",),
        "what run.log and the terminal get",
        "run",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    Option(
        ("--ray",),
        "run the --num-shards shards as Ray tasks: auto (the cluster this node is in), "
        "local (a throwaway local cluster), or host:port",
        COMMAND,
        metavar="ADDRESS",
        group=RAY_GROUP,
    ),
    Option(
        ("--gpus-per-shard",),
        "GPUs (or --shard-resource units) each shard asks for (default: the largest node's)",
        COMMAND,
        type=float,
        group=RAY_GROUP,
    ),
    Option(
        ("--max-shard-retries",),
        "times Ray reruns a shard whose node was lost (it resumes from its checkpoint)",
        COMMAND,
        default=3,
        type=int,
        group=RAY_GROUP,
    ),
    Option(
        ("--shard-resource",),
        "the Ray resource a shard asks for (a custom one stands in for GPUs on CPU nodes)",
        COMMAND,
        default="GPU",
        group=RAY_GROUP,
    ),
    Option(
        ("--ocr-engine",),
        "with --engine auto: vllm, tesseract or none for the pages that need OCR (default: "
        "vllm with a GPU and vLLM, else tesseract if installed, else none: the pages are left "
        "as needs_ocr for a later run)",
        "engine",
        convert=lambda value: value or "default",
    ),
    Option(
        ("--tesseract-langs",),
        "Tesseract languages, e.g. grc+ell+eng",
        "engine",
        default="ell+eng",
    ),
    Option(
        ("--redo-flag",),
        "send finished pages carrying this quality flag to OCR again (repeatable)",
        "policy",
        field="redo_flags",
        action="append",
        default=[],
        metavar="FLAG",
        convert=tuple,
    ),
    Option(
        ("--model",),
        "hub id or local directory",
        "engine",
        default="deepseek-ai/DeepSeek-OCR",
        group=VLLM_GROUP,
    ),
    Option(("--dtype",), "model dtype", "engine", default="bfloat16", group=VLLM_GROUP),
    Option(
        ("--kv-cache-dtype",),
        "fp8 (as the plan runs it; compute capability ≥ 8.9) or auto (the model's dtype)",
        "engine",
        default="fp8",
        choices=("auto", "fp8"),
        group=VLLM_GROUP,
    ),
    Option(("--quantization",), "fp8 weights", "engine", choices=("fp8",), group=VLLM_GROUP),
    Option(
        ("--gpu-memory-utilization",),
        "share of each GPU's memory for vLLM, split between the engines on one GPU",
        "engine",
        default=0.9,
        type=float,
        group=VLLM_GROUP,
    ),
    Option(
        ("--max-num-seqs",),
        "pages inside one engine at once (default: vLLM's)",
        "engine",
        type=int,
        group=VLLM_GROUP,
    ),
    Option(
        ("--max-model-len",),
        "prompt + output tokens of one page",
        "engine",
        default=8192,
        type=int,
        group=VLLM_GROUP,
    ),
    Option(
        ("--max-tokens",),
        "output tokens per page",
        "engine",
        default=8192,
        type=int,
        group=VLLM_GROUP,
    ),
    Option(
        ("--tensor-parallel-size",),
        "one engine over N GPUs (N must divide the model's 10 attention heads)",
        "engine",
        default=1,
        type=int,
        group=VLLM_GROUP,
    ),
    Option(
        ("--mm-encoder-tp-mode",),
        "passed to vLLM (DeepSeek-OCR supports weights only; default: vLLM's)",
        "engine",
        choices=("weights", "data"),
        group=VLLM_GROUP,
    ),
    Option(
        ("--load-format",),
        "e.g. dummy: random weights (tests, benchmarks)",
        "engine",
        group=VLLM_GROUP,
    ),
    Option(
        ("--enforce-eager",),
        "no CUDA graphs (slower; for debugging)",
        "engine",
        action="store_true",
        group=VLLM_GROUP,
    ),
    Option(
        ("--resolution",),
        "DeepSeek-OCR mode: tiny 73, small 111, base 273, large 421 image tokens; gundam "
        "273 + tiles (up to 933)",
        "engine",
        default="gundam",
        choices=RESOLUTIONS,
        group=VLLM_GROUP,
    ),
    Option(
        ("--preprocess",),
        "render: resize/tile in ocrfleet's render processes (fast); vllm: in vLLM's frontend "
        "thread, as the recipe",
        "engine",
        default="render",
        choices=("render", "vllm"),
        group=VLLM_GROUP,
    ),
    Option(
        ("--ngram",),
        "no-repeat n-gram logits processor",
        "engine",
        field="ngram_impl",
        default="batched",
        choices=("batched", "per-request", "off"),
        group=VLLM_GROUP,
    ),
    Option(
        ("--ngram-size",),
        "n of the no-repeat n-gram ban (the recipe's); <td>, </td> are exempt",
        "engine",
        default=30,
        type=int,
        group=VLLM_GROUP,
    ),
    Option(
        ("--ngram-window",),
        "tokens the n-gram ban looks back over",
        "engine",
        default=90,
        type=int,
        group=VLLM_GROUP,
    ),
    Option(
        ("--ignore-eos",),
        "benchmarks only: always decode --max-tokens (random weights)",
        "engine",
        action="store_true",
        group=VLLM_GROUP,
    ),
    Option(
        ("--vllm-arg",),
        "any other vLLM engine argument",
        "engine",
        field="extra_args",
        type=_vllm_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        group=VLLM_GROUP,
        convert=dict,
    ),
    Option(
        ("--gpu-sample-seconds",),
        "seconds between GPU samples (utilisation, memory, power, temperature) each GPU "
        "worker writes to the ledger; 0 turns them off",
        "fleet",
        default=5.0,
        type=float,
    ),
)
