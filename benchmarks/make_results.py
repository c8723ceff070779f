"""Turn the GPU suite's phase files into the recorded results in benchmarks/results/.

    python benchmarks/make_results.py phase1.json phase2.json phase3.json --tag h100-2026-11-27

Writes, for each output length measured against the recipe,
`gpu-recipe-vs-ocrfleet-<tokens>tok-<tag>.json` (keys `recipe`, `ocrfleet`,
`speedup_vs_recipe`, variants), `gpu-scaling-<tag>.json` (`scaling_efficiency`) and
`gpu-modes-<tag>.json` (pages/s per resolution mode), each with GPU model, date and versions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(paths: list[Path]) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    for path in paths:
        data = json.loads(path.read_text("utf-8"))
        jobs.update(data["results"])
    return jobs


def header(payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    versions = payload["versions"]
    return {
        "gpu": versions.get("gpu"),
        "driver": versions.get("driver"),
        "vllm": versions.get("vllm"),
        "torch": versions.get("torch"),
        **extra,
    }


def speedup(ours: dict[str, Any] | None, recipe: dict[str, Any]) -> float | None:
    if not ours or not ours.get("pages_per_second") or not recipe.get("pages_per_second"):
        return None
    return round(ours["pages_per_second"] / recipe["pages_per_second"], 3)


def recipe_comparisons(jobs: dict[str, dict[str, Any]], tag: str, date: str) -> list[Path]:
    written = []
    for tokens in (512, 1024):
        recipe = jobs.get(f"recipe-{tokens}")
        if recipe is None:
            continue
        base = recipe["result"]
        variants = {
            name: payload["result"]
            for name, payload in jobs.items()
            if name.startswith(f"ocrfleet-{tokens}") and payload["variant"] == "ocrfleet"
        }
        default = variants.get(f"ocrfleet-{tokens}")
        best_name = max(
            variants, key=lambda n: variants[n].get("pages_per_second") or 0, default=None
        )
        result = header(
            recipe,
            benchmark="vLLM DeepSeek-OCR recipe vs ocrfleet, one GPU, dummy weights",
            date=date,
            pages=base["pages"],
            output_tokens=tokens,
            recipe=base,
            ocrfleet=default,
            speedup_vs_recipe=speedup(default, base),
            variants={
                name: {**v, "speedup_vs_recipe": speedup(v, base)} for name, v in variants.items()
            },
            best_variant=best_name,
            best_speedup_vs_recipe=speedup(variants.get(best_name or ""), base),
            note="recipe pages/s: generate() only (rendering and engine start excluded); "
            "ocrfleet pages/s: first engine ready to last page (rendering overlapped); jobs "
            "of one phase ran at the same time, each on its own GPU of the same host",
        )
        path = RESULTS / f"gpu-recipe-vs-ocrfleet-{tokens}tok-{tag}.json"
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def gpus_job(jobs: dict[str, dict[str, Any]], n: int) -> dict[str, Any] | None:
    return jobs.get(f"ocrfleet-{n}gpu") or jobs.get(f"ocrfleet-{n}gpus")


def scaling(jobs: dict[str, dict[str, Any]], tag: str, date: str) -> list[Path]:
    one = gpus_job(jobs, 1)
    more = {n: job for n in (2, 4) if (job := gpus_job(jobs, n)) is not None}
    engines = jobs.get("ocrfleet-512-2engines")
    if one is None or not more:
        return []
    rate1 = one["result"]["pages_per_second"]
    efficiency = {
        f"{n}_gpus": round(job["result"]["pages_per_second"] / (n * rate1), 3)
        for n, job in more.items()
        if rate1 and job["result"]["pages_per_second"]
    }
    result = header(
        one,
        benchmark="ocrfleet on 1, 2 (and 4) GPUs of one host (and 2 engines on one GPU)",
        date=date,
        pages={"one_gpu": one["result"]["pages"]}
        | {f"{n}_gpus": job["result"]["pages"] for n, job in more.items()},
        output_tokens=one["result"]["output_tokens_per_page"],
        one_gpu=one["result"],
        **{f"gpus_{n}": job["result"] for n, job in more.items()},
        two_engines_one_gpu=engines["result"] if engines else None,
        # The headline: the most GPUs measured.
        scaling_efficiency=efficiency.get(f"{max(more)}_gpus"),
        scaling_efficiency_by_gpus=efficiency,
        target=0.9,
    )
    path = RESULTS / f"gpu-scaling-{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return [path]


def modes(jobs: dict[str, dict[str, Any]], tag: str, date: str) -> list[Path]:
    table = {
        m: jobs[f"mode-{m}"]["result"]
        for m in ("tiny", "small", "base", "large")
        if f"mode-{m}" in jobs
    }
    gundam = jobs.get("ocrfleet-512")
    if gundam is not None:
        table["gundam"] = gundam["result"]
    if not table:
        return []
    first = (
        next(jobs[f"mode-{m}"] for m in ("tiny", "small", "base", "large") if f"mode-{m}" in jobs)
        if any(k.startswith("mode-") for k in jobs)
        else gundam
    )
    assert first is not None
    result = header(
        first,
        benchmark="ocrfleet pages/s per DeepSeek-OCR resolution mode, one GPU",
        date=date,
        output_tokens=512,
        table={
            m: {
                "pages": r["pages"],
                "pages_per_second": r["pages_per_second"],
                "prompt_tokens_per_page": r["prompt_tokens_per_page"],
                "gpu_busy": r["gpu_busy"],
            }
            for m, r in table.items()
        },
        runs=table,
    )
    path = RESULTS / f"gpu-modes-{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return [path]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("phases", nargs="+", type=Path)
    parser.add_argument("--tag", required=True, help="e.g. h100-2026-11-27")
    parser.add_argument("--date", required=True)
    args = parser.parse_args()
    jobs = load(args.phases)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for path in (
        recipe_comparisons(jobs, args.tag, args.date)
        + scaling(jobs, args.tag, args.date)
        + modes(jobs, args.tag, args.date)
    ):
        print(path)


if __name__ == "__main__":
    main()
