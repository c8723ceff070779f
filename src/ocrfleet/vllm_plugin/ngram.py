"""No-repeat-n-gram logits processor for DeepSeek-OCR, batched and vectorised on the device.

vLLM's DeepSeek-OCR recipe uses ``NGramPerReqLogitsProcessor``
(``vllm/model_executor/models/deepseek_ocr.py``): an ``AdapterLogitsProcessor`` that runs
``NoRepeatNGramLogitsProcessor`` in Python once per request per step, looping over window
positions. :class:`BatchedNGramLogitsProcessor` applies the same rule to the whole batch with a
handful of torch ops.

The rule and the reference it is tested against: ngram_rule.py; the host copy of each row's
last tokens (Model Runner V1): ngram_window.py.

Per-request parameters come from ``SamplingParams.extra_args``: ``ngram_size`` (absent or None:
not applied), ``window_size`` (default 100) and ``whitelist_token_ids``. Load it with
``logits_processors=["ocrfleet.vllm_plugin.ngram:BatchedNGramLogitsProcessor"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from .ngram_rule import IntArray, NGramParams, apply_ngram_bans, parse_ngram_params, whitelist_array
from .ngram_window import WindowCache

try:  # vLLM 0.32 (not 0.26): Model Runner V2 loads only subclasses of its own interface.
    from vllm.v1.worker.gpu.sample.logits_processor import (
        LogitsProcessor as _RunnerV2LogitsProcessor,
    )
except ImportError:  # vLLM 0.26: its V2 runner takes no custom processors (V1 runs them)
    _RunnerV2LogitsProcessor = object

if TYPE_CHECKING:
    from vllm import SamplingParams

__all__ = ["BatchedNGramLogitsProcessor"]


@dataclass(slots=True)
class _Request:
    params: NGramParams
    output_ids: list[int]  # vLLM's live list: it appends each sampled token in place


class _RunnerV1:
    """Model Runner V1 state: requests by batch index, kept current by ``BatchUpdate``s."""

    def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
        self.pin_memory = bool(is_pin_memory) and torch.device(device).type != "cpu"
        scheduler = getattr(vllm_config, "scheduler_config", None)
        model = getattr(vllm_config, "model_config", None)
        max_model_len = getattr(model, "max_model_len", None)
        # Outputs never outgrow max_model_len, so neither must a cached window.
        self.max_len = int(max_model_len) if max_model_len else None
        self.requests: dict[int, _Request] = {}
        self.cache = WindowCache(int(getattr(scheduler, "max_num_seqs", None) or 256))


class _RunnerV2:
    """Model Runner V2 state (vLLM 0.32): parameters by request slot; the tokens are read
    from the runner's own on-device history (``all_token_ids``, ``prompt_len``, ``total_len``).
    """

    def __init__(self, vllm_config: Any, req_states: Any) -> None:
        if getattr(vllm_config, "speculative_config", None) is not None:
            # Draft rows would need the draft tokens in the window (V1 rejects custom
            # logits processors with speculative decoding altogether).
            raise ValueError("BatchedNGramLogitsProcessor does not support speculative decoding")
        self.req_states = req_states
        self.pin_memory = torch.device(req_states.device).type == "cuda"
        slots = int(req_states.max_num_reqs)
        self.ngram: IntArray = np.zeros(slots, dtype=np.int64)  # 0: not applied
        self.window: IntArray = np.zeros(slots, dtype=np.int64)
        self.whitelist: list[tuple[int, ...]] = [()] * slots


def _pack(
    pin_memory: bool, device: torch.device, columns: Sequence[Any]
) -> tuple[torch.Tensor, list[int]]:
    """Host int64 blocks side by side -> one (pinned) buffer -> one host-to-device copy.

    ``columns``: [G] or [G, k] arrays. Returns the device tensor and each block's first column.
    """
    arrays = [np.asarray(c, dtype=np.int64) for c in columns]
    blocks = [a if a.ndim == 2 else a[:, None] for a in arrays]
    offsets = np.cumsum([0] + [b.shape[1] for b in blocks]).tolist()
    packed = torch.empty((len(blocks[0]), offsets[-1]), dtype=torch.int64, pin_memory=pin_memory)
    host = packed.numpy()
    for block, start, end in zip(blocks, offsets, offsets[1:], strict=False):
        host[:, start:end] = block
    return packed.to(device, non_blocking=True), offsets


class BatchedNGramLogitsProcessor(
    LogitsProcessor,  # type: ignore[misc, unused-ignore]
    _RunnerV2LogitsProcessor,  # type: ignore[misc, unused-ignore]
):
    """``NGramPerReqLogitsProcessor``'s bans for the whole batch, vectorised on the device.

    One class for both vLLM model runners, so one qualified name works everywhere:

    * Model Runner V1 (vLLM 0.26, and 0.32 without Triton or with VLLM_USE_V2_MODEL_RUNNER=0):
      built as ``(vllm_config, device, is_pin_memory)``, fed ``update_state(BatchUpdate)``,
      called as ``apply(logits)``. Per step: a Python pass over the requests to pick up their
      new tokens (one each in the steady state), then per distinct ngram size one
      host-to-device copy of the windows and a few tensor ops over the batch.
    * Model Runner V2 (vLLM 0.32's default on GPUs): built as ``(vllm_config, req_states)``,
      fed ``add_request(slot, params)``, called as ``apply(logits, ctx)``. The windows are
      gathered on the device from the runner's token history: no Python pass over requests.

    Neither path synchronises with the device.
    """

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        parse_ngram_params(sampling_params)

    def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool | None = None) -> None:
        # The V1 base __init__ is abstract (it raises): not called.
        self._v1: _RunnerV1 | None = None
        self._v2: _RunnerV2 | None = None
        if is_pin_memory is None and hasattr(device, "all_token_ids"):
            self._v2 = _RunnerV2(vllm_config, device)  # V2 passes its request state here
        else:
            self._v1 = _RunnerV1(vllm_config, device, bool(is_pin_memory))

    def is_argmax_invariant(self) -> bool:
        return False

    # --- Model Runner V1 -------------------------------------------------------------------

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None or self._v1 is None:
            return
        state = self._v1
        requests = state.requests
        # Documented order: removed, added, moved.
        for index in batch_update.removed:
            requests.pop(index, None)
        for index, params, _prompt_ids, output_ids in batch_update.added:
            parsed = parse_ngram_params(params)
            if parsed is None or not parsed.can_ban:
                requests.pop(index, None)  # the new request replaces any old one
                continue
            requests[index] = _Request(parsed, output_ids)
            width = parsed.window_size
            if state.max_len is not None:
                width = min(width, state.max_len)
            state.cache.reserve(index + 1, width)
            state.cache.invalidate(index)
        for a, b, direction in batch_update.moved:
            req_a = requests.pop(a, None)
            req_b = requests.pop(b, None)
            if direction == MoveDirectionality.SWAP:
                if req_a is not None:
                    requests[b] = req_a
                if req_b is not None:
                    requests[a] = req_b
                if req_a is not None or req_b is not None:
                    state.cache.swap(a, b)
            elif req_a is not None:  # one-way a -> b: b's old request is gone
                requests[b] = req_a
                state.cache.move(a, b)
        for index in [i for i in requests if i >= batch_update.batch_size]:
            del requests[index]

    def apply(self, logits: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        if self._v2 is not None:
            return self._apply_v2(self._v2, logits, ctx)
        assert self._v1 is not None
        state = self._v1
        if not state.requests:
            return logits
        rows = list(state.requests)
        requests = list(state.requests.values())
        lengths = state.cache.sync(rows, [r.output_ids for r in requests])
        groups: dict[int, list[int]] = {}
        for k, (request, length) in enumerate(zip(requests, lengths, strict=True)):
            if length >= request.params.ngram_size:
                groups.setdefault(request.params.ngram_size, []).append(k)
        for n, members in groups.items():
            at = np.array([rows[k] for k in members], dtype=np.int64)
            windows = [min(lengths[k], requests[k].params.window_size) for k in members]
            width = max(windows)
            whitelist = whitelist_array([requests[k].params.whitelist for k in members])
            tokens = state.cache.tokens[at, state.cache.width - width :]
            dev, col = _pack(state.pin_memory, logits.device, [tokens, windows, at, whitelist])
            apply_ngram_bans(
                logits,
                dev[:, col[2]],
                dev[:, : col[1]],
                dev[:, col[1]],
                n,
                dev[:, col[3] :] if whitelist.shape[1] else None,
            )
        return logits

    # --- Model Runner V2 -------------------------------------------------------------------

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        state = self._v2
        assert state is not None
        parsed = parse_ngram_params(sampling_params)
        if parsed is None or not parsed.can_ban:
            state.ngram[req_idx] = 0  # the slot may hold an earlier request's parameters
            return False
        state.ngram[req_idx] = parsed.ngram_size
        state.window[req_idx] = parsed.window_size
        state.whitelist[req_idx] = parsed.whitelist
        return True

    def _apply_v2(self, state: _RunnerV2, logits: torch.Tensor, ctx: Any) -> torch.Tensor:
        slots = np.asarray(ctx.idx_mapping_np, dtype=np.int64)
        if logits.shape[0] != len(slots):
            raise RuntimeError("BatchedNGramLogitsProcessor expects one logits row per request")
        req_states = state.req_states
        ngram = state.ngram[slots]
        # Host upper bound of each output's length (exact for decodes): picks the window
        # width and skips short outputs without reading the device.
        seq_lens = np.asarray(ctx.seq_lens_upper_bound_np[: len(slots)], dtype=np.int64)
        bound = seq_lens - req_states.prompt_len.np[slots]
        live = np.flatnonzero((ngram >= 2) & (bound >= ngram))
        for n in np.unique(ngram[live]).tolist():
            rows = live[ngram[live] == n]
            at = slots[rows]
            windows = state.window[at]
            width = int(np.minimum(bound[rows], windows).max())
            whitelist = whitelist_array([state.whitelist[s] for s in at.tolist()])
            dev, col = _pack(state.pin_memory, logits.device, [rows, at, windows, whitelist])
            slot = dev[:, col[1]]
            total = req_states.total_len.gpu[slot].long()
            output_len = total - req_states.prompt_len.gpu[slot].long()
            lengths = torch.minimum(output_len, dev[:, col[2]]).clamp_(0, width)
            columns = (total - width).unsqueeze(1) + torch.arange(width, device=logits.device)
            history = req_states.all_token_ids.gpu
            tokens = history[slot.unsqueeze(1), columns.clamp_(min=0)].long()
            apply_ngram_bans(
                logits,
                dev[:, col[0]],
                tokens,
                lengths,
                int(n),
                dev[:, col[3] :] if whitelist.shape[1] else None,
            )
        return logits
