from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ocrfleet.shards import assign_shards, shard_loads


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3000), min_size=0, max_size=60),
    st.integers(min_value=1, max_value=8),
)
def test_every_document_in_exactly_one_shard(pages: list[int], shards: int) -> None:
    docs = [(f"{i:064x}", p) for i, p in enumerate(pages)]
    assignment = assign_shards(docs, shards)
    assert set(assignment) == {d for d, _ in docs}
    assert all(0 <= s < shards for s in assignment.values())


def test_deterministic_whatever_the_input_order() -> None:
    docs = [(f"{i:064x}", (i * 37) % 500 + 1) for i in range(100)]
    shuffled = docs[:]
    random.Random(4).shuffle(shuffled)
    assert assign_shards(docs, 4) == assign_shards(shuffled, 4)


def test_balanced_by_pages() -> None:
    rng = random.Random(7)
    docs = [(f"{i:064x}", rng.choice([1, 2, 5, 20, 300, 2000])) for i in range(400)]
    assignment = assign_shards(docs, 4)
    loads = shard_loads(assignment, dict(docs), 4)
    # Longest-processing-time first: no shard exceeds the mean by more than the largest doc.
    mean = sum(loads) / 4
    assert max(loads) - mean <= 2000
    assert max(loads) / min(loads) < 1.1
