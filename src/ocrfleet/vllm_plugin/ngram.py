"""No-repeat-n-gram logits processor for DeepSeek-OCR, batched and vectorised on the device.

vLLM's DeepSeek-OCR recipe uses ``NGramPerReqLogitsProcessor``
(``vllm/model_executor/models/deepseek_ocr.py``): an ``AdapterLogitsProcessor`` that runs
``NoRepeatNGramLogitsProcessor`` in Python once per request per step, looping over window
positions. :class:`BatchedNGramLogitsProcessor` applies the same rule to the whole batch with a
handful of torch ops.

The rule, per request (``ids``: its output tokens so far, n: ``ngram_size``, w: ``window_size``):
when ``len(ids) >= n``, ban every ``ids[i + n - 1]`` with
``max(0, len(ids) - w) <= i <= len(ids) - n`` and ``ids[i:i + n - 1] == ids[-(n - 1):]``, except
whitelisted ids; banned logits become -inf. Reference quirk kept: n == 1 bans nothing
(``ids[-0:]`` is the whole list, never the empty 0-gram).

Per-request parameters come from ``SamplingParams.extra_args``: ``ngram_size`` (absent or None:
not applied), ``window_size`` (default 100) and ``whitelist_token_ids``. Load it with
``logits_processors=["ocrfleet.vllm_plugin.ngram:BatchedNGramLogitsProcessor"]``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

try:  # vLLM 0.32 (not 0.26): Model Runner V2 loads only subclasses of its own interface.
    from vllm.v1.worker.gpu.sample.logits_processor import (
        LogitsProcessor as _RunnerV2LogitsProcessor,
    )
except ImportError:  # vLLM 0.26: its V2 runner takes no custom processors (V1 runs them)
    _RunnerV2LogitsProcessor = object

if TYPE_CHECKING:
    from vllm import SamplingParams

__all__ = [
    "DEFAULT_WINDOW_SIZE",
    "BatchedNGramLogitsProcessor",
    "NGramParams",
    "apply_ngram_bans",
    "banned_token_mask",
    "build_windows",
    "ngram_ban_candidates",
    "parse_ngram_params",
    "reference_banned_tokens",
]

DEFAULT_WINDOW_SIZE = 100
_PAD = -1  # window padding; never a token id
_WHITELIST_PAD = int(np.iinfo(np.int64).max)  # sorts after every id, equals none
_SMALL_WHITELIST = 8  # up to this many ids: one comparison each, beyond: a sorted search

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class NGramParams:
    """One request's n-gram parameters; ``whitelist`` is sorted and unique."""

    ngram_size: int
    window_size: int
    whitelist: tuple[int, ...] = ()

    @property
    def can_ban(self) -> bool:
        # n == 1 never bans in the reference; a window shorter than n holds no whole n-gram.
        return self.ngram_size >= 2 and self.window_size >= self.ngram_size


def parse_ngram_params(params: SamplingParams) -> NGramParams | None:
    """Read and validate a request's parameters; None when the processor does not apply.

    Raises ValueError where ``NGramPerReqLogitsProcessor.validate_params`` does, with the same
    messages. One deliberate difference: an empty ``extra_args`` dict means "not applied" (the
    reference's ``extra_args and extra_args.get(...)`` yields ``{}`` as ngram_size and rejects
    it, which would reject every Responses-API request: that endpoint sends ``{}``).
    """
    extra = params.extra_args
    if not extra:
        return None
    ngram_size = extra.get("ngram_size")
    if ngram_size is None:
        return None
    window_size = extra.get("window_size", DEFAULT_WINDOW_SIZE)
    whitelist = extra.get("whitelist_token_ids", None)
    if not isinstance(ngram_size, int) or ngram_size <= 0:
        raise ValueError(f"`ngram_size` has to be a strictly positive integer, got {ngram_size}.")
    if not isinstance(window_size, int) or window_size <= 0:
        raise ValueError(f"`window_size` has to be a strictly positive integer, got {window_size}.")
    if whitelist is not None and not isinstance(whitelist, Iterable):
        raise ValueError(
            f"`whitelist_token_ids` has to be a sequence of integers, got {whitelist}."
        )
    ids = _token_ids(whitelist) if whitelist else ()
    return NGramParams(int(ngram_size), int(window_size), ids)


