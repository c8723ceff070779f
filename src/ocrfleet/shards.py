"""Split a corpus into shards: deterministic, each document in exactly one, balanced by pages.

Every node (or tmux pane, or SLURM array task) computes the same split from the same corpus,
so shards need no coordination. Balancing is longest-processing-time first: documents in
descending page count go to the shard with the fewest pages so far; ties break on doc id.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def assign_shards(docs: Sequence[tuple[str, int]], num_shards: int) -> dict[str, int]:
    """Map doc_id → shard index for (doc_id, page_count) pairs."""
    if num_shards < 1:
        raise ValueError("num_shards must be at least 1")
    loads: list[tuple[int, int]] = [(0, shard) for shard in range(num_shards)]
    heapq.heapify(loads)
    assignment: dict[str, int] = {}
    # Unreadable documents count as one page: they still belong to exactly one shard,
    # whose ledger records the failure.
    ordered = sorted(docs, key=lambda d: (-max(d[1], 1), d[0]))
    for doc_id, pages in ordered:
        load, shard = heapq.heappop(loads)
        assignment[doc_id] = shard
        heapq.heappush(loads, (load + max(pages, 1), shard))
    return assignment


def shard_loads(assignment: dict[str, int], pages: dict[str, int], num_shards: int) -> list[int]:
    """Pages per shard, for reports and tests."""
    loads = [0] * num_shards
    for doc_id, shard in assignment.items():
        loads[shard] += max(pages[doc_id], 1)
    return loads
