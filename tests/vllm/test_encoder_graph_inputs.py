"""Packed uint8 pages reach DeepSeek-OCR's vision encoder normalised on every path vLLM has:
the page-by-page path, the batched global/local paths of encoder CUDA graphs (their eager
fallback) and the replay buffers a graph copies into its float inputs. CPU vLLM replays no
graph, so the paths are called on the loaded model itself (LLM.apply_model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ocrfleet.deepseek.packing import pack_page
from tests.vllm.conftest import cpu_engine_config
from tests.vllm.test_modes import PROMPT, page_image

pytestmark = pytest.mark.vllm


def test_uint8_pages_reach_the_encoder_normalised_on_every_path(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the model in this process
    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    from transformers import AutoTokenizer

    from ocrfleet.engines.vllm import engine_kwargs
    from ocrfleet.vllm_plugin import register
    from ocrfleet.vllm_plugin.model import OcrfleetDeepseekOCRProcessor
    from vllm import LLM

    register()
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    processor = OcrfleetDeepseekOCRProcessor(tokenizer, ocrfleet_resolution="gundam")
    page = processor(prompt=PROMPT, images=[pack_page(page_image(tmp_path, 144), "gundam")])
    mm = {k: page[k] for k in ("pixel_values", "images_crop", "images_spatial_crop")}
    assert mm["images_crop"].shape[0] > 1  # an A4 page: global view and tiles, both paths

    kwargs = engine_kwargs(cpu_engine_config(tiny_checkpoint, max_tokens=64))
    llm = LLM(**{k: v for k, v in kwargs.items() if k != "disable_log_stats"})

    def compare(model: Any) -> dict[str, Any]:
        import torch

        from ocrfleet.vllm_plugin.model import _normalise

        dtype = model.model_config.dtype
        pixels = _normalise(mm["pixel_values"], dtype)
        crops = _normalise(mm["images_crop"], dtype)
        with torch.inference_mode():
            want = torch.cat(list(model.embed_multimodal(**mm)))
            whole = model.encoder_eager_forward(dict(mm))
            global_ = model.encoder_eager_forward(dict(mm), path="global")
            local = model.encoder_eager_forward(dict(mm), path="local")
            want_global = model._batched_encoder_forward_global_path(pixels)
            want_local = model._batched_encoder_forward_local_path(crops)
        replay_global = model.prepare_encoder_cudagraph_replay_buffers(dict(mm), 2, 0, "global")
        replay_local = model.prepare_encoder_cudagraph_replay_buffers(dict(mm), 2, 0, "local")
        return {
            "whole": float((whole - want).abs().max()),
            "global": float((global_ - want_global).abs().max()),
            "local": float((local - want_local).abs().max()),
            "replay_dtypes": [
                str(replay_global.values["pixel_values"].dtype),
                str(replay_local.values["images_crop"].dtype),
            ],
            "replay": max(
                float((replay_global.values["pixel_values"] - pixels).abs().max()),
                float((replay_local.values["images_crop"] - crops).abs().max()),
            ),
            "dtype": str(dtype),
        }

    [got] = llm.apply_model(compare)
    assert got["replay_dtypes"] == [got["dtype"], got["dtype"]]
    assert got["replay"] == 0.0
    assert got["whole"] < 1e-4
    assert got["global"] < 1e-4
    assert got["local"] < 1e-4


@pytest.mark.parametrize("parent", ["installed vLLM", "vLLM 0.26 (the GPU kit)"])
def test_the_tile_grid_stays_on_the_cpu_while_pixels_move(
    parent: str, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM 0.26 moves images_spatial_crop to the GPU with the pixels; the encoder path then
    reads it with int()/.item(), each read a wait for the GPU. ocrfleet keeps it on the CPU
    whatever the installed vLLM's processor says ("meta" stands in for the GPU here)."""
    from transformers import AutoTokenizer
    from vllm.model_executor.models.deepseek_ocr import DeepseekOCRMultiModalProcessor
    from vllm.multimodal.inputs import MultiModalFieldConfig

    from ocrfleet.vllm_plugin.model import OcrfleetDeepseekOCRProcessor, OcrfleetMultiModalProcessor

    if parent.startswith("vLLM 0.26"):
        installed = DeepseekOCRMultiModalProcessor._get_mm_fields_config

        def as_in_vllm_026(self: Any, hf_inputs: Any, kwargs: Any) -> dict[str, Any]:
            fields = dict(installed(self, hf_inputs, kwargs))
            fields["images_spatial_crop"] = MultiModalFieldConfig.batched("image")
            return fields

        monkeypatch.setattr(DeepseekOCRMultiModalProcessor, "_get_mm_fields_config", as_in_vllm_026)
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    hf = OcrfleetDeepseekOCRProcessor(tokenizer, ocrfleet_resolution="gundam")
    pages = [pack_page(page_image(tmp_path, dpi), "gundam") for dpi in (144, 72)]
    batch = hf(prompt="<image>\n<image>\n" + PROMPT.split("\n")[1], images=pages)
    assert batch["images_spatial_crop"].shape == (2, 2)

    processor = object.__new__(OcrfleetMultiModalProcessor)  # the fields need no state
    fields = processor._get_mm_fields_config(batch, {})
    moved = {}
    for key in ("pixel_values", "images_crop", "images_spatial_crop"):
        elems = list(fields[key].build_elems(key, batch[key]))
        moved[key] = fields[key].field.reduce_data(elems, device="meta")
    assert moved["images_spatial_crop"].device.type == "cpu"
    assert moved["images_spatial_crop"].tolist() == batch["images_spatial_crop"].tolist()
    assert moved["pixel_values"].device.type == "meta"
    assert moved["images_crop"].device.type == "meta"