def _token_ids(items: Iterable[Any]) -> tuple[int, ...]:
    """The ids among ``items`` that the reference's set difference can match."""
    ids: set[int] = set()
    for item in items:
        if isinstance(item, float):
            if item.is_integer():
                ids.add(int(item))
            continue
        try:
            ids.add(operator.index(item))
        except TypeError:
            continue  # equal to no token id, so it whitelists nothing
    return tuple(sorted(ids))


def reference_banned_tokens(
    output_ids: Sequence[int],
    ngram_size: int,
    window_size: int,
    whitelist: Iterable[int] | None = None,
) -> set[int]:
    """The reference rule, transcribed from ``NoRepeatNGramLogitsProcessor.__call__``."""
    if len(output_ids) < ngram_size:
        return set()
    current_prefix = tuple(output_ids[-(ngram_size - 1) :])
    search_start = max(0, len(output_ids) - window_size)
    search_end = len(output_ids) - ngram_size + 1
    banned: set[int] = set()
    for i in range(search_start, search_end):
        ngram = tuple(output_ids[i : i + ngram_size])
        if ngram[:-1] == current_prefix:
            banned.add(ngram[-1])
    return banned - set(whitelist or ())


def build_windows(
    outputs: Sequence[Sequence[int]], window_sizes: Sequence[int]
) -> tuple[IntArray, IntArray]:
    """Each output's last ``min(len, window)`` tokens, right-aligned in a -1-padded array.

    Returns ``(windows [G, T], lengths [G])`` with T the longest length: the layout
    :func:`ngram_ban_candidates` takes.
    """
    lengths = np.array(
        [min(len(ids), w) for ids, w in zip(outputs, window_sizes, strict=True)], dtype=np.int64
    )
    width = int(lengths.max()) if len(lengths) else 0
    windows = np.full((len(outputs), width), _PAD, dtype=np.int64)
    for row, (ids, m) in enumerate(zip(outputs, lengths.tolist(), strict=True)):
        if m:
            windows[row, width - m :] = ids[len(ids) - m :]
    return windows, lengths


def _whitelist_array(whitelists: Sequence[Sequence[int]]) -> IntArray:
    """Sorted whitelists as a [G, K] array padded with int64 max (K = longest; may be 0)."""
    first = whitelists[0] if whitelists else ()
    if all(ids == first for ids in whitelists):  # the usual case: one recipe for all pages
        shared = np.array(sorted(first), dtype=np.int64)
        return np.broadcast_to(shared, (len(whitelists), len(shared)))  # read-only view
    width = max((len(w) for w in whitelists), default=0)
    out = np.full((len(whitelists), width), _WHITELIST_PAD, dtype=np.int64)
    for row, ids in enumerate(whitelists):
        if ids:
            out[row, : len(ids)] = sorted(ids)
    return out


