"""DeepSeek-OCR preprocessing per page, before (vLLM's processor) and after (ocrfleet's split).

Before: vLLM's DeepseekOCRProcessor does resize, pad, tile, ToTensor and Normalize in the
engine's single frontend thread. After: a render process packs the page (the same PIL
operations, uint8 out), and the frontend only wraps the arrays (OcrfleetDeepseekOCRProcessor);
normalisation moves to the GPU. Measured on one core, on A4 pages rendered at 144 dpi, for
each resolution mode. Needs vLLM (run it in the CPU vLLM environment):

    $(scripts/setup_vllm_cpu_env.sh) benchmarks/preprocess_bench.py --pages 16
Writes benchmarks/results/preprocess-<host>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "<image>\n<|grounding|>Convert the document to markdown."


def per_page_ms(function: Any, items: list[Any]) -> float:
    function(items[0])
    began = time.perf_counter()
    for item in items:
        function(item)
    return round((time.perf_counter() - began) * 1000 / len(items), 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # the frontend is one thread
    from transformers import AutoTokenizer
    from vllm.transformers_utils.processors.deepseek_ocr import DeepseekOCRProcessor

    import vllm
    from ocrfleet.deepseek.modes import MODES
    from ocrfleet.deepseek.packing import pack_page
    from ocrfleet.page import RenderRequest, RenderSettings
    from ocrfleet.render import DocumentCache, render_page
    from ocrfleet.testing import samples
    from ocrfleet.testing.checkpoint import write_checkpoint
    from ocrfleet.vllm_plugin.model import OcrfleetDeepseekOCRProcessor

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokenizer = AutoTokenizer.from_pretrained(write_checkpoint(work / "ckpt", "tiny"))
        pdf = samples.realistic_pdf(work / "pages.pdf", args.pages)
        docs = DocumentCache()
        images = [
            render_page(docs, RenderRequest("d", str(pdf), n + 1), RenderSettings()).image().copy()
            for n in range(args.pages)
        ]
    modes: dict[str, Any] = {}
    for name, m in MODES.items():
        stock = DeepseekOCRProcessor(
            tokenizer, image_size=m.image_size, base_size=m.base_size, strategy="v1"
        )
        ours = OcrfleetDeepseekOCRProcessor(tokenizer, ocrfleet_resolution=name)
        packed = [pack_page(image, name) for image in images]
        reference = stock(prompt=PROMPT, images=[images[0]], crop_mode=m.crop)
        values = reference["pixel_values"].numel() + reference["images_crop"].numel()
        modes[name] = {
            "before_frontend_ms": per_page_ms(
                lambda img, p=stock, c=m.crop: p(prompt=PROMPT, images=[img], crop_mode=c),
                images,
            ),
            "after_render_process_ms": per_page_ms(lambda img, n=name: pack_page(img, n), images),
            "after_frontend_ms": per_page_ms(
                lambda arr, p=ours: p(prompt=PROMPT, images=[arr]), packed
            ),
            # vLLM casts float pixels to the model dtype (bf16) before sending them.
            "bytes_to_engine_before": int(values * 2),
            "bytes_to_engine_after": int(values),
        }
    result = {
        "benchmark": "DeepSeek-OCR preprocessing per page, one core",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "pages": args.pages,
        "page": f"A4 at 144 dpi ({images[0].width}x{images[0].height}), realistic_pdf mix",
        "note": "before: all in vLLM's frontend thread (bf16 bytes to the engine); after: "
        "pack in a render process (parallel, off the frontend), frontend wraps uint8",
        "modes": modes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"preprocess-{platform.node()}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
