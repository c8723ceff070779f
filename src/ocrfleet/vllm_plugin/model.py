"""ocrfleet's DeepSeek-OCR variant for vLLM: five resolution modes, packed uint8 pages.

Registered by the plugin (vllm_plugin.register) as an architecture of its own, selected with
`hf_overrides={"architectures": [ARCHITECTURE]}`; vLLM's files are not touched. It differs
from vLLM's DeepseekOCRForCausalLM in five places only:
- the processor takes the resolution mode from `mm_processor_kwargs` (engine or request);
- a packed page (deepseek/packing.py, prepared in a render process) skips all pixel work in the
  frontend: its uint8 arrays become the model inputs as they are;
- the tile grid (images_spatial_crop) is kept on the CPU, where the encoder path reads it;
- the model normalises uint8 inputs on its own device ((x/255 − 0.5)/0.5, as ToTensor and
  Normalize do on the CPU), then casts to the model dtype, as the frontend cast would have —
  on every path into the vision encoder, vLLM's encoder CUDA graphs included (their replay
  copies the inputs into float buffers: unnormalised uint8 would be cast silently);
- the encoder graphs' sub-batches are cut by slicing, without a wait for the GPU
  (encoder_batch.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from vllm.model_executor.models.deepseek_ocr import (
    DeepseekOCRDummyInputsBuilder,
    DeepseekOCRForCausalLM,
    DeepseekOCRMultiModalProcessor,
    DeepseekOCRProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems, ImageSize
from vllm.multimodal.processing import PromptReplacement
from vllm.transformers_utils.processors.deepseek_ocr import DeepseekOCRProcessor

from ..deepseek.modes import RESOLUTION_KWARG, Mode, image_tokens, mode, page_image_tokens
from ..deepseek.packing import is_packed, unpack
from .encoder_batch import CROPS, GRID, PIXELS, select_pages

GRID_KEY = GRID
PIXEL_KEYS = (PIXELS, CROPS)
# vLLM's dual-path encoder graphs read one pixel key a path: normalise only that one (the
# other, a whole batch of pages, would be converted for nothing, once a path).
PATH_KEYS = {"global": (PIXELS,), "local": (CROPS,)}


class OcrfleetDeepseekOCRProcessor(DeepseekOCRProcessor):  # type: ignore[misc]
    """DeepSeek-OCR's processor in one resolution mode, with a fast path for packed pages."""

    def __init__(self, tokenizer: Any, **kwargs: Any) -> None:
        self.ocrfleet_mode: Mode = mode(str(kwargs.pop(RESOLUTION_KWARG, "gundam")))
        kwargs.update(
            image_size=self.ocrfleet_mode.image_size,
            base_size=self.ocrfleet_mode.base_size,
            strategy="v1",
        )
        kwargs.pop("crop_mode", None)
        super().__init__(tokenizer, **kwargs)

    def __call__(
        self, *, prompt: str, images: list[Any], crop_mode: bool | None = None, **_: Any
    ) -> BatchFeature:
        if images and all(is_packed(image) for image in images):
            return self.process_packed(prompt, images)
        pil = [
            image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
            for image in images
        ]
        return self.process_one(prompt=prompt, images=pil, crop_mode=self.ocrfleet_mode.crop)

    def process_packed(self, prompt: str, images: list[np.ndarray]) -> BatchFeature:
        """The processor's outputs for packed pages: same token ids, uint8 pixel tensors."""
        splits = prompt.split(self.image_token)
        if len(splits) != len(images) + 1:
            raise ValueError(
                f"{len(splits) - 1} {self.image_token!r} in prompt, {len(images)} images"
            )
        ids: list[int] = [self.bos_id]
        mask: list[bool] = [False]
        views, crops, grids, counts = [], [], [], []
        for text, packed in zip(splits, images, strict=False):
            text_ids = self.encode(text, bos=False, eos=False)
            page = unpack(packed)
            count = image_tokens(page.mode, page.grid)
            ids += text_ids + [self.image_token_id] * count
            mask += [False] * len(text_ids) + [True] * count
            views.append(torch.from_numpy(np.ascontiguousarray(page.global_view)).permute(2, 0, 1))
            crops += [
                torch.from_numpy(np.ascontiguousarray(t)).permute(2, 0, 1) for t in page.tiles
            ]
            grids.append(list(page.grid))
            counts.append(count)
        tail = self.encode(splits[-1], bos=False, eos=False)
        ids += tail
        mask += [False] * len(tail)
        size = unpack(images[0]).mode.image_size
        return BatchFeature(
            data={
                "input_ids": torch.tensor([ids], dtype=torch.long),
                PIXELS: torch.stack(views).contiguous(),
                CROPS: torch.stack(crops).contiguous()
                if crops
                else torch.zeros((0, 3, size, size), dtype=torch.uint8),
                "images_seq_mask": torch.tensor(mask, dtype=torch.bool),
                GRID_KEY: torch.tensor(grids, dtype=torch.long),
                "num_image_tokens": counts,
            },
            tensor_type="pt",
        )