def ngram_ban_candidates(
    windows: torch.Tensor,
    lengths: torch.Tensor,
    ngram_size: int,
    whitelist: torch.Tensor | None = None,
    *,
    per_offset: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows sharing one ngram size: candidate tokens [G, P] and which are banned [G, P].

    ``windows`` [G, T] int64 holds each row's last ``lengths[g] = min(len(output), window)``
    tokens right-aligned (padding elsewhere). Column c of the result is the token that follows
    the (n-1)-gram starting at window column c; it is banned when that (n-1)-gram equals the
    row's last n-1 tokens, the n-gram lies inside the row's window, the token is not
    whitelisted and not negative. ``whitelist`` [G, K]: rows sorted, padded with int64 max.

    ``per_offset`` picks how the (n-1)-grams are compared (same result): one [G, P] op per
    gram offset (default on CPU) or one [G, P, n-1] comparison (default elsewhere: fewer
    kernel launches). On a busy CPU the large op's intra-op threads wait for cores: measured
    16 ms instead of 1.3 ms for 256 rows x window 90 x n 30 on two shared cores.
    """
    n = ngram_size
    width = windows.shape[1]
    positions = width - n + 1
    if n < 2 or positions <= 0:
        empty = windows[:, :0]
        return empty, torch.zeros_like(empty, dtype=torch.bool)
    if per_offset is None:
        per_offset = windows.device.type == "cpu"
    # gram c covers columns c .. c+n-2; the last gram (the prefix itself) is excluded.
    prefix = windows[:, width - n + 1 :]
    if per_offset:
        match = windows[:, :positions] == prefix[:, :1]
        for k in range(1, n - 1):
            match &= windows[:, k : k + positions] == prefix[:, k : k + 1]
    else:
        grams = windows[:, : width - 1].unfold(1, n - 1, 1)
        match = (grams == prefix.unsqueeze(1)).all(dim=2)
    tokens = windows[:, n - 1 :]
    first_real = (width - lengths).unsqueeze(1)
    columns = torch.arange(positions, device=windows.device)
    banned = match & (columns >= first_real) & (tokens >= 0)
    if whitelist is not None and whitelist.shape[1]:
        if whitelist.shape[1] <= _SMALL_WHITELIST:
            for k in range(whitelist.shape[1]):
                banned &= tokens != whitelist[:, k : k + 1]
        else:
            tokens = tokens.contiguous()
            whitelist = whitelist.contiguous()
            slot = torch.searchsorted(whitelist, tokens).clamp_max_(whitelist.shape[1] - 1)
            banned &= whitelist.gather(1, slot) != tokens
    return tokens, banned


def apply_ngram_bans(
    logits: torch.Tensor,
    rows: torch.Tensor,
    windows: torch.Tensor,
    lengths: torch.Tensor,
    ngram_size: int,
    whitelist: torch.Tensor | None = None,
) -> None:
    """Set to -inf, in place, the logits that :func:`ngram_ban_candidates` bans.

    ``rows`` [G] are the logits rows of the window rows. No host synchronisation: the
    candidates go through an ``amin`` scatter (-inf where banned, +inf elsewhere), which is
    exact whatever duplicates the candidates hold, instead of a boolean-mask index.
    """
    tokens, banned = ngram_ban_candidates(windows, lengths, ngram_size, whitelist)
    if tokens.numel() == 0:
        return
    vocab = logits.shape[1]
    banned = banned & (tokens < vocab)
    flat = (rows.unsqueeze(1) * vocab + tokens.clamp(0, vocab - 1)).flatten()
    # Built on the device: a tensor made from a Python scalar would be a synchronous copy.
    src = torch.full(banned.shape, float("inf"), dtype=logits.dtype, device=logits.device)
    src = src.masked_fill_(banned, float("-inf")).flatten()
    target = logits if logits.is_contiguous() else logits.contiguous()
    target.view(-1).scatter_reduce_(0, flat, src, reduce="amin")
    if target is not logits:
        logits.copy_(target)


def banned_token_mask(
    windows: torch.Tensor,
    lengths: torch.Tensor,
    ngram_sizes: Sequence[int],
    vocab_size: int,
    whitelists: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Bool [G, vocab]: the tokens each row bans, rows with mixed ngram sizes.

    Same layout as :func:`ngram_ban_candidates` (``lengths`` already clipped to each row's
    window); the computation is the processor's own (:func:`apply_ngram_bans`).
    """
    device = windows.device
    logits = torch.zeros((windows.shape[0], vocab_size), dtype=torch.float32, device=device)
    sizes = [int(s) for s in ngram_sizes]
    for n in sorted(set(sizes)):
        members = [g for g, s in enumerate(sizes) if s == n]
        rows = torch.tensor(members, dtype=torch.int64, device=device)
        whitelist = None
        if whitelists is not None:
            array = _whitelist_array([whitelists[g] for g in members]).copy()  # writable
            whitelist = torch.from_numpy(array).to(device)
        apply_ngram_bans(logits, rows, windows[rows], lengths[rows], n, whitelist)
    return torch.isneginf(logits)


class _WindowCache:
    """Host copy of each batch row's last output tokens, right-aligned in a [rows, width] array.

    Re-reading every window from the Python lists converts every token every step; this copies
    only the new token of each row. vLLM appends to the lists in place; it can also shrink them
    (discarded tokens) or write -1 placeholders that it fixes later (async scheduling). A row
    is therefore re-read from its list unless the list grew by at most one (non-negative) token
    and still holds the row's last cached token at the same place, and while its cached window
    holds a negative id. (Between two steps vLLM only appends, fixes placeholders appended
    since the last step, or shrinks the list: those checks catch every such change.)
    """

    def __init__(self, rows: int) -> None:
        self.tokens: IntArray = np.full((rows, 0), _PAD, dtype=np.int64)
        # Output length each row reflects; -1 forces a re-read from the list.
        self.synced: IntArray = np.full(rows, -1, dtype=np.int64)
        self.rereads = 0  # rows re-read from their lists so far (tests watch it)

    @property
    def width(self) -> int:
        return int(self.tokens.shape[1])

    def reserve(self, rows: int, width: int) -> None:
        old_rows, old_width = self.tokens.shape
        if rows <= old_rows and width <= old_width:
            return
        rows = max(rows, old_rows, 2 * old_rows if rows > old_rows else 0)
        width = max(width, old_width)
        tokens = np.full((rows, width), _PAD, dtype=np.int64)
        tokens[:old_rows, width - old_width :] = self.tokens  # stays right-aligned
        synced = np.full(rows, -1, dtype=np.int64)
        synced[:old_rows] = self.synced
        self.tokens, self.synced = tokens, synced

    def invalidate(self, row: int) -> None:
        self.synced[row] = -1

    def move(self, src: int, dst: int) -> None:
        self.reserve(max(src, dst) + 1, 0)
        self.tokens[dst] = self.tokens[src]
        self.synced[dst] = self.synced[src]
        self.synced[src] = -1

    def swap(self, a: int, b: int) -> None:
        self.reserve(max(a, b) + 1, 0)
        self.tokens[[a, b]] = self.tokens[[b, a]]
        self.synced[[a, b]] = self.synced[[b, a]]

    def sync(self, rows: Sequence[int], outputs: Sequence[list[int]]) -> list[int]:
        """Bring ``rows`` up to date with their output lists; returns the lists' lengths."""
        lengths: list[int] = []
        checked: list[int] = []  # positions in rows: cached, list grew by at most one token
        probes: list[int] = []  # the list's token where the row's last cached token should be
        new_tokens: list[int] = []  # the token to append, or _PAD for none
        reread: list[int] = []
        synced = self.synced[list(rows)].tolist()
        for k, (ids, done) in enumerate(zip(outputs, synced, strict=True)):
            length = len(ids)
            lengths.append(length)
            if done >= 0 and (length == done or (length == done + 1 and ids[-1] >= 0)):
                checked.append(k)
                probes.append(ids[done - 1] if done else _PAD)  # an empty row holds only _PAD
                new_tokens.append(ids[-1] if length > done else _PAD)
            else:
                reread.append(k)
        if checked:
            at = np.array([rows[k] for k in checked], dtype=np.int64)
            new = np.array(new_tokens, dtype=np.int64)
            # A list that no longer holds the row's last token there was rewritten.
            same = self.tokens[at, -1] == np.array(probes, dtype=np.int64)
            grow = same & (new != _PAD)
            grown = at[grow]
            self.tokens[grown, :-1] = self.tokens[grown, 1:]
            self.tokens[grown, -1] = new[grow]
            self.synced[grown] += 1
            reread.extend(np.array(checked, dtype=np.int64)[~same].tolist())
        width = self.width
        self.rereads += len(reread)
        for k in reread:
            row, ids = rows[k], outputs[k]
            m = min(len(ids), width)
            window = self.tokens[row]
            window[: width - m] = _PAD
            if m:
                window[width - m :] = ids[len(ids) - m :]
            self.synced[row] = -1 if m and window[width - m :].min() < 0 else len(ids)
        return lengths


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
        self.cache = _WindowCache(int(getattr(scheduler, "max_num_seqs", None) or 256))


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
            whitelist = _whitelist_array([requests[k].params.whitelist for k in members])
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
            whitelist = _whitelist_array([state.whitelist[s] for s in at.tolist()])
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
