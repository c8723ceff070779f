"""The encoder graphs' sub-batches: ocrfleet's selection gives exactly vLLM's tensors, and it
never indexes with a host-side list (on a GPU, a synchronous copy that waits for the engine's
previous step)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.vllm

# Pages of one batch: a 2×3 grid (6 tiles), one tile (no crops), 3×2, 1×1, 2×1.
GRIDS = [[2, 3], [1, 1], [3, 2], [1, 1], [2, 1]]
ORDERS = [[0], [1], [0, 1, 2, 3, 4], [2, 0], [4, 3, 1], [1, 3], [3, 4, 0, 2], []]


def batch() -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(7)
    tiles = sum(w * h for w, h in GRIDS if w > 1 or h > 1)
    return {
        "pixel_values": torch.randint(0, 255, (len(GRIDS), 3, 8, 8), generator=generator).to(
            torch.uint8
        ),
        "images_crop": torch.randint(0, 255, (tiles, 3, 4, 4), generator=generator).to(torch.uint8),
        "images_spatial_crop": torch.tensor(GRIDS, dtype=torch.long),
    }


def vllm_select() -> Callable[[dict[str, Any], list[int]], dict[str, Any]]:
    from vllm.model_executor.models.deepseek_ocr import DeepseekOCRForCausalLM

    def select(mm: dict[str, Any], indices: list[int]) -> dict[str, Any]:
        # vLLM's method reads no state of the model.
        return DeepseekOCRForCausalLM.select_encoder_cudagraph_items(None, mm, indices)  # type: ignore[no-any-return]

    return select


def index_ops_on_pixels(
    select: Callable[[dict[str, Any], list[int]], dict[str, Any]], order: list[int]
) -> list[str]:
    """aten ops that index a 4-D (pixel or tile) tensor with an index tensor. The 2-D grid
    is indexed on the CPU by both versions (it is kept there) and is not counted."""
    from torch.utils._python_dispatch import TorchDispatchMode

    ops: list[str] = []

    class Record(TorchDispatchMode):  # type: ignore[misc]
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            name = str(func.overloadpacket)
            if name.startswith("aten.index") and getattr(args[0], "ndim", 0) == 4:
                ops.append(name)
            return func(*args, **(kwargs or {}))

    mm = batch()
    with Record():
        select(mm, order)
    return ops


@pytest.mark.parametrize("order", ORDERS, ids=[",".join(map(str, o)) or "none" for o in ORDERS])
def test_the_selection_is_vllms_exactly(order: list[int]) -> None:
    import torch

    from ocrfleet.vllm_plugin.encoder_batch import select_pages

    mm = batch()
    want = vllm_select()(mm, order)
    got = select_pages(mm, order)
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == want[key].shape, key
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key


def test_the_plugin_model_selects_with_ocrfleets_rule() -> None:
    from ocrfleet.vllm_plugin.encoder_batch import select_pages
    from ocrfleet.vllm_plugin.model import OcrfleetDeepseekOCR

    assert OcrfleetDeepseekOCR.select_encoder_cudagraph_items.__module__ == (
        "ocrfleet.vllm_plugin.model"
    )
    mm, order = batch(), [3, 0, 2]
    got = OcrfleetDeepseekOCR.select_encoder_cudagraph_items(None, mm, order)  # reads no state
    want = select_pages(mm, order)
    assert all(got[key].equal(want[key]) for key in want)


def test_no_pixel_row_is_picked_by_an_index_tensor() -> None:
    """aten.index with a list builds the index on the host; with CUDA pixels that is a
    pageable copy to the GPU and a wait. vLLM's version does it (so this check can fail);
    ocrfleet's slices and concatenates."""
    from ocrfleet.vllm_plugin.encoder_batch import select_pages

    for order in ([4, 0, 2], [0, 1, 2]):
        assert index_ops_on_pixels(vllm_select(), order) == ["aten.index"]
        assert index_ops_on_pixels(select_pages, order) == []
