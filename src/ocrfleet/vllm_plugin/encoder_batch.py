"""Pick a sub-batch of pages out of a batch of DeepSeek-OCR encoder inputs, without a wait.

vLLM's encoder CUDA graphs cut each step's pages into sub-batches that fit a graph's budget
and call `select_encoder_cudagraph_items(mm_kwargs, indices)` for each. vLLM's own version
indexes the pixel batch with the Python list: torch makes it a host tensor and copies it to
the GPU with a pageable, synchronous copy, which waits for everything the engine has queued.
With async scheduling (vLLM 0.26's default) that queue is the previous step, so the engine
core's one CPU thread stops there instead of preparing the next step: the line held 37–54 % of
each engine core's samples (H200, five engines, 512 tokens a page, 2026-12-04). Slices and a
device-side concatenation select the same rows and queue behind that work instead of waiting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..deepseek.modes import tile_count

PIXELS = "pixel_values"
CROPS = "images_crop"
GRID = "images_spatial_crop"


def crop_spans(grid: torch.Tensor) -> list[tuple[int, int]]:
    """Each page's rows in the batch's tile tensor, in page order."""
    spans, start = [], 0
    for width, height in grid.tolist():  # one read: the grid is on the CPU (keep_on_cpu)
        count = tile_count((width, height))
        spans.append((start, start + count))
        start += count
    return spans


def take_rows(tensor: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The rows of `spans`, in order: a view when they are one run, else one concatenation
    on the tensor's own device (no index tensor, so nothing crosses from the host)."""
    runs: list[list[int]] = []
    for start, end in spans:
        if start == end:  # a page without tiles
            continue
        if runs and runs[-1][1] == start:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    if len(runs) <= 1:
        return tensor[runs[0][0] : runs[0][1]] if runs else tensor[:0]
    return torch.cat([tensor[start:end] for start, end in runs])


def select_pages(mm_kwargs: Mapping[str, Any], indices: Sequence[int]) -> dict[str, Any]:
    """The same three tensors as vLLM's select_encoder_cudagraph_items, rows in `indices`
    order, selected by slicing."""
    pixels, crops, grid = mm_kwargs[PIXELS], mm_kwargs[CROPS], mm_kwargs[GRID]
    if not indices:
        return {PIXELS: pixels[:0], CROPS: crops[:0], GRID: grid[:0]}
    spans = crop_spans(grid)
    return {
        PIXELS: take_rows(pixels, [(i, i + 1) for i in indices]),
        CROPS: take_rows(crops, [spans[i] for i in indices]),
        GRID: grid[list(indices)],  # on the CPU: a host-side index, no copy to the GPU
    }
