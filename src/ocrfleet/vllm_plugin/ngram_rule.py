"""The no-repeat-n-gram rule of DeepSeek-OCR's recipe, as batched tensor ops (ngram.py's processor
applies it inside vLLM; the tests compare it with the reference transcribed here).

The rule, per request (``ids``: its output tokens so far, n: ``ngram_size``, w: ``window_size``):
when ``len(ids) >= n``, ban every ``ids[i + n - 1]`` with
``max(0, len(ids) - w) <= i <= len(ids) - n`` and ``ids[i:i + n - 1] == ids[-(n - 1):]``, except
whitelisted ids; banned logits become -inf. Reference quirk kept: n == 1 bans nothing
(``ids[-0:]`` is the whole list, never the empty 0-gram).

Per-request parameters come from ``SamplingParams.extra_args``: ``ngram_size`` (absent or None:
not applied), ``window_size`` (default 100) and ``whitelist_token_ids``. torch and numpy only:
vLLM is imported by the processor, not here.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

if TYPE_CHECKING:
    from vllm import SamplingParams

__all__ = [
    "DEFAULT_WINDOW_SIZE",
    "NGramParams",
    "apply_ngram_bans",
    "banned_token_mask",
    "build_windows",
    "ngram_ban_candidates",
    "parse_ngram_params",
    "reference_banned_tokens",
    "whitelist_array",
]

DEFAULT_WINDOW_SIZE = 100
PAD = -1  # window padding; never a token id
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
    windows = np.full((len(outputs), width), PAD, dtype=np.int64)
    for row, (ids, m) in enumerate(zip(outputs, lengths.tolist(), strict=True)):
        if m:
            windows[row, width - m :] = ids[len(ids) - m :]
    return windows, lengths


def whitelist_array(whitelists: Sequence[Sequence[int]]) -> IntArray:
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
            array = whitelist_array([whitelists[g] for g in members]).copy()  # writable
            whitelist = torch.from_numpy(array).to(device)
        apply_ngram_bans(logits, rows, windows[rows], lengths[rows], n, whitelist)
    return torch.isneginf(logits)
