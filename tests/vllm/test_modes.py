"""Resolution modes and packed pages: equal to vLLM's own processor, token counts per mode."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ocrfleet.deepseek.modes import MODES, page_image_tokens
from ocrfleet.deepseek.packing import pack_page, unpack
from ocrfleet.testing import samples
from tests.vllm.conftest import cpu_engine_config

pytestmark = pytest.mark.vllm

PROMPT = "<image>\n<|grounding|>Convert the document to markdown."


def page_image(tmp_path: Path, dpi: int, size: tuple[float, float] = samples.A4) -> Image.Image:
    from ocrfleet.page import RenderRequest, RenderSettings
    from ocrfleet.render import DocumentCache, render_page

    pdf = samples.mixed_pdf(
        tmp_path / f"p{dpi}-{int(size[0])}.pdf", [("image", samples.paragraph(3))], size=size
    )
    page = render_page(DocumentCache(), RenderRequest("d", str(pdf), 1), RenderSettings(dpi=dpi))
    return page.image().copy()


def stock_processor(tokenizer: Any, name: str) -> Any:
    from vllm.transformers_utils.processors.deepseek_ocr import DeepseekOCRProcessor

    m = MODES[name]
    return DeepseekOCRProcessor(
        tokenizer, image_size=m.image_size, base_size=m.base_size, strategy="v1"
    )


def ours(tokenizer: Any, name: str) -> Any:
    from ocrfleet.vllm_plugin.model import OcrfleetDeepseekOCRProcessor

    return OcrfleetDeepseekOCRProcessor(tokenizer, ocrfleet_resolution=name)


@pytest.mark.parametrize("name", list(MODES))
@pytest.mark.parametrize(
    ("dpi", "size"),
    [(144, samples.A4), (50, samples.A4), (100, (842.0, 595.0)), (60, (300.0, 900.0))],
)
def test_packed_pages_equal_vllms_processor(
    tiny_checkpoint: Path, tmp_path: Path, name: str, dpi: int, size: tuple[float, float]
) -> None:
    import torch
    from transformers import AutoTokenizer

    from ocrfleet.vllm_plugin.model import _normalise

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    image = page_image(tmp_path, dpi, size)
    want = stock_processor(tokenizer, name)(
        prompt=PROMPT, images=[image], crop_mode=MODES[name].crop
    )
    got = ours(tokenizer, name)(prompt=PROMPT, images=[pack_page(image, name)])
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got["images_spatial_crop"], want["images_spatial_crop"])
    assert torch.equal(got["images_seq_mask"], want["images_seq_mask"])
    assert got["pixel_values"].dtype == torch.uint8  # a quarter of float32 across processes
    for key in ("pixel_values", "images_crop"):
        normalised = _normalise(got[key], torch.float32)
        assert normalised.shape == want[key].shape
        assert torch.allclose(normalised, want[key], atol=1e-6, rtol=0), key
    # The PIL path of our processor is vLLM's, in the chosen mode.
    via_pil = ours(tokenizer, name)(prompt=PROMPT, images=[image])
    assert torch.equal(via_pil["input_ids"], want["input_ids"])


def test_token_counts_per_mode_for_an_a4_page(tmp_path: Path) -> None:
    image = page_image(tmp_path, 144)
    assert image.size == (1191, 1684)
    counts = {name: page_image_tokens(name, *image.size) for name in MODES}
    assert counts == {"tiny": 73, "small": 111, "base": 273, "large": 421, "gundam": 903}
    assert unpack(pack_page(image, "gundam")).grid == (2, 3)


def test_engine_serves_every_mode_and_packed_equals_pil(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """One engine (ocrfleet's architecture): each mode's prompt has its token count, and a
    packed page decodes to exactly the tokens of the same page sent as a PIL image."""
    from ocrfleet.engines.vllm import VllmEngine, sampling_params

    config = cpu_engine_config(
        tiny_checkpoint,
        max_tokens=12,
        ngram_impl="off",
        extra_args={"skip_mm_profiling": True, "max_num_seqs": 2},
    )
    a4_72dpi = page_image(tmp_path, 72)  # 595×842: gundam tiles it 2×3
    small = page_image(tmp_path, 40)  # 331×468: no tiles in any mode

    async def run_all() -> dict[str, Any]:
        engine = VllmEngine(config)
        await engine.start()
        text_tokens = len(
            engine._llm.tokenizer.encode(
                "\n<|grounding|>Convert the document to markdown.", add_special_tokens=False
            )
        )
        results: dict[str, Any] = {"text_tokens": text_tokens}

        async def generate(image: Any, rid: str) -> tuple[int, list[int]]:
            prompt: dict[str, Any] = {"prompt": PROMPT, "multi_modal_data": {"image": image}}
            if isinstance(image, np.ndarray):
                prompt["multi_modal_uuids"] = {"image": [rid]}
            final = None
            async for out in engine._llm.generate(
                prompt, sampling_params(config, 12), request_id=rid
            ):
                final = out
            assert final is not None
            return len(final.prompt_token_ids), list(final.outputs[0].token_ids)

        try:
            for name in MODES:
                image = a4_72dpi if name == "gundam" else small
                results[name] = await generate(pack_page(image, name), f"mode-{name}")
            results["pil"] = await generate(small, "pil")
            results["packed"] = await generate(pack_page(small, "gundam"), "packed")
        finally:
            await engine.close()
        return results

    results = asyncio.run(run_all())
    extra = 1 + results["text_tokens"]  # bos + the prompt's text
    assert {name: results[name][0] - extra for name in MODES} == {
        "tiny": 73,
        "small": 111,
        "base": 273,
        "large": 421,
        "gundam": 903,
    }
    assert results["packed"] == results["pil"]  # same prompt length, same greedy tokens
