"""GPU benchmark: vLLM's DeepSeek-OCR recipe against ocrfleet's pipeline on the same pages.

Synthetic full-size checkpoint, dummy weights, fixed output length (ignore_eos, max_tokens):
the engine's real cost per page at that length (OCR quality cannot be measured this way).

    gpu_bench.py recipe   --pdf pages.pdf --model CKPT --tokens 512 --json a.json
    gpu_bench.py ocrfleet --pdf pages.pdf --model CKPT --tokens 512 --json b.json \
        [any extra `ocrfleet run` options, e.g. --engines-per-gpu 2]
    python benchmarks/gpu_bench.py combine a.json b.json --out benchmarks/results/x.json

recipe: as users write it (vLLM's docs): every page rendered first (pypdfium2, 144 dpi), then
one LLM.generate with the recipe settings (NGramPerReqLogitsProcessor, no prefix caching, no
mm processor cache, greedy). Its pages/s counts generate() only (rendering and engine start
excluded), which favours the recipe. ocrfleet: `ocrfleet run` on the PDF; pages/s from the
first engine ready to the last page (engine start excluded, rendering overlapped inside).
GPU busy: NVML utilisation sampled every 100 ms over the measured window.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PROMPT = "<image>\n<|grounding|>Convert the document to markdown."
NGRAM = {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}


class GpuSampler:
    """NVML utilisation of the visible GPUs, every 100 ms, with timestamps."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = (
                [int(x) for x in visible.split(",")]
                if visible
                else list(range(pynvml.nvmlDeviceGetCount()))
            )
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in ids]
        except Exception as exc:  # no NVML: report no busy figure rather than a wrong one
            print(f"gpu sampler unavailable: {exc}", file=sys.stderr)
            return
        while not self._stop.is_set():
            utils = [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
            self.samples.append((time.monotonic(), sum(utils) / len(utils)))
            time.sleep(0.1)

    def start(self) -> GpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def busy(self, begin: float, end: float) -> float | None:
        window = [u for t, u in self.samples if begin <= t <= end]
        return round(statistics.fmean(window) / 100, 4) if window else None


def versions() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        import torch

        import vllm

        info = {"vllm": vllm.__version__, "torch": torch.__version__}
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count_visible"] = torch.cuda.device_count()
    except Exception as exc:
        info["error"] = str(exc)
    with contextlib.suppress(OSError, IndexError):
        info["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()[0]
    # The recipe is bound by one CPU thread: its rate follows the host's cores (two H200
    # leases of 2026-12-02 ran it at 6.98 and 8.18 pages/s), so results name them.
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text("utf-8").splitlines()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
        # Two hosts that both said "Intel(R) Xeon(R) Processor" ran the recipe at 8.61 and 5.68
        # pages/s (2026-12-02/03): the clock tells them apart where the name does not.
        mhz = [float(x.split(":", 1)[1]) for x in lines if x.startswith("cpu MHz")]
        info["cpu_mhz_mean"] = round(statistics.mean(mhz), 1) if mhz else None
    info["cpu_cores"] = os.cpu_count()
    # Torch threads of the job's processes (unset: ocrfleet's GPU engines take 1 themselves).
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    return info


def render_all(pdf: Path, pages: int, dpi: int = 144) -> list[Any]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    images = []
    for i in range(min(pages, len(doc))):
        page = doc[i]
        images.append(page.render(scale=dpi / 72, rev_byteorder=True).to_pil().convert("RGB"))
        page.close()
    return images


# Engine arguments that `ocrfleet run` takes as options of its own.
OCRFLEET_FLAGS = {
    "dtype": "--dtype",
    "enforce_eager": "--enforce-eager",
    "max_model_len": "--max-model-len",
    "max_num_seqs": "--max-num-seqs",
}


def engine_args(pairs: list[str]) -> dict[str, Any]:
    """--engine-arg KEY=VALUE (VALUE as JSON when it parses): the same extra engine settings
    for both variants, e.g. the CPU settings when checking this script on a CPU machine."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 5) if values else None


def run_recipe(args: argparse.Namespace) -> dict[str, Any]:
    from vllm.model_executor.models.deepseek_ocr import NGramPerReqLogitsProcessor

    from vllm import LLM, SamplingParams

    began = time.perf_counter()
    images = render_all(args.pdf, args.pages)
    render_seconds = time.perf_counter() - began
    engine_kwargs: dict[str, Any] = {
        "model": str(args.model),
        "load_format": "dummy",
        "enable_prefix_caching": False,
        "mm_processor_cache_gb": 0,
        "logits_processors": [NGramPerReqLogitsProcessor],
        "kv_cache_dtype": args.kv_cache_dtype,
        "gpu_memory_utilization": args.gpu_memory,
        "max_model_len": 8192,
        "disable_log_stats": False,
    }
    if args.quantization:
        engine_kwargs["quantization"] = args.quantization
    engine_kwargs.update(engine_args(args.engine_arg))
    started = time.perf_counter()
    llm = LLM(**engine_kwargs)
    engine_start = time.perf_counter() - started
    params = SamplingParams(
        temperature=0.0,
        max_tokens=args.tokens,
        ignore_eos=True,
        skip_special_tokens=False,
        extra_args=dict(NGRAM),
    )
    inputs = [{"prompt": PROMPT, "multi_modal_data": {"image": img}} for img in images]
    llm.generate(inputs[:8], params, use_tqdm=False)  # warm-up, not timed
    sampler = GpuSampler().start()
    t0 = time.monotonic()
    outputs = llm.generate(inputs, params, use_tqdm=False)
    t1 = time.monotonic()
    sampler.stop()
    seconds = t1 - t0
    output_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    prompt_tokens = [len(o.prompt_token_ids or ()) for o in outputs]
    stats = [o.metrics for o in outputs if getattr(o, "metrics", None) is not None]
    return {
        "variant": "recipe",
        "settings": {k: str(v) for k, v in engine_kwargs.items()},
        "pages": len(outputs),
        "output_tokens_per_page": args.tokens,
        "prompt_tokens_per_page": mean([float(p) for p in prompt_tokens]),
        "render_seconds_before_generate": round(render_seconds, 3),
        "engine_start_seconds": round(engine_start, 3),
        "generate_seconds": round(seconds, 3),
        "pages_per_second": round(len(outputs) / seconds, 4),
        "pages_per_second_with_rendering": round(len(outputs) / (seconds + render_seconds), 4),
        "output_tokens_per_second": round(output_tokens / seconds, 1),
        "gpu_busy": sampler.busy(t0, t1),
        "seconds_per_page": {
            "engine_queue": mean([s.scheduled_ts - s.queued_ts for s in stats]),
            "prefill": mean([s.first_token_ts - s.scheduled_ts for s in stats]),
            "decode": mean([s.last_token_ts - s.first_token_ts for s in stats]),
        },
        "frontend_preprocess_ms_per_page_one_core": preprocess_cost(llm, images[:16]),
    }


def preprocess_cost(llm: Any, images: list[Any]) -> float | None:
    """vLLM's DeepseekOCRProcessor alone on one core: the frontend cost the recipe pays."""
    try:
        from vllm.transformers_utils.processors.deepseek_ocr import DeepseekOCRProcessor

        tokenizer = llm.get_tokenizer()
        processor = DeepseekOCRProcessor(tokenizer, image_size=640, base_size=1024, strategy="v1")
        processor(prompt=PROMPT, images=[images[0]], crop_mode=True)
        began = time.perf_counter()
        for image in images:
            processor(prompt=PROMPT, images=[image], crop_mode=True)
        return round((time.perf_counter() - began) * 1000 / len(images), 2)
    except Exception as exc:
        print(f"preprocess timing failed: {exc}", file=sys.stderr)
        return None


def first_pages(pdf: Path, pages: int, work: Path) -> Path:
    """A copy of the PDF's first N pages, so ocrfleet processes exactly the recipe's pages."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(str(pdf))
    if len(source) <= pages:
        return pdf
    subset = pdfium.PdfDocument.new()
    subset.import_pages(source, list(range(pages)))
    work.mkdir(parents=True, exist_ok=True)
    target = work / f"{pdf.stem}-first-{pages}.pdf"
    subset.save(str(target))
    return target


def run_ocrfleet(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    work = Path(args.work) / f"ocrfleet-{os.getpid()}-{int(time.time())}"
    out = work / "run"
    cmd = [
        sys.executable,
        "-m",
        "ocrfleet",
        "run",
        str(first_pages(args.pdf, args.pages, work)),
        "-o",
        str(out),
        "--engine",
        "vllm",
        "--model",
        str(args.model),
        "--load-format",
        "dummy",
        "--max-tokens",
        str(args.tokens),
        "--ignore-eos",
        "--max-attempts",
        "1",
        "--kv-cache-dtype",
        args.kv_cache_dtype,
        "--gpu-memory-utilization",
        str(args.gpu_memory),
        "--no-progress",
        "--log-level",
        "INFO",
        *extra,
    ]
    if args.quantization:
        cmd += ["--quantization", args.quantization]
    for key, value in engine_args(args.engine_arg).items():
        flag = OCRFLEET_FLAGS.get(key)
        if flag is None:
            cmd += ["--vllm-arg", f"{key}={json.dumps(value)}"]
        elif value is True:
            cmd.append(flag)
        else:
            cmd += [flag, str(value)]
    sampler = GpuSampler().start()
    began = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    ended = time.monotonic()
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"ocrfleet run failed ({proc.returncode}):\n{proc.stderr[-5000:]}")
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    run = summary["this_run"]
    engine_ready = began + (run["engine_start_seconds"] or 0.0)
    records = [
        json.loads(line)
        for path in (out / "pages").rglob("*.jsonl")
        for line in path.read_text("utf-8").splitlines()
        if line
    ]
    timings = [r.get("engine_timings") or {} for r in records]
    pages = run["pages_processed"]
    rate = run["pages_per_second_after_engine_start"]
    return {
        "variant": "ocrfleet",
        "command": cmd,
        "pages": pages,
        "output_tokens_per_page": args.tokens,
        "prompt_tokens_per_page": mean([float(r.get("prompt_tokens") or 0) for r in records]),
        "engine_start_seconds": run["engine_start_seconds"],
        "wall_seconds": run["wall_seconds"],
        "pages_per_second": rate,
        "output_tokens_per_second": round(run["output_tokens"] * rate / pages, 1) if rate else None,
        "gpu_busy": sampler.busy(engine_ready, ended),
        "seconds_per_page": {
            stage: mean([t[stage] for t in timings if stage in t])
            for stage in ("preprocess", "engine_queue", "prefill", "decode")
        },
        "seconds_per_page_by_pipeline_stage": run["seconds_per_page_by_stage"],
        "workers": summary["workers"],
        # One entry per engine slot: a slot with 0 pages measured fewer engines than claimed.
        "pages_per_engine": [w["pages"] for w in summary["workers"]],
        "engines_per_gpu": summary.get("engines_per_gpu"),
        # Each slot's rate from its own engine ready, added up: the node's rate once every
        # engine is up (engines sharing a GPU start one after another).
        "sum_of_slot_pages_per_second": round(
            sum(w["pages_per_second"] for w in summary["workers"]), 4
        ),
        "statuses": summary["pages"],
        # A slot that restarted or did no page: the error lines of its vLLM output, where the
        # cause is (an H200 slot failed at start on 2026-12-03 and its log was not kept).
        "troubled_slot_logs": troubled_slot_logs(out, summary["workers"]),
        # Per page, a digest of its text: two runs of one checkpoint (dummy weights are seeded)
        # that differ only in an engine setting must give the same text page by page.
        "text_digests": text_digests(records),
    }


def troubled_slot_logs(out: Path, workers: list[dict[str, Any]], lines: int = 80) -> dict[str, str]:
    """Per slot that restarted or did no page, the last `lines` error-looking lines of its
    vLLM output (a restart's later, healthy output would push a failed start out of a tail)."""
    tails = {}
    for worker in workers:
        if worker["restarts"] or not worker["pages"]:
            path = out / "logs" / f"worker-{worker['slot']}.out"
            text = path.read_text("utf-8", errors="replace") if path.is_file() else ""
            marked = [x for x in text.splitlines() if re.search(r"Error|ERROR|Exception|fail", x)]
            tails[str(worker["slot"])] = "\n".join(marked[-lines:])
    return tails


def text_digests(records: list[dict[str, Any]]) -> dict[str, str]:
    return {
        f"{r.get('doc_id')}#{r.get('page')}": hashlib.sha256(
            str(r.get("text", "")).encode("utf-8")
        ).hexdigest()[:16]
        for r in records
    }


def combine(paths: list[Path], out: Path, name: str) -> dict[str, Any]:
    parts = [json.loads(p.read_text("utf-8")) for p in paths]
    recipe = next((p for p in parts if p["variant"] == "recipe"), None)
    result: dict[str, Any] = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d"),
        **{k: parts[0]["versions"][k] for k in parts[0]["versions"]},
        "pages": parts[0]["result"]["pages"],
        "output_tokens": parts[0]["result"]["output_tokens_per_page"],
    }
    for part in parts:
        label = part["label"]
        result[label] = part["result"]
        if recipe and part["variant"] == "ocrfleet" and result[label]["pages_per_second"]:
            result[label]["speedup_vs_recipe"] = round(
                result[label]["pages_per_second"] / recipe["result"]["pages_per_second"], 3
            )
    if recipe:
        best = max(
            (p for p in parts if p["variant"] == "ocrfleet"),
            key=lambda p: p["result"]["pages_per_second"] or 0,
            default=None,
        )
        if best is not None:
            result["speedup_vs_recipe"] = result[best["label"]]["speedup_vs_recipe"]
            result["best_ocrfleet"] = best["label"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("recipe", "ocrfleet"):
        p = sub.add_parser(name)
        p.add_argument("--pdf", type=Path, required=True)
        p.add_argument("--model", type=Path, required=True)
        p.add_argument("--pages", type=int, default=512)
        p.add_argument("--tokens", type=int, default=512)
        p.add_argument("--kv-cache-dtype", default="auto")
        p.add_argument("--quantization", default=None)
        p.add_argument("--gpu-memory", type=float, default=0.9)
        p.add_argument("--label", default=name)
        p.add_argument("--work", default="/tmp/ocrfleet-bench")
        p.add_argument("--json", type=Path, required=True)
        p.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")
    c = sub.add_parser("combine")
    c.add_argument("parts", nargs="+", type=Path)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--name", default="recipe vs ocrfleet")
    args, extra = parser.parse_known_args()
    extra = [arg for arg in extra if arg != "--"]  # "--" only separates ocrfleet's own options
    if args.command == "combine":
        print(json.dumps(combine(args.parts, args.out, args.name), indent=2))
        return
    result = run_recipe(args) if args.command == "recipe" else run_ocrfleet(args, extra)
    payload = {
        "variant": args.command,
        "label": args.label,
        "versions": versions(),
        "result": result,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(payload["result"], indent=2))


if __name__ == "__main__":
    main()