class OcrfleetProcessingInfo(DeepseekOCRProcessingInfo):  # type: ignore[misc]
    def resolution(self, kwargs: Mapping[str, object]) -> Mode:
        merged = self.ctx.get_merged_mm_kwargs(kwargs)
        return mode(str(merged.get(RESOLUTION_KWARG, "gundam")))

    def get_hf_processor(self, **kwargs: object) -> OcrfleetDeepseekOCRProcessor:
        m = self.resolution(kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k != RESOLUTION_KWARG}
        processor: OcrfleetDeepseekOCRProcessor = self.ctx.get_hf_processor(
            OcrfleetDeepseekOCRProcessor, **{**kwargs, RESOLUTION_KWARG: m.name}
        )
        return processor

    def get_num_image_tokens(
        self, *, image_width: int, image_height: int, cropping: bool = True
    ) -> int:
        m = self.resolution({})
        if not cropping:
            return image_tokens(m, (1, 1))
        return page_image_tokens(m.name, image_width, image_height)

    def get_image_size_with_most_features(self) -> ImageSize:
        m = self.resolution({})
        side = m.image_size * 2 if m.crop else m.base_size
        return ImageSize(width=side, height=side)


class OcrfleetMultiModalProcessor(DeepseekOCRMultiModalProcessor):  # type: ignore[misc]
    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        # The tile grid stays on the CPU (as vLLM ≥ 0.32 has it): the encoder path reads it
        # with int()/.item() once a page or more, and each read of a GPU tensor waits for the
        # GPU — the engine core's CPU thread and the GPU then take turns instead of overlapping.
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields[GRID_KEY] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        return fields

    def _get_prompt_updates(
        self,
        mm_items: Any,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: Any,
    ) -> Sequence[PromptReplacement]:
        processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        image_token_id = processor.image_token_id
        current = processor.ocrfleet_mode

        def replacement(item_idx: int) -> list[int]:
            images = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
            if isinstance(images, ImageEmbeddingItems):
                return [image_token_id] * images.get_feature_size(item_idx)
            item = images.get(item_idx)
            if is_packed(item):
                page = unpack(item)
                return [image_token_id] * image_tokens(page.mode, page.grid)
            size = images.get_image_size(item_idx)
            count = page_image_tokens(current.name, size.width, size.height)
            return [image_token_id] * count

        return [
            PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)
        ]


def _normalise(value: Any, dtype: torch.dtype) -> Any:
    """uint8 pixels → DeepSeek's normalised floats, on whatever device they arrived on."""
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.uint8:
            return value
        return value.to(torch.float32).div_(255.0).sub_(0.5).div_(0.5).to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_normalise(v, dtype) for v in value)
    return value


@MULTIMODAL_REGISTRY.register_processor(
    OcrfleetMultiModalProcessor,
    info=OcrfleetProcessingInfo,
    dummy_inputs=DeepseekOCRDummyInputsBuilder,
)
class OcrfleetDeepseekOCR(DeepseekOCRForCausalLM):  # type: ignore[misc]
    def _normalised(
        self, mm_kwargs: Mapping[str, Any], keys: tuple[str, ...] = PIXEL_KEYS
    ) -> dict[str, Any]:
        dtype = self.model_config.dtype
        return {
            key: _normalise(value, dtype) if key in keys else value
            for key, value in mm_kwargs.items()
        }

    def _parse_and_validate_image_input(self, **kwargs: object) -> Any:
        return super()._parse_and_validate_image_input(**self._normalised(kwargs))

    # The encoder CUDA graph paths (vLLM ≥ 0.26, compilation_config.cudagraph_mm_encoder)
    # take the batch's raw inputs, not _parse_and_validate_image_input's.
    def prepare_encoder_cudagraph_replay_buffers(
        self,
        mm_kwargs: dict[str, Any],
        max_batch_size: int,
        max_frames_per_batch: int,
        path: str = "default",
    ) -> Any:
        return super().prepare_encoder_cudagraph_replay_buffers(
            self._normalised(mm_kwargs, PATH_KEYS.get(path, PIXEL_KEYS)),
            max_batch_size,
            max_frames_per_batch,
            path,
        )

    def encoder_eager_forward(self, mm_kwargs: dict[str, Any], path: str = "default") -> Any:
        return super().encoder_eager_forward(
            self._normalised(mm_kwargs, PATH_KEYS.get(path, PIXEL_KEYS)), path
        )

    def select_encoder_cudagraph_items(
        self, mm_kwargs: dict[str, Any], indices: list[int]
    ) -> dict[str, Any]:
        # vLLM's version indexes the pixels with a list: a synchronous copy to the GPU that
        # waits for the previous step (encoder_batch.py says how much it cost).
        return select_pages(mm_kwargs, indices)
